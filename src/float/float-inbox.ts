import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';

const SCRIPTS = { storeFloatEntry: 3 } as const;

/** The float inbox's keys, all under the hash tag `{float-in}` (one slot on a cluster). */
export function floatInboxKeys(prefix: string) {
  const base = `${prefix}:{float-in}`;
  const k = { data: `${base}:data`, ready: `${base}:ready`, taken: `${base}:taken`, refused: `${base}:refused`, seen: (id: string) => `${base}:seen:${id}` };
  return { ...k, storeFloatEntry: (entryId: string): [string, string, string] => [k.seen(entryId), k.data, k.ready] };
}

/** What waits on the float for the gateway: a peer's message as it arrived, or a notice. */
export type FloatEntry =
  | { kind: 'peer-message'; peer: string; target: string; id: string; bytes: string; at: string; attachments?: string[] }
  | { kind: 'notice'; notice: string; at: string };

/**
 * The float's store of inbound work (its own Redis): entries wait in `ready` until the gateway
 * pulls them, sit in `taken` while the gateway has them, and are deleted only when the gateway
 * acknowledges; a released or unsettled entry (the tunnel dropped, the float restarted) goes back
 * to the front of `ready`. An entry the gateway refuses is kept in `refused` with the reason.
 * Every key shares the hash tag `{float-in}`.
 */
export class FloatInbox extends EventEmitter {
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;
  private readonly k: ReturnType<typeof floatInboxKeys>;

  constructor(private readonly redis: Redis, prefix: string, private readonly horizonMs: number) {
    super();
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
    this.k = floatInboxKeys(prefix);
  }

  /** The entry id of a peer message: the same peer, address and message id give the same entry. */
  static entryId(parts: string[]): string {
    return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 40);
  }

  /** Stores an entry unless its id was seen within the event horizon; true when stored. */
  async store(entryId: string, entry: FloatEntry): Promise<boolean> {
    const stored = (await this.scripts.storeFloatEntry(this.k.storeFloatEntry(entryId), entryId, JSON.stringify(entry), this.horizonMs)) === 1;
    if (stored) this.emit('stored');
    return stored;
  }

  /** The oldest waiting entry, moved to `taken`; undefined when none waits. */
  async take(): Promise<{ entryId: string; entry: FloatEntry } | undefined> {
    for (;;) {
      const entryId = await this.redis.lmove(this.k.ready, this.k.taken, 'LEFT', 'RIGHT');
      if (!entryId) return undefined;
      const raw = await this.redis.hget(this.k.data, entryId);
      if (raw) return { entryId, entry: JSON.parse(raw) as FloatEntry };
      // An id without data was acknowledged already: drop it.
      await this.redis.lrem(this.k.taken, 1, entryId);
    }
  }

  /** The gateway durably took it: gone from the float. */
  async ack(entryId: string): Promise<void> {
    await this.redis.multi().lrem(this.k.taken, 1, entryId).hdel(this.k.data, entryId).exec();
  }

  /** Not taken now: back to the front, delivered again first. */
  async release(entryId: string): Promise<void> {
    await this.redis.multi().lrem(this.k.taken, 1, entryId).lpush(this.k.ready, entryId).exec();
    this.emit('stored');
  }

  /** The gateway refused it for good (bad signature, not allowed): kept aside with the reason. */
  async refuse(entryId: string, reason: string): Promise<void> {
    const raw = await this.redis.hget(this.k.data, entryId);
    await this.redis.multi().lrem(this.k.taken, 1, entryId).hdel(this.k.data, entryId).hset(this.k.refused, entryId, JSON.stringify({ reason, at: new Date().toISOString(), entry: raw })).exec();
    if (raw) this.emit('refused', JSON.parse(raw) as FloatEntry, reason);
  }

  /** At start: whatever was out with a gateway when the float stopped goes back to the front, in order. */
  async recover(): Promise<number> {
    let n = 0;
    while (await this.redis.lmove(this.k.taken, this.k.ready, 'RIGHT', 'LEFT')) n++;
    return n;
  }

  /** Entries waiting or out with the gateway. */
  async depth(): Promise<{ ready: number; taken: number; refused: number }> {
    const [ready, taken, refused] = await Promise.all([this.redis.llen(this.k.ready), this.redis.llen(this.k.taken), this.redis.hlen(this.k.refused)]);
    return { ready, taken, refused };
  }
}
