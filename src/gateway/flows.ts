import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { FlowEndpoint } from '../endpoints/flow/flow-endpoint.ts';
import { deliverReply } from '../flows/broker-replies.ts';
import type { FlowDefinition } from '../flows/define.ts';
import { FlowRuntime } from '../flows/runtime.ts';
import type { Cleanup } from './cleanup.ts';
import type { Transports } from './router-and-transports.ts';

/** The flow definitions loaded from flows.dir, by name. */
export type FlowDefinitions = Map<string, FlowDefinition>;

/**
 * Step 6: the flow runtime behind flow: addresses, and the brokers' reply queues, whose
 * messages are replies to flows waiting in ctx.request('mq:…'). The runtime is closed with the
 * router, as its flow: transport is.
 */
export async function startFlows(config: Config, flowDefs: FlowDefinitions, redis: Redis, transports: Transports, log: Logger, cleanup: Cleanup): Promise<FlowRuntime> {
  const { router } = transports;
  const flows = new FlowRuntime({
    redis,
    prefix: config.redis.prefix,
    router,
    flows: flowDefs,
    concurrency: config.flows.concurrency,
    shards: transports.shards,
    lockMs: config.flows.lockTimeout,
    stalledCheckMs: config.flows.stalledCheck,
    retentionMs: config.flows.retention,
    stickyInstances: config.flows.stickyInstances,
    eagerStart: config.flows.eagerStart,
    onOutcome: (flow, outcome) => transports.metrics.flowOutcomes.inc({ flow, outcome }),
    tracing: transports.tracing,
    ...(transports.events.journal ? { events: transports.events.journal } : {}),
    log,
  });
  router.register(new FlowEndpoint(flows));
  await flows.start();
  if (flowDefs.size > 0) log.info({ flows: [...flowDefs.keys()], dir: config.flows.dir }, 'flows loaded');
  for (const [name, b] of Object.entries(config.brokers)) {
    if (!b.replyQueue) continue;
    // The gateway's own consumer of a queue the config names: it acts as the system.
    const caller = { principal: { kind: 'system', name: `broker-replies:${name}` }, door: 'system' } as const;
    const sub = await router.consume(`mq:${name}/${b.replyQueue}`, (m) => deliverReply(m, router, flows, name), { maxInFlight: 50 }, caller);
    cleanup.push(() => sub.close());
  }
  return flows;
}
