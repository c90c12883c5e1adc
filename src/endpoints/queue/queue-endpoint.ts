import { randomUUID } from 'node:crypto';
import { DelayedError, Job, Queue, UnrecoverableError, Worker, createRedisBackend, type BackendFactory, type JobsOptions, type RedisQueueBackend } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AckResult, BeforeReplay, BrowseResult, QueueStats, ReplayResult, ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, LeasedMessage, SendResult, Subscription } from '../../core/endpoint.ts';
import { MessageInFlight, NotFound, ValidationError, isRetryable } from '../../core/errors.ts';
import { holdAfterFailure } from '../../core/hold.ts';
import { matchesPattern, type AddressPattern } from '../../core/pattern.ts';
import { decodeMessage, encodeMessage, expiryReason, isExpired, type Message, type StoredMessage } from '../../core/message.ts';
import type { DedupWindows } from '../../core/dedup-window.ts';
import type { Metrics } from '../../core/metrics.ts';
import { RateMeter } from '../../core/rate-meter.ts';
import { retryDeadLetters } from '../../core/retry-dead-letters.ts';
import { corkForTurn } from '../../store/corked-turn.ts';
import { BatchedAdds } from './batched-adds.ts';
import { discardWaitingJob, waitingJobsWithId } from './discard-waiting.ts';
import { addressFromBullQueueName, bullQueueName, dedupId } from './names.ts';
import type { AddGuard } from './guarded-add.ts';

export interface QueueEndpointOptions {
  /** Connection shared by producers; BullMQ duplicates it for each worker's blocking reads. */
  redis: Redis;
  /** Key prefix for every BullMQ key. */
  prefix: string;
  /** Deliveries before a message is dead-lettered (failed attempts and expired leases both count). */
  maxAttempts: number;
  /** First retry delay; doubles each attempt. */
  backoffMs: number;
  /** How long a message id is remembered per queue for dedup (where no window rule matches). */
  dedupTtlMs: number;
  /** Deduplication windows per address pattern (`queues.dedup`); 0 turns dedup off for an address. */
  dedupWindows?: DedupWindows;
  /** Lock of a message being processed by a route; renewed while the handler runs. */
  lockMs: number;
  /**
   * How often expired locks of route consumers are looked for (a crashed consumer's message
   * returns within lock + this). Peek-lock leases do not wait for it: see `leaseCheckMs`.
   */
  stalledCheckMs: number;
  /**
   * How often this process looks for its own expired peek-lock leases; an expired lease's message
   * is back in the queue within about this long of its expiry, counted as a delivery.
   * @defaultValue 250
   */
  leaseCheckMs?: number;
  /** Bounded queues: a send to a queue holding maxDepth messages is refused as unavailable. */
  limits: { pattern: AddressPattern; maxDepth: number }[];
  /**
   * A queue nobody has used for this long (no send, receive, ack, browse; no lease that may
   * still come back) is closed in this process; the next use opens it again.
   * @defaultValue 60,000 (60 s)
   */
  idleMs?: number;
  /**
   * Queues kept open at most; past this the least recently used ones without live leases are
   * closed at once, idle or not.
   * @defaultValue 1000
   */
  maxOpen?: number;
  /**
   * Addresses whose depth is always reported (the config's routes). Consumed queues and the
   * exact addresses of `limits` are always reported too.
   */
  pinned?: string[];
  /**
   * Depth series, besides the always-reported ones, for the most recently used queues; the rest
   * of the open queues are summed into one `(other)` series.
   * @defaultValue 100
   */
  depthSeries?: number;
  metrics: Metrics;
  log: Logger;
}

type Data = StoredMessage;

/** One queue open in this process: its handle, its peek-lock reader, and what keeps it open. */
interface OpenQueue {
  queue: Queue<Data>;
  /** Peek-lock reader, made on the first receive. */
  lease?: Worker<Data>;
  lastUsed: number;
  /** Calls running on it right now: never closed under them. */
  inUse: number;
  /** Until then a lease handed out may still expire and must be returned by this reader. */
  leasesUntil: number;
}

/** A lease this process handed out and has not seen acked: when it expires, and where. */
interface LeaseExpiry {
  at: number;
  address: string;
  jobId: string;
  token: string;
}

/** Waiting messages looked through for the one to discard (by message id). */
const WAITING_SEARCHED = 1000;

/** Address the `(other)` depth series stands for. */
export const OTHER_ADDRESSES = '(other)';

/**
 * BullMQ gives each Worker its own blocking Redis connection. A peek-lock reader never blocks
 * (getNextJob with block: false), so its reader shares the producer connection instead: a
 * receive on any number of addresses opens no Redis client.
 */
const noBlockingConnection = ((name: string, opts: Parameters<typeof createRedisBackend>[1], extra?: Parameters<typeof createRedisBackend>[2]) =>
  createRedisBackend(name, opts, { ...extra, withBlockingConnection: false })) as unknown as BackendFactory<RedisQueueBackend>;

/** Records the events of these dead letters (job ids of one BullMQ queue) before they leave the failed set; throws if it cannot. */
export type DeadLettersLeaving = (q: { address: string; queue: string }, jobIds: string[]) => Promise<void>;

/**
 * `queue:` — internal durable queues on BullMQ. The dead-letter queue of `queue:x` is BullMQ's
 * failed set of x, so dead-lettering and replay are each one atomic BullMQ script.
 */
export class QueueEndpoint implements Endpoint {
  readonly scheme = 'queue';
  readonly dedupsOnIngress = true;
  /** Open queues, least recently used first (a use moves an entry to the end). */
  private readonly open = new Map<string, OpenQueue>();
  private readonly subscriptions = new Set<Subscription>();
  /** Addresses with a consumer in this process, and how many. */
  private readonly consumed = new Map<string, number>();
  private readonly idleMs: number;
  private readonly maxOpen: number;
  private readonly sweeper: NodeJS.Timeout;
  /** Leases handed out here and not acked, by lease string; looked at every `leaseCheckMs`. */
  private readonly leases = new Map<string, LeaseExpiry>();
  private readonly leaseTimer: NodeJS.Timeout;
  private returning = false;
  /** Accepted (`in:`) and acknowledged (`out:`) messages per address, for the console's rates. */
  private readonly rates = new RateMeter();
  private readonly adds: BatchedAdds;
  /** Records the events of dead letters about to be replayed or discarded (set when events want them). */
  private deadLettersLeaving?: DeadLettersLeaving;

  /**
   * An expired lease or a crash while holding a message is a delivery that did not finish; with
   * this many allowed, a message is handed out at most maxAttempts times before it is dead-lettered.
   */
  private readonly stallsAllowed: number;

  constructor(private readonly o: QueueEndpointOptions) {
    this.adds = new BatchedAdds(o.redis);
    this.stallsAllowed = Math.max(0, o.maxAttempts - 1);
    this.idleMs = o.idleMs ?? 60_000;
    this.maxOpen = o.maxOpen ?? 1000;
    this.sweeper = setInterval(() => void this.closeIdle(), Math.max(100, Math.min(this.idleMs / 2, 10_000))).unref();
    this.leaseTimer = setInterval(() => void this.returnExpiredLeases(), Math.max(20, o.leaseCheckMs ?? 250)).unref();
  }

  /**
   * Returns the messages of expired leases to their queues promptly instead of at the next
   * stalled check (which may be `stalledCheckMs` away, 15 s by default). It runs BullMQ's own
   * stalled check on the queue at once, so an expired lease counts as a delivery exactly as
   * before (the job's stalled counter; past maxAttempts - 1 it is dead-lettered on its next
   * take). That check moves a job only when it was marked in an earlier check and its lock is
   * gone: the job is marked first, and a lease whose lock Redis still holds (clocks a few ms
   * apart) waits for the next tick. A crash of this process loses only the promptness: the
   * regular stalled check of any process returns the message as before.
   */
  private async returnExpiredLeases(): Promise<void> {
    if (this.returning || this.leases.size === 0) return;
    this.returning = true;
    try {
      const now = Date.now();
      const due = new Map<string, [string, LeaseExpiry][]>();
      for (const [lease, x] of this.leases) {
        if (x.at > now) continue;
        const list = due.get(x.address) ?? [];
        list.push([lease, x]);
        due.set(x.address, list);
      }
      for (const [address, list] of due) {
        const e = this.open.get(address);
        if (!e?.lease) {
          // Closed here (dropped): the stalled check of whoever opens it next returns them.
          for (const [lease] of list) this.leases.delete(lease);
          continue;
        }
        await this.returnLeases(e.queue, e.lease, list).catch((err: Error) => this.o.log.warn({ err: err.message, address }, 'returning expired leases failed; the stalled check will'));
      }
    } finally {
      this.returning = false;
    }
  }

  private async returnLeases(q: Queue<Data>, reader: Worker<Data>, list: [string, LeaseExpiry][]): Promise<void> {
    const locks = await Promise.all(list.map(([, x]) => this.o.redis.get(`${q.toKey(x.jobId)}:lock`)));
    const gone = list.filter(([, x], i) => locks[i] !== x.token);
    if (gone.length === 0) return;
    // Marked as possibly stalled, the rate limit of the check lifted, and the reader's stalled
    // check loop restarted (its first check runs at once, then every stalledCheckMs as before).
    await this.o.redis.sadd(q.keys.stalled!, ...gone.map(([, x]) => x.jobId));
    await this.o.redis.del(q.keys['stalled-check']!);
    await reader.startStalledCheckTimer();
    for (const [lease] of gone) this.leases.delete(lease);
  }

  /** The open entry of `address` (opened if needed); `use` marks it used now and most recent. */
  private entry(address: string, use = true): OpenQueue {
    let e = this.open.get(address);
    if (!e) {
      const queue = new Queue<Data>(bullQueueName(address), { connection: this.o.redis, prefix: this.o.prefix });
      queue.on('error', (err) => this.o.log.error({ err: err.message, address }, 'queue connection error'));
      e = { queue, lastUsed: 0, inUse: 0, leasesUntil: 0 };
      this.open.set(address, e);
      // Every queue ever opened is listed (one SADD per open, not per message): the console
      // lists queues from this set instead of scanning the keyspace.
      if (address.startsWith('queue:')) void this.o.redis.sadd(this.registryKey, address).catch(() => undefined);
      if (this.open.size > this.maxOpen) void this.closeIdle(true);
    }
    if (use) {
      e.lastUsed = Date.now();
      this.open.delete(address);
      this.open.set(address, e);
    }
    return e;
  }

  /** Runs `fn` on the open queue of `address`, which is not closed while it runs. */
  private async using<T>(address: string, fn: (e: OpenQueue) => Promise<T>): Promise<T> {
    const e = this.entry(address);
    e.inUse++;
    try {
      return await fn(e);
    } finally {
      e.inUse--;
      e.lastUsed = Date.now();
    }
  }

  /**
   * Closes queues unused for idleMs, or (overfull) the least recently used ones, never one in
   * use or with leases that may still expire (its reader returns them to the queue).
   */
  private async closeIdle(overfull = false): Promise<void> {
    const now = Date.now();
    const closing: OpenQueue[] = [];
    for (const [address, e] of this.open) {
      const full = overfull && this.open.size - closing.length > this.maxOpen;
      if (e.inUse > 0 || e.leasesUntil > now) continue;
      if (!full && now - e.lastUsed < this.idleMs) continue;
      closing.push(e);
      this.open.delete(address);
    }
    await Promise.all(closing.map(async (e) => {
      await e.lease?.close().catch(() => undefined);
      await e.queue.close().catch(() => undefined);
    }));
  }

  private get registryKey(): string {
    return `${this.o.prefix}:queue-addresses`;
  }

  /** Every `queue:` address opened by any process on this Redis (and not dropped), sorted. */
  async addresses(): Promise<string[]> {
    return (await this.o.redis.smembers(this.registryKey)).sort();
  }

  /** Queues open in this process and how many of them have a peek-lock reader (for tests and /readyz). */
  openCounts(): { queues: number; readers: number } {
    let readers = 0;
    for (const e of this.open.values()) if (e.lease) readers++;
    return { queues: this.open.size, readers };
  }

  /**
   * Depths for /metrics, bounded: the pinned, consumed and limited addresses, then the
   * `depthSeries` most recently used open queues, and the rest of the open queues summed as
   * `(other)`. Queues closed as idle are not counted.
   */
  async depths(): Promise<Record<string, number>> {
    const always = new Set([...(this.o.pinned ?? []), ...this.consumed.keys(), ...this.o.limits.filter((l) => !/[*?]/.test(l.pattern.raw) && l.pattern.raw.startsWith('queue:')).map((l) => l.pattern.raw)]);
    const recent = [...this.open.keys()].reverse().filter((a) => !always.has(a));
    const shown = recent.slice(0, this.o.depthSeries ?? 100);
    const rest = recent.slice(shown.length);
    const depth = (a: string) => depthOf(this.entry(a, false).queue);
    const [pinnedDepths, shownDepths, restDepths] = await Promise.all([
      Promise.all([...always].map(depth)),
      Promise.all(shown.map(depth)),
      Promise.all(rest.map(depth)),
    ]);
    const out: Record<string, number> = {};
    [...always].forEach((a, i) => (out[a] = pinnedDepths[i]!));
    shown.forEach((a, i) => (out[a] = shownDepths[i]!));
    if (rest.length > 0) out[OTHER_ADDRESSES] = restDepths.reduce((n, d) => n + d, 0);
    return out;
  }

  private maxDepth(address: string): number | undefined {
    return this.o.limits.find((l) => matchesPattern(l.pattern, address))?.maxDepth;
  }

  send(message: Message): Promise<SendResult> {
    return this.using(message.to, ({ queue: q }) => this.add(q, message));
  }

  /**
   * Stores `message` in the queue at `address`, which need not be its `to`, without a depth
   * check: for a transport whose messages live in queues (a topic's subscriptions), given this
   * endpoint at wiring. Dedup as for a send, by (to, sender, id), within that queue.
   */
  store(address: string, message: Message): Promise<SendResult> {
    return this.using(address, ({ queue: q }) => this.addJob(q, message));
  }

  /** Messages waiting in the queue at `address`. */
  depth(address: string): Promise<number> {
    return this.using(address, ({ queue: q }) => depthOf(q));
  }

  /** Deletes the queue at `address` with its messages and dead letters, and closes it here. */
  async drop(address: string): Promise<void> {
    const e = await this.using(address, async (e) => {
      await e.queue.obliterate({ force: true });
      return e;
    });
    await this.o.redis.srem(this.registryKey, address);
    // Closed here unless another call is using it right now (the idle sweep closes it later).
    if (this.open.get(address) !== e || e.inUse > 0) return;
    this.open.delete(address);
    await e.lease?.close().catch(() => undefined);
    await e.queue.close().catch(() => undefined);
  }

  private add(q: Queue<Data>, message: Message): Promise<SendResult> {
    // A depth limit is checked in the script that adds (guarded-add.ts): senders racing for the
    // last places cannot overshoot it.
    return this.addJob(q, message, this.maxDepth(message.to));
  }

  private async addJob(q: Queue<Data>, message: Message, maxDepth?: number): Promise<SendResult> {
    // The dedup key and the job are written by one script (guarded-add.ts): no window in which
    // a crash leaves the id marked without the message stored, or stored twice. The key outlives
    // the job by its window, so a redelivery after the message was consumed is still caught. The
    // job takes BullMQ's own id; a repeat is told by the script's answer.
    const dedupMs = this.o.dedupWindows?.windowFor(message.to) ?? this.o.dedupTtlMs;
    const opts: JobsOptions = { attempts: this.o.maxAttempts, backoff: { type: 'exponential', delay: this.o.backoffMs }, removeOnComplete: true };
    const guard: AddGuard = {};
    if (dedupMs > 0) guard.dedup = { id: dedupId(message), ms: dedupMs };
    if (maxDepth !== undefined) guard.maxDepth = maxDepth;
    const id = await this.adds.add(q, encodeMessage(message), opts, guard);
    const duplicate = typeof id !== 'string';
    if (!duplicate) this.rates.add(`in:${q.name}`);
    return { id: message.id, duplicate };
  }

  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription> {
    let stopping = false;
    const worker: Worker<Data> = new Worker<Data>(
      bullQueueName(address),
      async (job, token) => {
        const message = decodeMessage(job.data);
        // Past its ttl or absolute-expiry-time: dead-lettered with the reason, never delivered.
        if (isExpired(message)) {
          this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
          throw new UnrecoverableError(expiryReason(message));
        }
        // A destination that cannot accept now keeps this message here (in flight, locked) and
        // so, with every slot busy, the worker stops pulling: backpressure, not a failed attempt.
        try {
          // Tried once here: the options and closures of a hold are made only for a message held.
          try {
            await handler(message);
          } catch (first) {
            await holdAfterFailure(first, () => handler(message), {
              stopping: () => stopping,
              firstPauseMs: Math.min(this.o.backoffMs, 250),
              onHold: (err) => this.o.log.debug({ address, msgId: message.id, err: (err as Error).message }, 'destination unavailable; holding'),
            });
          }
        } catch (err) {
          if (!isRetryable(err)) throw err;
          // Stopping: hand the message back to the queue now, without counting an attempt. Moved
          // here, not by throwing: BullMQ ignores what a processor throws once its worker is
          // closing, and the message would sit "active" until the stalled check counted it as a
          // failed delivery.
          await job.moveToDelayed(Date.now(), token);
          throw new DelayedError();
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
    worker.on('completed', () => this.rates.add(`out:${worker.name}`));
    // Dead letters' lifecycle events are read back from the failed set (src/core/dead-letter-events.ts).
    worker.on('failed', (job, err) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
        this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
        this.o.log.warn({ address, msgId: job.data?.id, err: err.message }, 'message dead-lettered');
      }
    });
    let closed = false;
    const sub: Subscription = {
      close: async () => {
        stopping = true;
        this.subscriptions.delete(sub);
        if (!closed) {
          closed = true;
          const n = (this.consumed.get(address) ?? 1) - 1;
          if (n > 0) this.consumed.set(address, n);
          else this.consumed.delete(address);
        }
        await worker.close();
      },
    };
    this.subscriptions.add(sub);
    this.consumed.set(address, (this.consumed.get(address) ?? 0) + 1);
    return sub;
  }

  browse(address: string, limit: number): Promise<BrowseResult> {
    return this.using(address, ({ queue: q }) => this.browseQueue(q, address, limit));
  }

  private async browseQueue(q: Queue<Data>, address: string, limit: number): Promise<BrowseResult> {
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

  private leaseWorker(address: string, e: OpenQueue): Worker<Data> {
    if (!e.lease) {
      const w = new Worker<Data>(bullQueueName(address), null, {
        connection: this.o.redis,
        prefix: this.o.prefix,
        autorun: false,
        lockDuration: this.o.lockMs,
        stalledInterval: this.o.stalledCheckMs,
        maxStalledCount: this.stallsAllowed,
      }, noBlockingConnection);
      w.on('error', (err) => this.o.log.error({ err: err.message, address }, 'lease worker error'));
      // Without a running loop nobody else would return expired leases to the queue.
      void w.startStalledCheckTimer();
      e.lease = w;
    }
    return e.lease;
  }

  /** Peek-lock: the messages stay in the queue, locked for `leaseMs`, until acked. */
  receive(address: string, max: number, leaseMs: number): Promise<LeasedMessage[]> {
    return this.using(address, (e) => this.lease(address, e, max, leaseMs));
  }

  private async lease(address: string, e: OpenQueue, max: number, leaseMs: number): Promise<LeasedMessage[]> {
    const w = this.leaseWorker(address, e);
    const taken: { job: Job<Data>; token: string; message: Message }[] = [];
    // Taken 1, 2, 4, … at a time, each round's takes in one write, until a round comes back short:
    // a receive of n messages costs about log2(n) round trips, not n (each take is BullMQ's one
    // atomic move, so takes in parallel never hand out a message twice).
    for (let round = 1; taken.length < max; round *= 2) {
      const n = Math.min(round, max - taken.length);
      corkForTurn(this.o.redis);
      const got = (await Promise.all(Array.from({ length: n }, async () => {
        const token = randomUUID();
        const job = (await w.getNextJob(token, { block: false })) as Job<Data> | undefined;
        return job ? { job, token } : undefined;
      }))).filter((t) => t !== undefined);
      for (const { job, token } of got) {
        // BullMQ marks a message whose leases expired too often and leaves the failing to the
        // worker that next takes it: here, that is us.
        if (job.deferredFailure) {
          await job.moveToFailed(new UnrecoverableError(job.deferredFailure), token, false);
          this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
          this.o.log.warn({ address, msgId: job.data?.id, reason: job.deferredFailure }, 'message dead-lettered');
          continue;
        }
        const leased = decodeMessage(job.data);
        if (isExpired(leased)) {
          await job.moveToFailed(new UnrecoverableError(expiryReason(leased)), token, false);
          this.o.metrics.deadLettered.inc({ endpoint: 'queue' });
          this.o.log.warn({ address, msgId: leased.id, reason: expiryReason(leased) }, 'message dead-lettered');
          continue;
        }
        taken.push({ job, token, message: leased });
      }
      if (got.length < n) break;
    }
    if (taken.length === 0) return [];
    // Kept open until a lease that is never acked has expired and a stalled check (two
    // intervals) has returned it to the queue.
    e.leasesUntil = Math.max(e.leasesUntil, Date.now() + Math.max(leaseMs, this.o.lockMs) + 2 * this.o.stalledCheckMs + 1000);
    // Taken under the reader's lock (lockMs); each lock set to the lease at once, together, so a
    // batch's leases start (and so expire) within one round trip of each other.
    corkForTurn(this.o.redis);
    await Promise.all(taken.map(({ job, token }) => job.extendLock(token, leaseMs)));
    const at = Date.now() + leaseMs;
    return taken.map(({ job, token, message }) => {
      const lease = `${job.id}.${token}`;
      this.leases.set(lease, { at, address, jobId: job.id!, token });
      return { ...message, lease };
    });
  }

  ack(address: string, leases: string[]): Promise<AckResult> {
    return this.using(address, ({ queue: q }) => this.ackLeases(q, leases));
  }

  private async ackLeases(q: Queue<Data>, leases: string[]): Promise<AckResult> {
    // Each lease is its own job and lock: acked side by side, each round's commands in one write.
    corkForTurn(this.o.redis);
    const ok = await Promise.all(leases.map(async (lease) => {
      const dot = lease.indexOf('.');
      // Redis away: the ack fails as a whole (retryable), as before; a lease that no longer
      // holds its job (expired, acked already, made up) is named back as expired.
      const job = dot > 0 ? await Job.fromId<Data>(q, lease.slice(0, dot)) : undefined;
      if (!job) return false;
      try {
        corkForTurn(this.o.redis);
        await job.moveToCompleted(null, lease.slice(dot + 1), false);
        return true;
      } catch {
        return false;
      }
    }));
    const result: AckResult = { acked: 0, expired: [] };
    leases.forEach((lease, i) => {
      if (!ok[i]) {
        result.expired.push(lease);
        return;
      }
      this.leases.delete(lease);
      result.acked++;
      this.rates.add(`out:${q.name}`);
    });
    return result;
  }

  deadLetters(address: string, limit: number): Promise<BrowseResult> {
    return this.using(address, ({ queue: q }) => this.failed(q, address, limit));
  }

  private async failed(q: Queue<Data>, address: string, limit: number): Promise<BrowseResult> {
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

  /**
   * Moves dead letters (all, or those with the given message ids) back to the queue: exactly
   * those found when the replay started (handed to `before`), not ones dead-lettered meanwhile.
   */
  replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    return this.using(address, ({ queue: q }) => this.replay(q, address, ids, before));
  }

  /**
   * Where the events of dead letters are recorded before a replay or a discard takes them out of
   * the failed set, which is where the events' reconciler would otherwise have found them.
   */
  recordDeadLettersLeavingWith(fn: DeadLettersLeaving): void {
    this.deadLettersLeaving = fn;
  }

  private async replay(q: Queue<Data>, address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    const wanted = ids ? new Set(ids) : undefined;
    const jobs: Job<Data>[] = [];
    const seen = new Set<string>();
    for (let start = 0, page = 500; ; start += page) {
      const batch = (await q.getFailed(start, start + page - 1)).filter(Boolean);
      for (const job of batch) {
        // A newer failure pushes older ones down a page while we read: each job once.
        if (!job.id || seen.has(job.id)) continue;
        seen.add(job.id);
        if (!wanted || wanted.has(job.data.id)) jobs.push(job);
      }
      if (batch.length < page) break;
    }
    const notFound = wanted ? [...wanted].filter((id) => !jobs.some((j) => j.data.id === id)) : [];
    // Ids asked for but not found are named, so a typo is not silent.
    if (wanted && jobs.length === 0) throw new NotFound(`no dead letter with id ${notFound.join(', ')} in dlq:${address}`);
    if (jobs.length === 0) return { replayed: 0, replayedJobs: [] };
    await before?.(jobs.map((j) => ({ queue: q.name, jobId: j.id!, finishedOn: j.finishedOn ?? 0, messageId: String(j.data.id) })));
    await this.deadLettersLeaving?.({ address, queue: q.name }, jobs.map((j) => j.id!));
    const replayedJobs = await retryDeadLetters(jobs);
    const replayedIds = new Set(jobs.filter((j) => replayedJobs.includes(j.id!)).map((j) => j.data.id));
    return { replayed: replayedIds.size, replayedJobs, ...(notFound.length > 0 ? { notFound } : {}) };
  }

  /**
   * Deletes the dead letters of `address` with these message ids; an id not among them is a
   * NotFound naming it, and then nothing is deleted (a typo must not discard half of a request).
   */
  discardDeadLetters(address: string, ids: string[]): Promise<{ discarded: number }> {
    return this.using(address, async ({ queue: q }) => {
      const wanted = new Set(ids);
      const found: Job<Data>[] = [];
      for (let start = 0, page = 500; ; start += page) {
        const jobs = (await q.getFailed(start, start + page - 1)).filter(Boolean);
        found.push(...jobs.filter((j) => wanted.has(j.data.id)));
        if (jobs.length < page) break;
      }
      const unknown = [...wanted].filter((id) => !found.some((j) => j.data.id === id));
      if (unknown.length > 0) throw new NotFound(`no dead letter with id ${unknown.map((id) => `'${id}'`).join(', ')} in dlq:${address}; nothing was discarded`);
      await this.deadLettersLeaving?.({ address, queue: q.name }, found.map((j) => j.id!));
      for (const j of found) await j.remove();
      return { discarded: found.length };
    });
  }

  /**
   * Deletes the waiting message with this id for good. Looked for among the first
   * `WAITING_SEARCHED` waiting messages (what the console lists comes from their head); the
   * delete itself is one script that first checks the message still waits (discard-waiting.ts),
   * so a consumer taking it at the same moment either got it first (MessageInFlight, nothing
   * deleted) or never sees it.
   */
  discardWaiting(address: string, id: string): Promise<void> {
    return this.using(address, async ({ queue: q }) => {
      const jobs = await waitingJobsWithId(q, id, WAITING_SEARCHED);
      if (jobs.length > 1) throw new ValidationError(`${jobs.length} waiting messages of ${address} have the id '${id}' (sent by different senders); they cannot be told apart here, so none was discarded`);
      const job = jobs[0];
      if (job && (await discardWaitingJob(this.o.redis, q, job.id!)) === 'discarded') return;
      const held = (await q.getJobs(['active'], 0, WAITING_SEARCHED - 1)).some((j) => j?.data?.id === id);
      if (held || job) throw new MessageInFlight(address, id);
      throw new NotFound(`no message '${id}' waiting in ${address} (among its first ${WAITING_SEARCHED.toLocaleString('en')}); nothing was discarded`);
    });
  }

  stats(address: string): Promise<QueueStats> {
    return this.using(address, async ({ queue: q }) => {
      const [c, oldest] = await Promise.all([q.getJobCounts('wait', 'prioritized', 'delayed', 'active', 'failed'), oldestWaiting(q)]);
      return {
        address,
        depth: (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0),
        inFlight: c.active ?? 0,
        deadLetters: c.failed ?? 0,
        ...(oldest !== undefined ? { oldestAgeMs: Math.max(0, Date.now() - oldest) } : {}),
        inPerSecond: this.rates.perSecond(`in:${q.name}`),
        outPerSecond: this.rates.perSecond(`out:${q.name}`),
      };
    });
  }

  /**
   * Age in seconds of the oldest waiting message of each queue /metrics shows a depth for (the
   * same bounded set of series as `depths`, without `(other)`).
   */
  async oldestAges(): Promise<Record<string, number>> {
    const addresses = Object.keys(await this.depths()).filter((a) => a !== OTHER_ADDRESSES);
    const ages = await Promise.all(addresses.map((a) => oldestWaiting(this.entry(a, false).queue)));
    const now = Date.now();
    return Object.fromEntries(addresses.map((a, i) => [a, ages[i] === undefined ? 0 : Math.max(0, now - ages[i]!) / 1000]));
  }

  async health(): Promise<HealthReport> {
    const pong = await this.o.redis.ping();
    const { queues, readers } = this.openCounts();
    return { ok: pong === 'PONG', detail: `${queues} queue(s) open, ${readers} peek-lock reader(s), ${this.subscriptions.size} consumer(s)` };
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    clearInterval(this.leaseTimer);
    this.leases.clear();
    await Promise.all([...this.subscriptions].map((s) => s.close()));
    const open = [...this.open.values()];
    this.open.clear();
    await Promise.all(open.map((e) => e.lease?.close()));
    await Promise.all(open.map((e) => e.queue.close()));
  }
}

/** When the oldest waiting message was added (epoch ms), if any waits. */
async function oldestWaiting(q: Queue<Data>): Promise<number | undefined> {
  const jobs = (await q.getJobs(['wait', 'prioritized', 'delayed'], 0, 0, true)).filter(Boolean);
  return jobs.length === 0 ? undefined : Math.min(...jobs.map((j) => j.timestamp));
}

async function depthOf(q: Queue<Data>): Promise<number> {
  const c = await q.getJobCounts('wait', 'prioritized', 'delayed');
  return (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
}

export { addressFromBullQueueName };
