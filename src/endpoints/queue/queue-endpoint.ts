import { randomBytes, randomUUID } from 'node:crypto';
import { Job, Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AckResult, BrowseResult, ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, LeasedMessage, SendResult, Subscription } from '../../core/endpoint.ts';
import { DestinationUnavailable, NotFound, isRetryable } from '../../core/errors.ts';
import { holdWhileUnavailable } from '../../core/hold.ts';
import { matchesPattern, type AddressPattern } from '../../core/pattern.ts';
import { decodeMessage, encodeMessage, type Message, type StoredMessage } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import { addressFromBullQueueName, bullQueueName, dedupId } from './names.ts';

export interface QueueEndpointOptions {
  /** Connection shared by producers; BullMQ duplicates it for each worker's blocking reads. */
  redis: Redis;
  /** Key prefix for every BullMQ key. */
  prefix: string;
  /** Deliveries before a message is dead-lettered (failed attempts and expired leases both count). */
  maxAttempts: number;
  /** First retry delay; doubles each attempt. */
  backoffMs: number;
  /** How long a message id is remembered per queue for dedup. */
  dedupTtlMs: number;
  /** Lock of a message being processed by a route; renewed while the handler runs. */
  lockMs: number;
  /** How often expired locks and leases are looked for (messages return within lease + this). */
  stalledCheckMs: number;
  /** Bounded queues: a send to a queue holding maxDepth messages is refused as unavailable. */
  limits: { pattern: AddressPattern; maxDepth: number }[];
  metrics: Metrics;
  log: Logger;
}

type Data = StoredMessage;

/**
 * `queue:` — internal durable queues on BullMQ. The dead-letter queue of `queue:x` is BullMQ's
 * failed set of x, so dead-lettering and replay are each one atomic BullMQ script.
 */
export class QueueEndpoint implements Endpoint {
  readonly scheme = 'queue';
  readonly dedupsOnIngress = true;
  private readonly queues = new Map<string, Queue<Data>>();
  private readonly leaseWorkers = new Map<string, Worker<Data>>();
  private readonly subscriptions = new Set<Subscription>();

  /**
   * An expired lease or a crash while holding a message is a delivery that did not finish; with
   * this many allowed, a message is handed out at most maxAttempts times before it is dead-lettered.
   */
  private readonly stallsAllowed: number;

  constructor(private readonly o: QueueEndpointOptions) {
    this.stallsAllowed = Math.max(0, o.maxAttempts - 1);
  }

  private queue(address: string): Queue<Data> {
    let q = this.queues.get(address);
    if (!q) {
      q = new Queue<Data>(bullQueueName(address), { connection: this.o.redis, prefix: this.o.prefix });
      q.on('error', (err) => this.o.log.error({ err: err.message, address }, 'queue connection error'));
      this.queues.set(address, q);
    }
    return q;
  }

  /** Addresses of the queues this process has touched, with their depth (for /metrics). */
  async depths(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [address, q] of this.queues) out[address] = await depthOf(q);
    return out;
  }

  private maxDepth(address: string): number | undefined {
    return this.o.limits.find((l) => matchesPattern(l.pattern, address))?.maxDepth;
  }

  async send(message: Message): Promise<SendResult> {
    const q = this.queue(message.to);
    const max = this.maxDepth(message.to);
    if (max !== undefined) {
      // Checked before the add, not atomically with it: concurrent senders may overshoot by
      // their number, which a depth limit for backpressure tolerates.
      const depth = await depthOf(q);
      if (depth >= max) throw new DestinationUnavailable(message.to, `the queue is full (${depth} messages, maxDepth ${max}); try again later`);
    }
    // The dedup key and the job are written by one BullMQ script: no window in which a crash
    // leaves the id marked without the message stored, or stored twice. With a TTL the key
    // outlives the job, so a redelivery after the message was consumed is still caught.
    // Short (it appears in every key and event BullMQ writes), never a plain integer, no ':'.
    const jobId = `m${randomBytes(9).toString('base64url')}`;
    const job = await q.add('m', encodeMessage(message), {
      jobId,
      attempts: this.o.maxAttempts,
      backoff: { type: 'exponential', delay: this.o.backoffMs },
      removeOnComplete: true,
      removeOnFail: false,
      deduplication: { id: dedupId(message), ttl: this.o.dedupTtlMs },
    });
    // A deduplicated add returns the id of the job that holds the dedup key.
    return { id: message.id, duplicate: job.id !== jobId };
  }

  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription> {
    let stopping = false;
    const worker: Worker<Data> = new Worker<Data>(
      bullQueueName(address),
      async (job) => {
        const message = decodeMessage(job.data);
        // A destination that cannot accept now keeps this message here (in flight, locked) and
        // so, with every slot busy, the worker stops pulling: backpressure, not a failed attempt.
        try {
          await holdWhileUnavailable(() => handler(message), {
            stopping: () => stopping,
            firstPauseMs: Math.min(this.o.backoffMs, 250),
            onHold: (err) => this.o.log.debug({ address, msgId: message.id, err: (err as Error).message }, 'destination unavailable; holding'),
          });
        } catch (err) {
          if (isRetryable(err)) throw Worker.RateLimitError(); // stopping: hands the message back to the queue
          throw err;
        }
      },
      {
        connection: this.o.redis,
        prefix: this.o.prefix,
        concurrency: options.maxInFlight,
        lockDuration: this.o.lockMs,
        stalledInterval: this.o.stalledCheckMs,
        maxStalledCount: this.stallsAllowed,
      },
    );
    worker.on('error', (err) => this.o.log.error({ err: err.message, address }, 'consumer error'));
    worker.on('failed', (job, err) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
        this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
        this.o.log.warn({ address, msgId: job.data?.id, err: err.message }, 'message dead-lettered');
      }
    });
    const sub: Subscription = {
      close: async () => {
        stopping = true;
        this.subscriptions.delete(sub);
        await worker.close();
      },
    };
    this.subscriptions.add(sub);
    return sub;
  }

  async browse(address: string, limit: number): Promise<BrowseResult> {
    const q = this.queue(address);
    const [counts, jobs] = await Promise.all([
      q.getJobCounts('wait', 'prioritized', 'delayed', 'active'),
      q.getJobs(['wait', 'prioritized', 'delayed'], 0, limit - 1, true),
    ]);
    return {
      address,
      depth: (counts.wait ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0),
      inFlight: counts.active ?? 0,
      messages: jobs.filter(Boolean).map((j) => decodeMessage(j.data)),
    };
  }

  private leaseWorker(address: string): Worker<Data> {
    let w = this.leaseWorkers.get(address);
    if (!w) {
      w = new Worker<Data>(bullQueueName(address), null, {
        connection: this.o.redis,
        prefix: this.o.prefix,
        autorun: false,
        lockDuration: this.o.lockMs,
        stalledInterval: this.o.stalledCheckMs,
        maxStalledCount: this.stallsAllowed,
      });
      w.on('error', (err) => this.o.log.error({ err: err.message, address }, 'lease worker error'));
      // Without a running loop nobody else would return expired leases to the queue.
      void w.startStalledCheckTimer();
      this.leaseWorkers.set(address, w);
    }
    return w;
  }

  /** Peek-lock: the messages stay in the queue, locked for `leaseMs`, until acked. */
  async receive(address: string, max: number, leaseMs: number): Promise<LeasedMessage[]> {
    const w = this.leaseWorker(address);
    const out: LeasedMessage[] = [];
    while (out.length < max) {
      const token = randomUUID();
      const job = (await w.getNextJob(token, { block: false })) as Job<Data> | undefined;
      if (!job) break;
      // BullMQ marks a message whose leases expired too often and leaves the failing to the
      // worker that next takes it: here, that is us.
      if (job.deferredFailure) {
        await job.moveToFailed(new UnrecoverableError(job.deferredFailure), token, false);
        this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
        this.o.log.warn({ address, msgId: job.data?.id, reason: job.deferredFailure }, 'message dead-lettered');
        continue;
      }
      await job.extendLock(token, leaseMs);
      out.push({ ...decodeMessage(job.data), lease: `${job.id}.${token}` });
    }
    return out;
  }

  async ack(address: string, leases: string[]): Promise<AckResult> {
    const q = this.queue(address);
    const result: AckResult = { acked: 0, expired: [] };
    for (const lease of leases) {
      const dot = lease.indexOf('.');
      const job = dot > 0 ? await Job.fromId<Data>(q, lease.slice(0, dot)) : undefined;
      try {
        if (!job) throw new Error('gone');
        await job.moveToCompleted(null, lease.slice(dot + 1), false);
        result.acked++;
      } catch {
        result.expired.push(lease);
      }
    }
    return result;
  }

  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    const q = this.queue(address);
    const [depth, jobs] = await Promise.all([q.getFailedCount(), q.getFailed(0, limit - 1)]);
    return {
      address: `dlq:${address}`,
      depth,
      messages: jobs.filter(Boolean).map((j) => ({
        ...decodeMessage(j.data),
        deadLetter: { reason: j.failedReason, attempts: j.attemptsMade, at: j.finishedOn ? new Date(j.finishedOn).toISOString() : undefined },
      })),
    };
  }

  /** Moves dead letters (all, or those with the given message ids) back to the queue. */
  async replayDeadLetters(address: string, ids?: string[]): Promise<{ replayed: number; notFound?: string[] }> {
    const q = this.queue(address);
    const wanted = ids ? new Set(ids) : undefined;
    const replayedIds = new Set<string>();
    const page = 500;
    for (let start = 0; ; ) {
      const jobs = (await q.getFailed(start, start + page - 1)).filter(Boolean);
      if (jobs.length === 0) break;
      let skipped = 0;
      for (const job of jobs) {
        if (wanted && !wanted.has(job.data.id)) { skipped++; continue; }
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
        replayedIds.add(job.data.id);
      }
      // Retried jobs leave the failed set, so the next page starts after the ones we kept.
      start += skipped;
      if (jobs.length < page) break;
    }
    if (!wanted || replayedIds.size === wanted.size) return { replayed: replayedIds.size };
    // Ids asked for but not found are named, so a typo is not silent.
    const notFound = [...wanted].filter((id) => !replayedIds.has(id));
    if (replayedIds.size === 0) throw new NotFound(`no dead letter with id ${notFound.join(', ')} in dlq:${address}`);
    return { replayed: replayedIds.size, notFound };
  }

  async health(): Promise<HealthReport> {
    const pong = await this.o.redis.ping();
    return { ok: pong === 'PONG', detail: `${this.queues.size} queue(s) open, ${this.subscriptions.size} consumer(s)` };
  }

  async close(): Promise<void> {
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    await Promise.all([...this.leaseWorkers.values()].map((w) => w.close()));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.leaseWorkers.clear();
    this.queues.clear();
  }
}

async function depthOf(q: Queue<Data>): Promise<number> {
  const c = await q.getJobCounts('wait', 'prioritized', 'delayed');
  return (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
}

export { addressFromBullQueueName };
