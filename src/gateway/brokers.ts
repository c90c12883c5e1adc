import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Broker } from '../amqp/connection.ts';
import type { Materials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import type { RecordLifecycle } from '../core/lifecycle.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';
import { MqEndpoint } from '../endpoints/mq/mq-endpoint.ts';
import type { Cleanup } from './cleanup.ts';

/**
 * The mq: transport: one connection per configured broker (reconnecting on its own), and the
 * broker connection states in /metrics. Replies on the brokers' reply queues are consumed by
 * the flows step, as they go to waiting flows.
 */
export function connectBrokers(config: Config, materials: Materials, o: { redis: Redis; router: Router; metrics: Metrics; log: Logger; deadLetterEvents?: RecordLifecycle }, cleanup: Cleanup): MqEndpoint | undefined {
  const configured = Object.entries(config.brokers);
  if (configured.length === 0) return undefined;
  const brokers = configured.map(([name, b]) => new Broker({
    name, url: b.url, sasl: b.sasl ?? (b.username || new URL(b.url).username ? 'PLAIN' : 'ANONYMOUS'), addressFormat: b.addressFormat, sendTimeoutMs: b.sendTimeout,
    ...(b.username !== undefined ? { username: b.username } : {}), ...(b.password !== undefined ? { password: b.password } : {}),
    // The PEM texts read at the config edge take the place of the paths in the config.
    ...(b.tls ? { tls: { rejectUnauthorized: b.tls.rejectUnauthorized, ...(b.tls.servername !== undefined ? { servername: b.tls.servername } : {}), ...materials.brokers[name] } } : {}),
    ...(b.containerId ? { containerId: b.containerId } : {}),
  }, o.log));
  brokers.forEach((b) => b.start());
  const mq = new MqEndpoint({
    brokers, redis: o.redis, prefix: config.redis.prefix, maxAttempts: Math.min(...configured.map(([, b]) => b.maxAttempts)), backoffMs: config.queues.backoff,
    replyQueues: new Map(configured.filter(([, b]) => b.replyQueue).map(([n, b]) => [n, b.replyQueue!])), metrics: o.metrics, log: o.log,
    ...(o.deadLetterEvents ? { deadLetterEvents: o.deadLetterEvents } : {}),
  });
  o.router.register(mq);
  o.metrics.connected.reset();
  const collect = () => { for (const s of mq.brokerStates()) o.metrics.connected.set({ kind: 'broker', name: s.name }, s.state === 'open' ? 1 : 0); };
  const timer = setInterval(collect, 1000);
  timer.unref();
  cleanup.push(async () => clearInterval(timer));
  return mq;
}
