import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { redisNow, shardOf, shardTag } from '../store/redis.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import type { EventJournal, LifecycleEvent } from './lifecycle.ts';
import { RepeatingPass } from './repeating-pass.ts';

/**
 * Lifecycle events recorded in the same atomic step as the change they report (the
 * transactional outbox pattern), then moved to where they are delivered from.
 *
 * A store that makes a change in a Lua script passes the change's events to that script, which
 * writes them into an events journal — a hash `event id → event (JSON)` under the SAME hash tag
 * as the change's other keys (one Redis Cluster slot) — only when the change really happens. So
 * no crash can leave a change without its event, nor an event without its change.
 *
 * Finding journals: the keys live in many slots (a flow instance's, a task shard's), so the
 * writer first announces the journal in an index (a sorted set per shard, score = when to look
 * at it: Redis's time + `graceMs`, so gateways' clocks need not agree), then runs its script. A
 * drainer (every gateway) drains a journal right after a local change, and polls the index for
 * entries that are due (by Redis's time too): it forwards each event
 * (idempotent: the event id is the outbox message id, deduplicated), deletes what it forwarded,
 * and drops the index entry only if its score is unchanged (`forgetEventJournal`): a writer that
 * announced meanwhile changed it. An index entry is due only `graceMs` after its last
 * announcement, by which time the announcing writer's script has long run (it is sent as soon as
 * the announcement is acknowledged); a journal left by a process killed after its change is
 * therefore delivered by any gateway within about `graceMs` + `pollMs`.
 */

/** Stores one journaled event durably where it is delivered from; resolving means it is stored. */
export type ForwardEvent = (id: string, json: string) => Promise<void>;

export interface LifecycleJournalOptions {
  redis: Redis;
  prefix: string;
  /**
   * Index shards (redis.shards): journals are spread over them by key.
   * @defaultValue 1
   */
  shards?: number;
  /** The journal entries (`[id, json]`) of the events some `events:` mapping wants; none when no mapping does. */
  encode: (events: LifecycleEvent[]) => [string, string][];
  forward: ForwardEvent;
  /**
   * How long after an announcement the index entry is looked at by the poll (and may be dropped).
   * @defaultValue 10000
   */
  graceMs?: number;
  /**
   * How often every gateway looks for due journals.
   * @defaultValue 1000
   */
  pollMs?: number;
  log: Logger;
}

const SCRIPTS = { announceEventJournal: 1, forgetEventJournal: 1 } as const;

/** Journals drained per index shard and poll. */
const BATCH = 200;

export class LifecycleJournal implements EventJournal {
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;
  private readonly indexes: string[];
  private readonly graceMs: number;
  private readonly polls: RepeatingPass;
  /** Journals being drained by this process; a second wake while one runs drains once more after it. */
  private readonly draining = new Map<string, { again: boolean; done: Promise<void> }>();
  private closed = false;

  constructor(private readonly o: LifecycleJournalOptions) {
    this.scripts = loadScripts(o.redis, new URL('./scripts/', import.meta.url), SCRIPTS);
    const shards = Math.max(1, o.shards ?? 1);
    this.indexes = shards === 1 ? [`${o.prefix}:{event-journals}`] : Array.from({ length: shards }, (_, i) => `${o.prefix}:{${shardTag('event-journals', i)}}`);
    this.graceMs = o.graceMs ?? 10_000;
    this.polls = new RepeatingPass(() => this.poll(), o.pollMs ?? 1000, o.log, 'events journal poll failed');
  }

  /** The index entry of a journal key. */
  indexOf(journalKey: string): string {
    return this.indexes[shardOf(journalKey, this.indexes.length)]!;
  }

  entries(events: LifecycleEvent[]): string[] {
    return this.o.encode(events).flat();
  }

  async expect(journalKey: string): Promise<void> {
    await this.scripts.announceEventJournal([this.indexOf(journalKey)], journalKey, this.graceMs);
  }

  written(journalKey: string): void {
    void this.drain(journalKey).catch((err: Error) => this.o.log.warn({ journal: journalKey, err: err.message }, 'lifecycle events not forwarded yet; the journal poll retries'));
  }

  /** Starts the poll for due journals (those of changes whose process died before draining them). */
  start(): void {
    if (!this.closed) this.polls.start();
  }

  /** One look at every index shard: drains each due journal, then drops it from the index if nothing new came. */
  async poll(): Promise<void> {
    // Redis's clock, the one announcements are scored by (announceEventJournal).
    const now = await redisNow(this.o.redis);
    for (const index of this.indexes) {
      const due = await this.o.redis.zrangebyscore(index, '-inf', now, 'WITHSCORES', 'LIMIT', 0, BATCH);
      for (let i = 0; i + 1 < due.length && !this.closed; i += 2) {
        const key = due[i]!;
        try {
          await this.drain(key);
          await this.scripts.forgetEventJournal([index], key, due[i + 1]!);
        } catch (err) {
          // Kept in the index: the next poll tries again (the events outbox may be unreachable).
          this.o.log.warn({ journal: key, err: (err as Error).message }, 'lifecycle events not forwarded yet');
        }
      }
    }
  }

  /** Forwards every event in the journal, then deletes those it forwarded (a rewrite of one is the same event). */
  drain(journalKey: string): Promise<void> {
    const running = this.draining.get(journalKey);
    if (running) {
      running.again = true;
      return running.done;
    }
    const state = { again: false, done: Promise.resolve() };
    state.done = (async () => {
      try {
        do {
          state.again = false;
          const all = await this.o.redis.hgetall(journalKey);
          const ids = Object.keys(all);
          if (ids.length === 0) break;
          for (const id of ids) await this.o.forward(id, all[id]!);
          await this.o.redis.hdel(journalKey, ...ids);
        } while (state.again && !this.closed);
      } finally {
        this.draining.delete(journalKey);
      }
    })();
    this.draining.set(journalKey, state);
    return state.done;
  }

  /** Stops polling and waits for drains in flight; what is left stays journaled in Redis. */
  async close(): Promise<void> {
    this.closed = true;
    await this.polls.stop();
    await Promise.allSettled([...this.draining.values()].map((d) => d.done));
  }
}
