import { Queue, UnrecoverableError, Worker, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { dedupKey } from './dedup.ts';
import { randomBase64url } from './random-text.ts';
import { shardOf, shardTag } from '../store/redis.ts';
import type { BeforeReplay, BrowseResult, HealthReport, ReplayResult, SendResult } from './endpoint.ts';
import { retryDeadLetters } from './retry-dead-letters.ts';
import { NotFound } from './errors.ts';
import { DeadLetterEvents, type DeadLetter } from './dead-letter-events.ts';
import type { LifecycleEvent, RecordLifecycle } from './lifecycle.ts';
import { decodeMessage, encodeMessage, type Message, type StoredMessage } from './message.ts';
import type { Metrics } from './metrics.ts';

/**
 * Thrown by `deliver` when the destination will never take this message as it is (a 4xx, a
 * refusal, past the event horizon): the outbox dead-letters it at once instead of retrying.
 */
export class Undeliverable extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'Undeliverable';
  }
}

/** Hands one stored message to its destination; resolving means the destination took it. */
export type Deliver<E> = (message: Message, extra: E) => Promise<void>;

export interface OutboxOptions<E extends object = Record<never, never>> {
  /**
   * BullMQ queue name without braces; the outbox wraps it in a hash tag so all its keys share one
   * Redis Cluster slot. No `:` (BullMQ's key delimiter).
   */
  name: string;
  /**
   * BullMQ queues the outbox is spread over (redis.shards), each with a worker; a message goes to
   * the shard of its dedup key, so a resend meets its original there. With more than one, the
   * unsharded queue of an earlier start is still drained and its dead letters listed.
   * @defaultValue 1 (the queue `{<name>}`)
   */
  shards?: number;
  /**
   * Deliver from this process as soon as the outbox is made. False: only store (send, dead
   * letters) until `startDelivering`, for a transport whose deliveries are a singleton duty
   * (one bridge per peer, held by a lease).
   * @defaultValue true
   */
  deliverHere?: boolean;
  /** Shared producer connection; BullMQ duplicates it for the worker's blocking reads. */
  redis: Redis;
  /** Key prefix for every BullMQ key. */
  prefix: string;
  /** The transport: render and send, sign and POST, sign and bridge. */
  deliver: Deliver<E>;
  /**
   * Delivery attempts before a message is dead-lettered.
   * @defaultValue 5
   */
  maxAttempts?: number;
  /**
   * First retry delay of the default exponential backoff (doubles each attempt).
   * @defaultValue 1000
   */
  backoffMs?: number;
  /**
   * Delay before retry number `attempt` (1-based), replacing the exponential default; peers cap
   * and jitter it so many gateways do not retry an offline peer in step.
   * @defaultValue undefined (exponential from backoffMs)
   */
  backoffStrategy?: (attempt: number) => number;
  /** How long a `(to, id)` pair is remembered after its send, so a resend is a duplicate. */
  dedupTtlMs: number;
  /**
   * Lock of a delivery in progress (BullMQ lockDuration, renewed while it runs): a process killed
   * mid-delivery leaves the message to a live one after at most this plus `stalledCheckMs`.
   * @defaultValue 30000 (BullMQ's)
   */
  lockMs?: number;
  /**
   * How often workers look for deliveries whose lock expired (BullMQ stalledInterval).
   * @defaultValue 30000 (BullMQ's)
   */
  stalledCheckMs?: number;
  /**
   * Deliveries in flight at once in this process.
   * @defaultValue 10
   */
  concurrency?: number;
  /**
   * Called once a message is dead-lettered (after its last attempt or an Undeliverable), e.g. to
   * send a notice. Errors are logged, never retried: the dead letter itself is already durable.
   * @defaultValue undefined
   */
  onDeadLetter?: (message: Message, reason: string, extra: E) => Promise<void> | void;
  /**
   * Stores `switchboard.message.dead-lettered` for every dead letter, read back from the failed
   * set by a leased reconciler (see DeadLetterEvents): a kill -9 right after BullMQ dead-lettered
   * a message does not lose its event. `alsoReport`: more events of the same dead letter.
   * @defaultValue undefined (no dead-letter events)
   */
  deadLetterEvents?: { record: RecordLifecycle; alsoReport?: (d: DeadLetter) => LifecycleEvent[] };
  /** Metrics and log label: the transport's scheme. */
  label: string;
  /** Counts deliveries (messages out) and dead letters under `label`. */
  metrics: Metrics;
  /** Failures, dead letters and connection errors, tagged with the outbox name. */
  log: Logger;
}

/**
 * A job's data is the stored message itself (operators and tests read `data.to` in redis-cli),
 * with whatever the transport computed at send time (a signature) under `extra`.
 */
type Data = StoredMessage & { extra?: object };

/** The dedup key of a message in an outbox: same address, original sender and id, same message (see dedupKey). */
export function outboxDedupId(message: Pick<Message, 'to' | 'sender' | 'id'>): string {
  return dedupKey(message);
}

/**
 * A fresh job id per add, never derived from the message: BullMQ answers a deduplicated add with
 * the id of the job that holds the key, so "id differs from the one we chose" is how a duplicate
 * shows. Prefixed, so never a plain integer, and free of `:` (both refused by BullMQ).
 */
export function outboxJobId(): string {
  return `o${randomBase64url(12)}`;
}

function unpack<E>(data: Data): { message: StoredMessage; extra: E } {
  // Peer jobs written before there was one outbox class: `{message, remote, signature}`.
  const legacy = data as unknown as { message?: unknown; id?: unknown };
  if (typeof legacy.id !== 'string' && legacy.message && typeof legacy.message === 'object') {
    const { message, ...extra } = legacy as { message: StoredMessage };
    return { message, extra: extra as E };
  }
  const { extra, ...message } = data;
  return { message, extra: (extra ?? {}) as E };
}

const PAGE = 1000;

/**
 * A durable outbox (store and forward): `send` is accepted once the message is stored in Redis;
 * a BullMQ worker hands it to `deliver` with retries and backoff, and dead-letters it (BullMQ's
 * failed set) after the last attempt or at once on `Undeliverable`. Every transport that
 * delivers outside Switchboard uses this one class, so dedup, retries, dead letters and replay
 * behave the same for e-mail, webhooks and peers.
 */
export class Outbox<E extends object = Record<never, never>> {
  /** One queue per shard, in shard order. */
  private readonly queues: Queue<Data>[];
  /** The unsharded queue of a start with one shard, read for dead letters and drained (shards > 1). */
  private readonly legacy?: Queue<Data>;
  private workers: Worker<Data>[] = [];
  private readonly names: string[];
  private readonly deadLetterEvents?: DeadLetterEvents;
  private readonly concurrency: number;
  private readonly jobOptions: JobsOptions;
  private closed = false;

  constructor(private readonly o: OutboxOptions<E>) {
    if (/[:{}]/.test(o.name)) throw new Error(`outbox name '${o.name}' may not contain ':', '{' or '}'`);
    const shards = Math.max(1, o.shards ?? 1);
    const names = shards === 1 ? [`{${o.name}}`] : Array.from({ length: shards }, (_, i) => `{${shardTag(o.name, i)}}`);
    this.jobOptions = {
      attempts: o.maxAttempts ?? 5,
      backoff: o.backoffStrategy ? { type: 'custom' } : { type: 'exponential', delay: o.backoffMs ?? 1000 },
      removeOnComplete: true,
      removeOnFail: false,
    };
    // Deliveries in flight in this process, spread over the shards' workers.
    this.concurrency = Math.max(1, Math.ceil((o.concurrency ?? 10) / shards));
    this.names = names;
    this.queues = names.map((name) => this.openQueue(name));
    if (shards > 1) this.legacy = this.openQueue(`{${o.name}}`);
    if (o.deadLetterEvents) {
      const queues = this.allQueues.map((q) => ({ queue: q.name }));
      this.deadLetterEvents = new DeadLetterEvents({
        redis: o.redis, prefix: o.prefix, transport: o.label, duty: o.name, log: o.log, record: o.deadLetterEvents.record,
        ...(o.deadLetterEvents.alsoReport ? { alsoReport: o.deadLetterEvents.alsoReport } : {}),
        queues: async () => queues,
      });
      this.deadLetterEvents.start();
    }
    if (o.deliverHere ?? true) this.startDelivering();
  }

  /** Starts a worker on every shard (a no-op while they run). */
  startDelivering(): void {
    if (this.closed || this.workers.length > 0) return;
    for (const name of this.names) this.startWorker(name, this.concurrency);
    const legacy = this.legacy;
    if (!legacy) return;
    // Messages stored before the outbox was sharded are delivered by a worker of their own queue.
    void legacy.getJobCounts('wait', 'prioritized', 'delayed', 'active').then((c) => {
      if (!this.closed && this.workers.length > 0 && Object.values(c).some((n) => n > 0)) this.startWorker(legacy.name, this.concurrency);
    }, (err: Error) => this.o.log.warn({ outbox: this.o.name, err: err.message }, 'outbox: could not look at the unsharded queue'));
  }

  /** Stops delivering from this process: deliveries in flight finish, the rest wait in Redis. */
  async stopDelivering(): Promise<void> {
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.close()));
  }

  private openQueue(name: string): Queue<Data> {
    const q = new Queue<Data>(name, { connection: this.o.redis, prefix: this.o.prefix });
    q.on('error', (err) => this.o.log.error({ outbox: this.o.name, queue: name, err: err.message }, 'outbox connection error'));
    return q;
  }

  private startWorker(name: string, concurrency: number): void {
    const o = this.o;
    const worker = new Worker<Data>(name, (job) => this.process(job), {
      connection: o.redis,
      prefix: o.prefix,
      concurrency,
      ...(o.lockMs ? { lockDuration: o.lockMs } : {}),
      ...(o.stalledCheckMs ? { stalledInterval: o.stalledCheckMs } : {}),
      ...(o.backoffStrategy ? { settings: { backoffStrategy: o.backoffStrategy } } : {}),
    });
    worker.on('error', (err) => o.log.error({ outbox: o.name, queue: name, err: err.message }, 'outbox worker error'));
    worker.on('failed', (job, err) => {
      if (job) this.failed(job, err);
    });
    this.workers.push(worker);
  }

  /** The last delivery failure per destination address seen by this process (at most 100, newest kept). */
  private readonly lastErrors = new Map<string, { at: string; message: string }>();

  /**
   * What the console shows of the outbox: messages waiting, being delivered, dead-lettered, when
   * the next retry is due, and the last failure this process saw (of `to`, or of any address).
   */
  async status(to?: string): Promise<OutboxStatus> {
    const c = await this.counts('wait', 'prioritized', 'delayed', 'active', 'failed');
    // BullMQ scores a delayed job (timestamp × 4096 + a counter): the lowest is the next retry.
    const firsts = await Promise.all(this.allQueues.map((q) => this.o.redis.zrange(q.keys.delayed!, 0, 0, 'WITHSCORES')));
    const next = Math.min(...firsts.filter((f) => f.length === 2).map((f) => Math.floor(Number(f[1]) / 4096)));
    const last = to ? this.lastErrors.get(to) : [...this.lastErrors.values()].at(-1);
    return {
      depth: (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (c.active ?? 0),
      retrying: c.delayed ?? 0,
      deadLetters: c.failed ?? 0,
      ...(Number.isFinite(next) ? { nextRetryAt: new Date(next).toISOString() } : {}),
      ...(last ? { lastError: last } : {}),
    };
  }

  /** Every queue whose jobs this outbox lists: the shards, then the unsharded one. */
  private get allQueues(): Queue<Data>[] {
    return this.legacy ? [...this.queues, this.legacy] : this.queues;
  }

  private async process(job: Job<Data>): Promise<void> {
    const { message, extra } = unpack<E>(job.data);
    try {
      await this.o.deliver(decodeMessage(message), extra);
    } catch (err) {
      // BullMQ skips the remaining attempts only for its own error class.
      if (err instanceof Undeliverable) throw new UnrecoverableError(err.message);
      throw err;
    }
    this.o.metrics.messagesOut.inc({ endpoint: this.o.label });
  }

  private failed(job: Job<Data>, err: Error): void {
    const { message, extra } = unpack<E>(job.data);
    this.lastErrors.delete(message.to);
    this.lastErrors.set(message.to, { at: new Date().toISOString(), message: err.message });
    if (this.lastErrors.size > 100) this.lastErrors.delete(this.lastErrors.keys().next().value!);
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    const fields = { outbox: this.o.name, msgId: message.id, to: message.to, err: err.message, attempt: job.attemptsMade };
    if (!final) {
      // The first failure is news; the next ones of an offline destination are the same news.
      this.o.log[job.attemptsMade <= 1 ? 'warn' : 'debug'](fields, 'delivery failed; will retry');
      return;
    }
    this.o.metrics.deadLettered.inc({ endpoint: this.o.label });
    this.o.log.error(fields, 'message dead-lettered');
    if (!this.o.onDeadLetter) return;
    Promise.resolve()
      .then(() => this.o.onDeadLetter!(decodeMessage(message), err.message, extra))
      .catch((e: unknown) => this.o.log.error({ ...fields, err: (e as Error).message }, 'dead-letter hook failed'));
  }

  /** Resolves once the message is stored; a `(to, sender, id)` seen within dedupTtlMs is a duplicate. */
  async send(message: Message, ...[extra]: Record<never, never> extends E ? [extra?: E] : [extra: E]): Promise<SendResult> {
    const jobId = outboxJobId();
    const data: Data = { ...encodeMessage(message), ...(extra ? { extra } : {}) };
    // Key and job are written by one BullMQ script: no crash leaves the id marked but unstored.
    const dedupId = outboxDedupId(message);
    const queue = this.queues[shardOf(dedupId, this.queues.length)]!;
    const job = await queue.add('out', data, { ...this.jobOptions, jobId, deduplication: { id: dedupId, ttl: this.o.dedupTtlMs } });
    return { id: message.id, duplicate: job.id !== jobId };
  }

  /** Every dead letter of this outbox for `address`, paging through the whole failed set. */
  private async deadJobs(address: string): Promise<Job<Data>[]> {
    const out: Job<Data>[] = [];
    for (const queue of this.allQueues) {
      const seen = new Set<string>();
      for (let start = 0; ; start += PAGE) {
        const page = await queue.getFailed(start, start + PAGE - 1);
        for (const job of page) {
          // Newer failures push older ones down a page while we read: count each job once.
          if (!job?.id || seen.has(job.id)) continue;
          seen.add(job.id);
          if (unpack<E>(job.data).message.to === address) out.push(job);
        }
        if (page.length < PAGE) break;
      }
    }
    // Newest first across the shards, as one failed set would list them.
    return out.sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0));
  }

  /** Job counts summed over every queue of the outbox. */
  private async counts(...states: ('wait' | 'prioritized' | 'delayed' | 'active' | 'failed')[]): Promise<Record<string, number>> {
    const sum: Record<string, number> = {};
    for (const c of await Promise.all(this.allQueues.map((q) => q.getJobCounts(...states)))) {
      for (const [k, v] of Object.entries(c)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum;
  }

  /** `depth` is the true number of dead letters for `address`; `messages` the newest `limit`. */
  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    const jobs = await this.deadJobs(address);
    return {
      address: `dlq:${address}`,
      depth: jobs.length,
      messages: jobs.slice(0, limit).map((j) => ({
        ...decodeMessage(unpack<E>(j.data).message),
        deadLetter: { reason: j.failedReason, attempts: j.attemptsMade, ...(j.finishedOn ? { at: new Date(j.finishedOn).toISOString() } : {}) },
      })),
    };
  }

  /**
   * Puts dead letters of `address` (all, or those with the given message ids) back for delivery
   * with a full set of attempts. Any unknown id is a NotFound naming it, and then nothing moves:
   * a typo must not replay half of what was asked.
   */
  async replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    let jobs = await this.deadJobs(address);
    if (ids) {
      const wanted = new Set(ids);
      jobs = jobs.filter((j) => wanted.has(unpack<E>(j.data).message.id));
      const found = new Set(jobs.map((j) => unpack<E>(j.data).message.id));
      const unknown = [...wanted].filter((id) => !found.has(id));
      if (unknown.length > 0) throw new NotFound(`no dead letter with id ${unknown.map((id) => `'${id}'`).join(', ')} in dlq:${address}; nothing was replayed`);
    }
    if (jobs.length === 0) return { replayed: 0, replayedJobs: [] };
    await before?.(jobs.map((j) => ({ queue: j.queueName, jobId: j.id!, finishedOn: j.finishedOn ?? 0, messageId: String(unpack<E>(j.data).message.id) })));
    // A dead letter replayed before a pass read it would otherwise never have its event.
    const events = this.deadLetterEvents;
    if (events) for (const j of jobs) await events.recordLeaving({ queue: j.queueName }, [j.id!]);
    const replayedJobs = await retryDeadLetters(jobs);
    return { replayed: replayedJobs.length, replayedJobs };
  }

  /** Messages not yet delivered: waiting, backing off, or being delivered now. */
  async depth(): Promise<number> {
    const c = await this.counts('wait', 'prioritized', 'delayed', 'active');
    return (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (c.active ?? 0);
  }

  async health(): Promise<HealthReport> {
    const c = await this.counts('wait', 'prioritized', 'delayed', 'active', 'failed');
    const waiting = (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (c.active ?? 0);
    return { ok: true, detail: `outbox: ${waiting} waiting, ${c.failed ?? 0} dead-lettered` };
  }

  /** Stops taking messages (in-flight deliveries finish) and closes the queue. */
  async close(): Promise<void> {
    this.closed = true;
    await this.deadLetterEvents?.close();
    await this.stopDelivering();
    await Promise.all(this.allQueues.map((q) => q.close()));
  }
}

/** See `Outbox.status`. */
export interface OutboxStatus {
  /** Not yet delivered: waiting, backing off, or being delivered now. */
  depth: number;
  /** Of those, backing off after a failed attempt. */
  retrying: number;
  deadLetters: number;
  nextRetryAt?: string;
  lastError?: { at: string; message: string };
}
