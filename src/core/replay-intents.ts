import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { redisNow } from '../store/redis.ts';
import type { CapturedDeadLetter } from './endpoint.ts';
import { DependencyUnavailable } from './errors.ts';
import type { LifecycleEvent, RecordLifecycle } from './lifecycle.ts';
import { RepeatingPass } from './repeating-pass.ts';

/**
 * `switchboard.message.replayed` that survives a kill -9 of the process replaying.
 *
 * A replay is BullMQ's own script (one per dead letter), so its event cannot be written in the
 * same atomic step. Instead, before the first dead letter moves, the replay stores an *intent*:
 * exactly which dead letters it will replay (queue, job id, when each was dead-lettered) and where
 * each queue's BullMQ event stream stood. After the replay it records the event and drops the
 * intent. While it replays it keeps the intent's index score in the future (a heartbeat); an
 * intent whose score has passed belongs to a process that died, and any gateway's poll then
 * decides from Redis what really happened (`decide`) and records the event for what was replayed.
 * The event id is fixed when the intent is stored, so an event recorded by both (the replaying
 * process got it out, then died before dropping the intent) is one event, deduplicated.
 *
 * The replay itself is never run again from an intent: an operator's click is not repeated later.
 *
 * Size: an intent lists every captured dead letter (about 100 bytes each), so "replay all" of a
 * queue with 100,000 dead letters stores an intent of about 10 MB for the time of the replay.
 */

export interface ReplayIntentsOptions {
  redis: Redis;
  /** Key prefix; BullMQ keys are `<prefix>:<queue>:…`. */
  prefix: string;
  record: RecordLifecycle;
  /**
   * How long an intent without a heartbeat waits before a poll decides it.
   * @defaultValue 15000
   */
  graceMs?: number;
  /**
   * How often every gateway looks for intents left by a process that died.
   * @defaultValue 2000
   */
  pollMs?: number;
  log: Logger;
}

/** A replay as stored before it starts. */
export interface ReplayIntent {
  /** Digest of the address, the captured dead letters and a nonce: the event's key, fixed when the intent is stored. */
  id: string;
  address: string;
  /** The replay named message ids (the event then lists those replayed). */
  named: boolean;
  jobs: CapturedDeadLetter[];
  /** Per queue: the id of the last entry of its BullMQ event stream when the dead letters were captured ('0-0': empty, which tells nothing). */
  streams: Record<string, string>;
}

/** Intents decided per poll. */
const BATCH = 50;
/** Stream entries read per XRANGE while looking for replays of dead letters that are gone. */
const STREAM_PAGE = 1000;
/** An intent body outlives any grace by far; it expires only if its index entry was lost. */
const BODY_TTL_S = 7 * 24 * 3600;

export class ReplayIntents {
  private readonly index: string;
  private readonly graceMs: number;
  private readonly polls: RepeatingPass;
  private closed = false;

  constructor(private readonly o: ReplayIntentsOptions) {
    // One hash tag: the index and every intent body in one Redis Cluster slot (replays are rare).
    this.index = `${o.prefix}:{replay-intents}`;
    this.graceMs = o.graceMs ?? 15_000;
    this.polls = new RepeatingPass(() => this.poll(), o.pollMs ?? 2000, o.log, 'replay intents poll failed; the next one retries');
  }

  private bodyKey(id: string): string {
    return `${this.index}:${id}`;
  }

  /** Stores the intent of replaying `jobs` of `address`; returns it with a running heartbeat (stopped by `stop`). */
  async begin(address: string, named: boolean, jobs: CapturedDeadLetter[]): Promise<ReplayIntent & { stop: () => void }> {
    const streams: Record<string, string> = {};
    for (const queue of new Set(jobs.map((j) => j.queue))) {
      const last = (await this.o.redis.xrevrange(`${this.o.prefix}:${queue}:events`, '+', '-', 'COUNT', 1))[0];
      streams[queue] = last ? last[0] : '0-0';
    }
    // A nonce too: two operators replaying the same dead letters at once are two replays, each
    // reporting what it moved; the id is read back from the stored intent, never recomputed.
    const digest = createHash('sha256').update(`${address}\0${randomUUID()}`);
    for (const j of [...jobs].sort((a, b) => (a.queue + a.jobId < b.queue + b.jobId ? -1 : 1))) digest.update(`\0${j.queue}\0${j.jobId}\0${j.finishedOn}`);
    const intent: ReplayIntent = { id: digest.digest('hex').slice(0, 40), address, named, jobs, streams };
    // Scored by Redis's clock, as the poll reads it: a gateway whose clock runs ahead must not
    // take a replay still beating elsewhere for a stopped one.
    const now = await redisNow(this.o.redis);
    await this.o.redis.multi().set(this.bodyKey(intent.id), JSON.stringify(intent), 'EX', BODY_TTL_S).zadd(this.index, now + this.graceMs, intent.id).exec().then(failedIn('storing the replay intent'));
    // Kept ahead of the poll while this process replays, however long the replay takes.
    const beat = setInterval(() => {
      void redisNow(this.o.redis).then((t) => this.o.redis.zadd(this.index, 'XX', t + this.graceMs, intent.id)).catch(() => { /* the next beat tries again */ });
    }, Math.max(100, this.graceMs / 3));
    beat.unref();
    return { ...intent, stop: () => clearInterval(beat) };
  }

  /** After the replay: records the event of what it moved, then drops the intent. */
  async finish(intent: ReplayIntent, replayedJobIds: string[]): Promise<void> {
    const moved = new Set(replayedJobIds);
    const replayed = intent.jobs.filter((j) => moved.has(j.jobId));
    if (replayed.length > 0) await this.o.record(this.event(intent, replayed));
    await this.forget(intent.id);
  }

  /**
   * What became of each captured dead letter, from Redis: replayed, or not (still the same dead
   * letter, or discarded). Rules, per job:
   * - its job hash exists and it is in the failed set with the captured `finishedOn`: not replayed;
   * - its job hash exists otherwise (waiting, active, delayed, or dead-lettered again later): replayed;
   * - its job hash is gone: replayed if the queue's event stream shows it moved from failed to
   *   waiting after the capture; not replayed if the stream, intact since then, does not (it was
   *   discarded). If the stream was trimmed past the capture (BullMQ keeps about 10,000 entries),
   *   it counts as replayed: a replayed message is deleted once delivered, which on a queue busy
   *   enough to trim its stream is the likely fate, whereas a discard needs an operator to discard
   *   that very dead letter within the grace period.
   */
  async decide(intent: ReplayIntent): Promise<CapturedDeadLetter[]> {
    const replayed: CapturedDeadLetter[] = [];
    const gone = new Map<string, CapturedDeadLetter[]>();
    for (const j of intent.jobs) {
      const jobKey = `${this.o.prefix}:${j.queue}:${j.jobId}`;
      const [exists, score] = await Promise.all([this.o.redis.exists(jobKey), this.o.redis.zscore(`${this.o.prefix}:${j.queue}:failed`, j.jobId)]);
      if (exists === 0) gone.set(j.queue, [...(gone.get(j.queue) ?? []), j]);
      else if (score === null || Number(score) !== j.finishedOn) replayed.push(j);
    }
    for (const [queue, jobs] of gone) {
      const { covered, moved } = await this.movedFromFailed(queue, intent.streams[queue] ?? '0-0', new Set(jobs.map((j) => j.jobId)));
      replayed.push(...jobs.filter((j) => !covered || moved.has(j.jobId)));
    }
    return replayed;
  }

  /** Which of `jobIds` the queue's event stream shows going from failed to waiting after `since`, and whether the stream still reaches back to `since`. */
  private async movedFromFailed(queue: string, since: string, jobIds: Set<string>): Promise<{ covered: boolean; moved: Set<string> }> {
    const stream = `${this.o.prefix}:${queue}:events`;
    const first = (await this.o.redis.xrange(stream, '-', '+', 'COUNT', 1))[0]?.[0];
    // Trimming drops the oldest entries first: the stream still holds everything after `since` only if it reaches back to it.
    const covered = since !== '0-0' && first !== undefined && compareStreamIds(first, since) <= 0;
    const moved = new Set<string>();
    for (let from = `(${since}`; ;) {
      const page = await this.o.redis.xrange(stream, from, '+', 'COUNT', STREAM_PAGE);
      for (const [id, fields] of page) {
        const f = fieldsOf(fields);
        if (f.event === 'waiting' && f.prev === 'failed' && f.jobId !== undefined && jobIds.has(f.jobId)) moved.add(f.jobId);
        from = `(${id}`;
      }
      if (page.length < STREAM_PAGE) break;
    }
    return { covered, moved };
  }

  /** Decides one intent left by a process that died, records its event if anything was replayed, drops it. */
  async reconcile(id: string): Promise<void> {
    const body = await this.o.redis.get(this.bodyKey(id));
    if (body === null) {
      await this.o.redis.zrem(this.index, id);
      return;
    }
    const intent = JSON.parse(body) as ReplayIntent;
    const replayed = await this.decide(intent);
    if (replayed.length > 0) await this.o.record(this.event(intent, replayed));
    this.o.log.info({ address: intent.address, captured: intent.jobs.length, replayed: replayed.length }, 'replay left by a process that stopped: reported what it replayed');
    await this.forget(id);
  }

  /** Decides an intent now (the replay failed part way in this process: nothing more will move). */
  async settle(intent: ReplayIntent): Promise<void> {
    await this.reconcile(intent.id);
  }

  private async forget(id: string): Promise<void> {
    await this.o.redis.multi().zrem(this.index, id).del(this.bodyKey(id)).exec().then(failedIn('dropping the replay intent'));
  }

  private event(intent: ReplayIntent, replayed: CapturedDeadLetter[]): LifecycleEvent {
    const messageIds = [...new Set(replayed.map((j) => j.messageId))];
    return {
      type: 'switchboard.message.replayed',
      subject: intent.address,
      key: `${intent.address}\0replay\0${intent.id}`,
      data: { address: intent.address, replayed: messageIds.length, ...(intent.named ? { messageIds } : {}) },
    };
  }

  /** Starts the poll for intents whose process stopped beating. */
  start(): void {
    if (!this.closed) this.polls.start();
  }

  /** One look for due intents. Two gateways deciding one intent at once record the same event id: one event. */
  async poll(): Promise<void> {
    const due = await this.o.redis.zrangebyscore(this.index, '-inf', await redisNow(this.o.redis), 'LIMIT', 0, BATCH);
    for (const id of due) {
      if (this.closed) return;
      try {
        await this.reconcile(id);
      } catch (err) {
        this.o.log.warn({ intent: id, err: (err as Error).message }, 'replay intent not decided yet; the next poll retries');
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.polls.stop();
  }
}

/** Compares two stream ids (`ms-seq`). */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}

function fieldsOf(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

/** A MULTI whose EXEC reported an error in one of its commands. */
function failedIn(what: string): (results: [Error | null, unknown][] | null) => void {
  return (results) => {
    const err = results?.find(([e]) => e)?.[0];
    if (err || results === null) throw new DependencyUnavailable('redis', `${what} failed: ${err?.message ?? 'transaction aborted'}`);
  };
}
