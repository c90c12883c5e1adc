import type { Logger } from 'pino';
import { actionGuard, auditDenials, authorizeReplyTo, authorizeSend } from '../auth/authorization.ts';
import type { Materials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import { DedupStore } from '../core/dedup.ts';
import { Metrics } from '../core/metrics.ts';
import { parsePattern } from '../core/pattern.ts';
import { demoteReservedHeaders, requirePrincipal } from '../core/pipeline.ts';
import { Router } from '../core/router.ts';
import { EmailEndpoint } from '../endpoints/email/email-endpoint.ts';
import { QueueEndpoint } from '../endpoints/queue/queue-endpoint.ts';
import { DedupWindows } from '../core/dedup-window.ts';
import { TmpEndpoint } from '../endpoints/tmp/tmp-endpoint.ts';
import { TopicEndpoint } from '../endpoints/topic/topic-endpoint.ts';
import { WebhookEndpoint } from '../endpoints/webhook/webhook-endpoint.ts';
import { refuseForgedEvents } from '../events/forged-events.ts';
import { LifecycleEvents } from '../events/lifecycle-events.ts';
import { DeadLetterEvents } from '../core/dead-letter-events.ts';
import { ReplayIntents } from '../core/replay-intents.ts';
import { bullQueueName } from '../endpoints/queue/names.ts';
import { ReplicaWait } from '../store/replica-wait.ts';
import { openTracing } from '../tracing/otel-tracing.ts';
import { traceSend } from '../tracing/trace-send.ts';
import type { Tracing } from '../tracing/tracing.ts';
import { AttachmentStore } from '../attachments/attachment-store.ts';
import { claimCheck } from '../auth/attachment-access.ts';
import { DependencyUnavailable } from '../core/errors.ts';
import { connectBrokers } from './brokers.ts';
import type { MqEndpoint } from '../endpoints/mq/mq-endpoint.ts';
import type { Cleanup } from './cleanup.ts';
import type { Access } from './directory.ts';
import type { Stores } from './open-stores.ts';
import { openPeerNetwork, type PeerNetwork } from './peer-network.ts';

export interface Transports {
  router: Router;
  metrics: Metrics;
  dedup: DedupStore;
  queues: QueueEndpoint;
  /** tmp: and topic: admin (temporary queues, subscriptions), for the doors that offer them. */
  temporaryQueues: TmpEndpoint;
  topics: TopicEndpoint;
  /** redis.shards as it applies (see Stores.shards), for the people application. */
  shards: number;
  /** Attachments (claim check): chunked content in Redis that messages reference. */
  attachments: AttachmentStore;
  /** When the config has a network: the map and the peer transport. */
  network?: PeerNetwork;
  /** The mq: transport, when brokers are configured (their states for the console). */
  brokers?: MqEndpoint;
  /** The webhook: transport, when outbound webhooks are configured. */
  webhooks?: WebhookEndpoint;
  /** Spans, when `tracing.otlp` is set; otherwise trace contexts only pass through. */
  tracing: Tracing;
  /** Lifecycle events (config `events`): reporters call `events.report`; delivery starts with `events.start()`. */
  events: LifecycleEvents;
}

/**
 * Step 4: the router with its interceptor chain, and the transports that need no application:
 * queue:, tmp:, email:, webhook:, peer: and mq:. (person:, group: and flow: come with the
 * people and flows steps, which need the router themselves.)
 */
export async function openRouterAndTransports(config: Config, materials: Materials, stores: Stores, access: Access, log: Logger, cleanup: Cleanup): Promise<Transports> {
  const { redis, memoryGuard, shards } = stores;
  const { audit, permissions } = access;
  const prefix = config.redis.prefix;
  let queues: QueueEndpoint | undefined;
  let network: PeerNetwork | undefined;
  // Depths are asked for when /metrics is scraped, by which time the transports exist.
  const metrics = new Metrics(async () => ({
    ...(queues ? await queues.depths() : {}),
    // A peer's outbox depth, labelled with its address pattern.
    ...Object.fromEntries(Object.entries(network ? await network.peers.depths() : {}).map(([alias, n]) => [`peer:${alias}/**`, n])),
  }), { oldestAges: async () => (queues ? await queues.oldestAges() : {}) });
  const dedup = new DedupStore(redis, prefix, config.queues.dedupTtl);
  // redis.waitReplicas: acknowledged only once N replicas have it (closed after the router).
  const waitReplicas = config.redis.waitReplicas ?? 0;
  const replicaWait = waitReplicas > 0 ? new ReplicaWait({ redis, prefix, replicas: waitReplicas, timeoutMs: config.redis.waitTimeout ?? 2000, log }) : undefined;
  if (replicaWait) cleanup.push(() => replicaWait.close());
  const t = config.tracing;
  const tracing = await openTracing({ serviceName: t.serviceName, log, ...(t.otlp ? { otlp: { url: t.otlp.url, headers: t.otlp.headers, timeoutMs: t.otlp.timeout } } : {}) });
  cleanup.push(() => tracing.shutdown()); // pushed before the router: its last spans are sent after it closed
  const a = config.attachments;
  const attachments = new AttachmentStore({
    redis, prefix, chunkSize: a.chunkSize, maxSize: a.maxSize, retentionMs: a.retention, stagingTtlMs: a.uploadTimeout,
    // Uploads are new inbound work: refused like messages while Redis is nearly full.
    admit: () => {
      if (memoryGuard.refusing) throw new DependencyUnavailable('redis', 'its memory is nearly full: new attachments are refused until it frees; nothing of this upload was kept, try again later');
    },
  });
  // Every message that enters the router passes this chain, in this order (DESIGN §5).
  const router = new Router(dedup, metrics, log, [
    traceSend(tracing), // first: a refusal further down is a failed span, and every hop continues the caller's trace
    auditDenials(audit),
    requirePrincipal,
    demoteReservedHeaders,
    refuseForgedEvents, // a client's "switchboard.*" CloudEvent would pass for the gateway's own
    authorizeSend(permissions),
    authorizeReplyTo(permissions),
    claimCheck(permissions, attachments, audit), // attachments referenced exist with that hash, the sender may read them; the destination may then
    memoryGuard, // Redis nearly full: new inbound work from client doors is refused (503), never dropped
    ...(replicaWait ? [replicaWait] : []), // after the endpoint stored: WAIT for N replicas before the acknowledgement
  ], actionGuard(permissions, audit)); // every other act (browse, receive, ack, consume, dead letters, discard), from every door

  // The CloudEvents source: the gateway's network identity, else the URL it is reached at.
  const source = config.network ? `urn:switchboard:${encodeURIComponent(config.network.identity)}` : (config.http.baseUrl ?? `http://localhost:${config.http.port}`);
  const events = new LifecycleEvents({ redis, prefix, shards, router, source, mappings: config.events, dedupTtlMs: config.queues.dedupTtl, metrics, log });
  const lifecycle = events.report;
  let replayIntents: ReplayIntents | undefined;
  if (events.wants('switchboard.message.replayed')) {
    // Replays store an intent first, so their event survives a kill -9 (replay-intents.ts).
    replayIntents = new ReplayIntents({ redis, prefix, record: events.record, log });
    router.recordReplaysIn(replayIntents);
    replayIntents.start();
  }
  // Dead letters of mq: and tmp: are recorded (awaited) before the change; those of queue: and of
  // the outboxes (email:, webhook:, peer:) are read back from BullMQ's failed sets
  // (DeadLetterEvents): each survives a kill -9 of the process.
  const deadLetterEvents = events.wants('switchboard.message.dead-lettered') || events.wants('switchboard.peer.undeliverable') ? events.record : undefined;
  queues = new QueueEndpoint({
    redis,
    prefix,
    maxAttempts: config.queues.maxAttempts,
    backoffMs: config.queues.backoff,
    dedupTtlMs: config.queues.dedupTtl,
    dedupWindows: new DedupWindows(config.queues.dedup, config.queues.dedupTtl),
    lockMs: config.queues.lockTimeout,
    stalledCheckMs: config.queues.stalledCheck,
    limits: config.queues.limits.map((l) => ({ pattern: parsePattern(l.address), maxDepth: l.maxDepth })),
    idleMs: config.queues.idleClose,
    maxOpen: config.queues.maxOpen,
    depthSeries: config.queues.depthSeries,
    // The queues routes read and write always have their own depth series.
    pinned: config.routes.flatMap((r) => [r.from, r.to]).filter((a) => a.startsWith('queue:')),
    metrics,
    log,
  });
  router.register(queues);
  const temporaryQueues = new TmpEndpoint({ redis, prefix, metrics, log, ...(deadLetterEvents ? { deadLetterEvents } : {}) });
  router.register(temporaryQueues);
  const topics = new TopicEndpoint({ redis, prefix, queues, dedupTtlMs: config.queues.dedupTtl, log }); // subscriptions are queues
  router.register(topics);
  // Closing the router closes every transport registered with it, whichever step registered it.
  cleanup.push(() => router.close());
  // Closed before the router: events being stored are finished, deliveries stop and wait in Redis.
  cleanup.push(() => events.close());
  if (replayIntents) cleanup.push(() => replayIntents.close()); // stopped before the events it records
  if (deadLetterEvents) {
    const open = queues;
    const reconciler = new DeadLetterEvents({
      redis, prefix, transport: 'queue', record: deadLetterEvents, log,
      queues: async () => (await open.addresses()).map((address) => ({ address, queue: bullQueueName(address) })),
    });
    // A dead letter replayed or discarded before a pass read it gets its event all the same.
    open.recordDeadLettersLeavingWith((q, jobIds) => reconciler.recordLeaving(q, jobIds));
    reconciler.start();
    cleanup.push(() => reconciler.close()); // stopped before the events it records
  }

  if (config.email) {
    const e = config.email;
    router.register(new EmailEndpoint({ ...(deadLetterEvents ? { deadLetterEvents } : {}), redis, prefix, shards, smtp: e.smtp, from: e.from, maxAttempts: e.maxAttempts, backoffMs: e.backoff, dedupTtlMs: config.queues.dedupTtl, metrics, log }));
  }
  const outbound = Object.entries(config.webhooks).filter(([, w]) => w.url);
  let webhooks: WebhookEndpoint | undefined;
  if (outbound.length > 0) {
    router.register(webhooks = new WebhookEndpoint({
      ...(deadLetterEvents ? { deadLetterEvents } : {}), redis, prefix, shards, dedupTtlMs: config.queues.dedupTtl, metrics, log,
      maxAttempts: Math.max(...outbound.map(([, w]) => w.maxAttempts)), backoffMs: Math.min(...outbound.map(([, w]) => w.backoff)),
      targets: outbound.map(([name, w]) => ({ name, url: w.url!, secret: w.secret, timeoutMs: w.timeout })),
    }));
  }
  if (config.network && materials.network) {
    network = await openPeerNetwork(config.network, materials.network, { redis, prefix, shards, router, permissions, metrics, lifecycle, ...(deadLetterEvents ? { deadLetterEvents } : {}), log, attachments, audit, lockMs: config.queues.lockTimeout, stalledCheckMs: config.queues.stalledCheck }, cleanup);
  }
  const brokers = connectBrokers(config, materials, { redis, router, metrics, log, ...(deadLetterEvents ? { deadLetterEvents } : {}) }, cleanup);
  return { router, metrics, dedup, queues, temporaryQueues, topics, shards, attachments, tracing, events, ...(network ? { network } : {}), ...(brokers ? { brokers } : {}), ...(webhooks ? { webhooks } : {}) };
}
