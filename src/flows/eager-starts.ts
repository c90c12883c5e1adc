import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { randomBase64url } from '../core/random-text.ts';
import { TurnBatches } from '../store/turn-batches.ts';
import type { FlowKeys } from './keys.ts';

/** A started instance to run here. */
export interface EagerRun {
  id: string;
  /** Its run ('busy': another run holds the instance). */
  run: () => Promise<'done' | 'busy'>;
  /** Gives back the lock its creation took, when it is handed to the run queue instead. */
  unlock: () => Promise<void>;
}

export interface EagerStartsOptions {
  redis: Redis;
  keys: FlowKeys;
  /** Hands an instance to the run queue (FlowRuntime.wake): the durable way, for whatever is not run here. */
  wake: (id: string) => Promise<void>;
  /** Eager runs in progress at once. */
  concurrency: number;
  /** Started instances waiting here for a free run; beyond it a start goes to the run queue. */
  backlog: number;
  /** How long this process's claim on its started instances outlives its last heartbeat. */
  leaseMs: number;
  /** How often the claims of dead processes are looked for. */
  sweepMs: number;
  log: Logger;
}

/**
 * Eager start: a new instance runs in the process that received its start, without a BullMQ run
 * job — the job's add, fetch and finish were about a third of the Redis work of a short flow.
 *
 * What makes it as safe as the queue: before a start is acknowledged its instance id is in a set
 * of this process (`flow-eager:{<owner>}:ids`), kept alive by a heartbeat key with a lease. An
 * instance leaves the set once its run has parked it, ended it, or handed it to the run queue.
 * When a process dies, its heartbeat expires; any other process (or this one restarted) takes the
 * lease with SET NX, hands every id left in the set to the run queue, and removes it. A run woken
 * twice is harmless (the instance lock lets one run at a time, and replay makes reruns safe).
 * A start beyond the backlog, a duplicate start and any run that fails here go to the run queue.
 */
export class EagerStarts {
  /** 128 random bits: this process's name in the registry. */
  readonly owner = randomBase64url(16);
  /** Started instances waiting for a run here: the run to do ('busy': another run holds it). */
  private readonly queue: EagerRun[] = [];
  private running = 0;
  /** Ids in our set that this process still deals with (a sweep of our own set leaves them alone). */
  private readonly mine = new Set<string>();
  /** Claims of one turn: one SADD. */
  private readonly adds = new TurnBatches<string>((key, ids) => this.o.redis.sadd(key, ...ids));
  /** Settled starts of one turn: one SREM. */
  private readonly removes = new TurnBatches<string>(async (key, ids) => {
    await this.o.redis.srem(key, ...ids).catch((err: Error) => {
      // Left in the set: a later sweep of our own set (or a recovery) wakes them once more, harmlessly.
      this.o.log.warn({ err: err.message, instances: ids.length }, 'eager flow starts: could not clear settled starts');
    });
    for (const id of ids) this.mine.delete(id);
  });
  private heartbeat?: NodeJS.Timeout;
  private sweeper?: NodeJS.Timeout;
  private closing = false;
  private idle?: () => void;
  /** Starts sent to the run queue because the backlog was full, and dead processes' starts handed over. */
  readonly stats = { overflow: 0, recovered: 0 };

  constructor(private readonly o: EagerStartsOptions) {}

  /** Registers this process and starts its heartbeat and the sweep for dead processes' starts. */
  async start(): Promise<void> {
    await this.beat();
    this.heartbeat = setInterval(() => void this.beat().catch((err: Error) => this.o.log.warn({ err: err.message }, 'eager flow starts: heartbeat failed')), Math.max(100, Math.floor(this.o.leaseMs / 3))).unref();
    this.sweeper = setInterval(() => void this.sweep().catch((err: Error) => this.o.log.warn({ err: err.message }, 'eager flow starts: sweep failed')), this.o.sweepMs).unref();
    void this.sweep().catch((err: Error) => this.o.log.warn({ err: err.message }, 'eager flow starts: sweep failed'));
  }

  private async beat(): Promise<void> {
    const k = this.o.keys;
    // Different slots: two commands, not one transaction.
    await Promise.all([this.o.redis.set(k.eagerAlive(this.owner), this.owner, 'PX', this.o.leaseMs), this.o.redis.sadd(k.eagerOwners(), this.owner)]);
  }

  /**
   * Whether a new start may run here: true reserves a place in the backlog, and `claim` must then
   * be followed by `begin` (the instance was created) or `release` (it was not).
   */
  reserve(): boolean {
    if (this.closing || this.queue.length + this.running + this.pending >= this.o.backlog + this.o.concurrency) {
      if (!this.closing) this.stats.overflow++;
      return false;
    }
    this.pending++;
    return true;
  }

  /** Places reserved by starts whose instance is being created. */
  private pending = 0;

  /**
   * Records the instance in this process's set (one SADD for all the starts of a turn). Resolved
   * before the start is acknowledged: a crash after it leaves the id for another process to run.
   */
  claim(id: string): Promise<void> {
    this.mine.add(id);
    return this.adds.add(this.o.keys.eagerIds(this.owner), id);
  }

  /** Runs a claimed, created instance here as soon as a run is free. */
  begin(start: EagerRun): void {
    this.pending--;
    this.queue.push(start);
    this.pump();
  }

  /** A reserved place not used (the start failed or was a duplicate); the id leaves the set. */
  release(id: string): void {
    this.pending--;
    this.settle(id);
    this.checkIdle();
  }

  /** Nothing reserved, waiting or running here: a stop may go on. */
  private get busy(): boolean {
    return this.running > 0 || this.queue.length > 0 || this.pending > 0;
  }

  private checkIdle(): void {
    if (!this.busy) this.idle?.();
  }

  private pump(): void {
    while (this.running < this.o.concurrency && this.queue.length > 0) {
      const start = this.queue.shift()!;
      this.running++;
      void this.runOne(start).finally(() => {
        this.running--;
        this.pump();
        this.checkIdle();
      });
    }
  }

  private async runOne({ id, run, unlock }: EagerRun): Promise<void> {
    try {
      if (this.closing) {
        await this.handOff(id, unlock);
      } else if ((await run()) === 'busy') {
        // Another process runs it now (a duplicate start woke it there): its run queue has the say.
        await this.o.wake(id);
      }
      this.settle(id);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, instance: id }, 'eager flow run failed; handing it to the run queue');
      // Left in the set when even that fails: the next sweep of our own set hands it over.
      try {
        await this.handOff(id, unlock);
        this.settle(id);
      } catch (e) {
        this.mine.delete(id);
        this.o.log.warn({ err: (e as Error).message, instance: id }, 'could not hand an eager flow start to the run queue; the sweep will retry');
      }
    }
  }

  /** To the run queue, without the lock its creation took (else its run there waits for the lock to expire). */
  private async handOff(id: string, unlock: () => Promise<void>): Promise<void> {
    await unlock().catch(() => undefined);
    await this.o.wake(id);
  }

  /** The instance's start is dealt with: out of the set (one SREM for a turn's worth). */
  private settle(id: string): void {
    void this.removes.add(this.o.keys.eagerIds(this.owner), id);
  }

  /**
   * Hands the starts of dead processes to the run queue, and ours that no run here holds (a run
   * whose hand-over failed, or whose SREM was lost).
   */
  async sweep(): Promise<void> {
    const k = this.o.keys;
    const owners = await this.o.redis.smembers(k.eagerOwners());
    for (const owner of owners) {
      if (this.closing) return;
      if (owner === this.owner) {
        await this.handOver(owner, (id) => !this.mine.has(id));
        continue;
      }
      // Taken only once its owner's heartbeat has expired; held while we hand its starts over.
      if ((await this.o.redis.set(k.eagerAlive(owner), this.owner, 'PX', this.o.leaseMs, 'NX')) !== 'OK') continue;
      const n = await this.handOver(owner, () => true);
      if ((await this.o.redis.scard(k.eagerIds(owner))) === 0) {
        await this.o.redis.del(k.eagerAlive(owner));
        await this.o.redis.srem(k.eagerOwners(), owner);
      }
      if (n > 0) this.o.log.info({ owner, instances: n }, 'flow starts of a stopped process handed to the run queue');
    }
  }

  private async handOver(owner: string, which: (id: string) => boolean): Promise<number> {
    const ids = (await this.o.redis.smembers(this.o.keys.eagerIds(owner))).filter(which);
    for (const id of ids) await this.o.wake(id);
    if (ids.length > 0) await this.o.redis.srem(this.o.keys.eagerIds(owner), ...ids);
    this.stats.recovered += owner === this.owner ? 0 : ids.length;
    return ids.length;
  }

  /**
   * Stops taking starts, lets the runs in progress end, hands the backlog to the run queue, and
   * leaves the registry when nothing is left in our set (else the lease runs out and another
   * process, or this one restarted, hands the rest over).
   */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeat);
    clearInterval(this.sweeper);
    // Starts reserved before the stop (their instance still being created) are waited for too:
    // each becomes a run to hand over, or a release.
    if (this.busy) await new Promise<void>((resolve) => (this.idle = resolve));
    await this.removes.settled();
    const k = this.o.keys;
    try {
      if ((await this.o.redis.scard(k.eagerIds(this.owner))) === 0) {
        await this.o.redis.srem(k.eagerOwners(), this.owner);
        await this.o.redis.del(k.eagerAlive(this.owner));
      }
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'eager flow starts: could not leave the registry; its lease will run out');
    }
  }
}
