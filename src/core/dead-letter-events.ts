import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Lease } from '../store/lease.ts';
import { redisNow } from '../store/redis.ts';
import type { LifecycleEvent, RecordLifecycle } from './lifecycle.ts';
import { RepeatingPass } from './repeating-pass.ts';

/**
 * `switchboard.message.dead-lettered` for messages BullMQ dead-letters (its failed set), read back
 * from that set rather than told by the worker that failed them.
 *
 * Why a reconciler: BullMQ moves a job to the failed set inside its own script, and only then
 * tells the worker process; a kill -9 between the two loses what the process was told, never the
 * failed job. So the failed set is the durable record of the change, and the event is derived from
 * it: a singleton (a lease, one gateway at a time) reads each queue's failed set from a checkpoint
 * (its score is the time the job failed, `finishedOn`), records the event of each dead letter
 * (awaited: stored in the events outbox), and only then moves the checkpoint on. The event key
 * is the job's (address, job id, attempts, finishedOn): the same dead-lettering read twice (a
 * re-read after a crash, the overlap below) is the same event id and is deduplicated; a dead letter
 * replayed and failed again is a new event.
 */

export interface DeadLetterQueue {
  /** The address whose dead letters these are (`queue:orders`); none: each job's own `to` (an outbox). */
  address?: string;
  /** The BullMQ queue name (`{queue%3Aorders}`). */
  queue: string;
}

export interface DeadLetterEventsOptions {
  redis: Redis;
  prefix: string;
  /** The BullMQ queues to watch, asked on every pass (queues come and go). */
  queues: () => Promise<DeadLetterQueue[]>;
  /** The transport named in the events (`queue`). */
  transport: string;
  /**
   * The singleton duty's name (one lease per name).
   * @defaultValue the transport
   */
  duty?: string;
  record: RecordLifecycle;
  /**
   * More events of the same dead letter (a peer's `switchboard.peer.undeliverable`), with keys as
   * fixed as the dead-lettered one's.
   * @defaultValue none
   */
  alsoReport?: (d: DeadLetter) => LifecycleEvent[];
  /**
   * How often the lease holder reads the failed sets.
   * @defaultValue 2000
   */
  pollMs?: number;
  /**
   * How far before the checkpoint each pass reads again: jobs failed by a process whose clock is
   * behind Redis's (the checkpoint never passes Redis's clock) by up to this still get their event.
   * @defaultValue 60000
   */
  overlapMs?: number;
  /**
   * Dead letters read per page of a queue's failed set.
   * @defaultValue 500
   */
  batch?: number;
  log: Logger;
}

/** One dead letter as the failed set and its job hash record it. */
export interface DeadLetter {
  address: string;
  messageId: unknown;
  reason: string;
  /** Fixed for this dead-lettering (job id, attempts, when it failed): the key of its events. */
  key: string;
}

export class DeadLetterEvents {
  private readonly lease: Lease;
  private readonly passes: RepeatingPass;
  /** Events recorded by this process within the overlap, so a re-read does not store them again. */
  private readonly recorded = new Map<string, number>();
  private closed = false;

  constructor(private readonly o: DeadLetterEventsOptions) {
    this.lease = new Lease({ redis: o.redis, key: `${o.prefix}:lease:dead-letter-events:${o.duty ?? o.transport}`, log: o.log });
    this.passes = new RepeatingPass(() => this.pass(), o.pollMs ?? 2000, o.log.child({ transport: o.transport }), 'dead-letter events: pass failed; the next one retries');
  }

  start(): void {
    this.lease.start({
      acquired: () => {
        if (!this.closed) this.passes.start();
      },
      // A pass in flight finishes: its events are keyed, so the new holder re-reading them is harmless.
      lost: () => void this.passes.stop(),
    });
  }

  private checkpointKey(queue: string): string {
    return `${this.o.prefix}:dead-letter-events:${queue}`;
  }

  /** One look at every queue's failed set since its checkpoint. */
  async pass(): Promise<void> {
    const overlap = this.o.overlapMs ?? 60_000;
    const batch = this.o.batch ?? 500;
    // Redis's clock, one for every gateway: BullMQ scores a dead letter with the clock of the
    // worker that failed it, so one gateway running ahead must not carry the checkpoint past
    // what the others (on time) are about to fail. A dead letter scored ahead of it is read
    // again by each pass until Redis's time reaches it (the same key: deduplicated).
    const now = await redisNow(this.o.redis);
    for (const q of await this.o.queues()) {
      if (this.closed) return;
      const key = this.checkpointKey(q.queue);
      const saved = await this.o.redis.get(key);
      // The first pass starts at "now": dead letters from before events were configured are history.
      if (saved === null) {
        await this.o.redis.set(key, String(now - overlap), 'NX');
        continue;
      }
      const from = Number(saved) - overlap;
      let newest = Number(saved);
      // Paged by score, not by offset: a dead letter replayed or discarded while the pass reads
      // would shift every offset after it, and the first one of the next page would be skipped.
      // `skip`: how many of the dead letters at score `lower` were read already (same-ms ties).
      let lower = from;
      let skip = 0;
      while (!this.closed) {
        const failed = await this.o.redis.zrangebyscore(`${this.o.prefix}:${q.queue}:failed`, lower, '+inf', 'WITHSCORES', 'LIMIT', skip, batch);
        for (let i = 0; i + 1 < failed.length; i += 2) {
          await this.recordJob(q, failed[i]!, failed[i + 1]!);
          newest = Math.max(newest, Math.min(Number(failed[i + 1]), now));
        }
        // Moved on only past dead letters whose events are stored: a crash re-reads from here.
        if (newest > Number(saved)) await this.o.redis.set(key, String(newest));
        if (failed.length < 2 * batch) break;
        const last = Number(failed[failed.length - 1]);
        let tied = 0;
        for (let i = failed.length - 1; i > 0 && Number(failed[i]) === last; i -= 2) tied++;
        skip = last === lower ? skip + tied : tied;
        lower = last;
      }
    }
    const old = Date.now() - 2 * overlap;
    for (const [k, at] of this.recorded) if (at < old) this.recorded.delete(k);
  }

  /**
   * Records the events of these dead letters now, before a replay or a discard takes them out of
   * the failed set: a pass (every `pollMs`) would not find them any more. Keyed as a pass keys
   * them, so one that read them too adds nothing. Throws if an event cannot be stored: the caller
   * then moves nothing.
   */
  async recordLeaving(q: DeadLetterQueue, jobIds: readonly string[]): Promise<void> {
    for (const jobId of jobIds) await this.recordJob(q, jobId);
  }

  /** The events of one dead letter as its job hash has it, unless recorded already; nothing for a job gone meanwhile. */
  private async recordJob(q: DeadLetterQueue, jobId: string, score?: string): Promise<void> {
    const [data, reason, attempts, finishedOn] = await this.o.redis.hmget(`${this.o.prefix}:${q.queue}:${jobId}`, 'data', 'failedReason', 'atm', 'finishedOn');
    if (data === null || data === undefined) return; // discarded meanwhile
    const d = this.deadLetter(q.address, jobId, data, reason ?? '', attempts ?? '0', finishedOn ?? score ?? '0');
    if (this.recorded.has(d.key)) return;
    for (const event of [this.event(d), ...(this.o.alsoReport?.(d) ?? [])]) await this.o.record(event);
    this.recorded.set(d.key, Date.now());
  }

  private deadLetter(address: string | undefined, jobId: string, data: string, reason: string, attempts: string, finishedOn: string): DeadLetter {
    let stored: { id?: unknown; to?: unknown; message?: { id?: unknown; to?: unknown } } = {};
    try {
      stored = JSON.parse(data) as typeof stored;
    } catch {
      /* unreadable: the event says what the failed set says */
    }
    // Outbox jobs hold the message itself; peer jobs stored before there was one outbox class hold it under `message`.
    const message = typeof stored.id === 'string' || stored.message === undefined ? stored : stored.message;
    const to = address ?? (typeof message.to === 'string' ? message.to : '(unknown)');
    return { address: to, messageId: message.id, reason, key: `${to}\0${jobId}\0${attempts}\0${finishedOn}` };
  }

  private event(d: DeadLetter): LifecycleEvent {
    return { type: 'switchboard.message.dead-lettered', subject: d.address, key: d.key, data: { address: d.address, messageId: d.messageId, transport: this.o.transport, reason: d.reason } };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.passes.stop();
    await this.lease.stop().catch(() => {});
  }
}
