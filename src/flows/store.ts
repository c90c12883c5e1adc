import type { Redis } from 'ioredis';
import type { StoredMessage } from '../core/message.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { FlowKeys, STATE_PARTS, type InstancePart } from './keys.ts';
import { BeginRunCode, CreateInstanceCode, DeliverCode, LockCode } from './scripts/codes.ts';

export { DeliverCode } from './scripts/codes.ts';

export type FlowStatus = 'running' | 'waiting' | 'completed' | 'failed' | 'cancelled';

/** One journaled ctx call. `done: false` marks a wait that has begun (its deadline is fixed). */
export interface JournalEntry {
  n: number;
  kind: 'send' | 'request' | 'receive' | 'ask' | 'sleep' | 'step' | 'now' | 'uuid' | 'tag';
  target?: string;
  at: string;
  done: boolean;
  result?: unknown;
  error?: { name: string; code?: string; message: string };
  /** Epoch ms when a wait times out (request, receive, ask, sleep). */
  deadline?: number;
  /** Message consumed by a receive/request/ask (never consumed twice). */
  consumed?: string;
  /** The correlation token a request or ask waits for: `<instanceId>:<step>:<nonce>`. */
  correlation?: string;
  /** The task an ask created (made by the inbox): only a decision on this task answers the ask. */
  task?: string;
}

export interface InstanceMeta {
  id: string;
  flow: string;
  status: FlowStatus;
  input: unknown;
  result?: unknown;
  error?: { code?: string; message: string };
  waitingOn?: { step: number; kind: string; target?: string; until?: string };
  createdAt: string;
  updatedAt: string;
  startedBy: string;
  replyTo?: string;
  correlationId?: string;
  cancelledBy?: string;
  /** How often an admin retried it; part of message ids sent after a retry. */
  attempt?: string;
  /** The token of the last run begun (see `beginRun`). */
  run?: string;
  /**
   * 128 random bits, never shown: the key of the nonces in this instance's correlation tokens,
   * so a reply can be bound to the step that asked without trusting a guessable id.
   */
  secret?: string;
  /** The W3C trace context of the instance's span (DESIGN §11): its steps are spans of this trace. */
  traceparent?: string;
  tracestate?: string;
}

const JSON_FIELDS = new Set(['input', 'result', 'error', 'waitingOn']);

const SCRIPTS = { createInstance: 2, deliverMessage: 3, refreshLock: 1, releaseLock: 1, beginRun: 4, parkInstance: 3, finishInstance: 7 } as const;

/**
 * Redis keeps a hash as a compact listpack while every value is at most hash-max-listpack-value
 * (64 bytes by default); one longer value turns the whole hash into a hash table, about three
 * times the memory. An input longer than this lives in a string key of its own.
 */
const INLINE_INPUT_BYTES = 64;

const encodeFields = (fields: Record<string, unknown>): string[] =>
  Object.entries(fields).flatMap(([k, v]) => (v === undefined ? [] : [k, JSON_FIELDS.has(k) ? JSON.stringify(v) : String(v)]));

/**
 * A journal entry as stored: without its step number (the hash field says it) and without a
 * false `done` — a begun wait (`{"kind":"receive","at":"…"}`) stays short enough for the journal
 * hash's compact encoding. Entries stored before carry both, and read the same.
 */
const encodeEntry = (e: JournalEntry): string => {
  const { n: _n, done, ...rest } = e;
  return JSON.stringify(done ? { ...rest, done } : rest);
};

const decodeEntry = (field: string, value: string): JournalEntry => {
  const e = JSON.parse(value) as Partial<JournalEntry>;
  return { ...e, n: Number(field), done: e.done ?? false } as JournalEntry;
};

const encodeSteps = (entries: JournalEntry[]): string[] => entries.flatMap((e) => [String(e.n), encodeEntry(e)]);

/** The meta hash as an object; `input` kept apart (see INLINE_INPUT_BYTES) comes from `input`. */
function decodeMeta(flat: string[], input?: string | null): InstanceMeta | null {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = JSON_FIELDS.has(flat[i]!) ? JSON.parse(flat[i + 1]!) : flat[i + 1];
  if (out.input === undefined && typeof input === 'string') out.input = JSON.parse(input);
  return out.id ? (out as unknown as InstanceMeta) : null;
}

function decodeJournal(flat: string[]): Map<number, JournalEntry> {
  const out = new Map<number, JournalEntry>();
  for (let i = 0; i + 1 < flat.length; i += 2) out.set(Number(flat[i]), decodeEntry(flat[i]!, flat[i + 1]!));
  return out;
}

/** A run begun by `beginRun`: the instance as it was, and the run before this one. */
export interface BegunRun {
  meta: InstanceMeta | null;
  /** The token of the run begun before this one (undefined: never run). */
  previousRun?: string;
  /** The journal, when it was asked for. */
  journal?: Map<number, JournalEntry>;
}

/**
 * Redis state of flow instances. Every key of one instance shares a hash tag (see `./keys.ts`),
 * so each script in `./scripts/` and each transaction here runs in one Redis Cluster slot.
 */
export class InstanceStore {
  private readonly keys: FlowKeys;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;

  constructor(private readonly redis: Redis, prefix: string) {
    this.keys = new FlowKeys(prefix);
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  private k(id: string, part: InstancePart): string {
    return this.keys.instance(id, part);
  }

  /**
   * Adds the instance to both indexes. They live in different slots, so two commands (not one
   * pipeline, which a Cluster client refuses across slots); both are idempotent.
   */
  private async addToIndexes(flow: string, id: string, score: number): Promise<void> {
    await Promise.all([this.redis.zadd(this.keys.index(flow), score, id), this.redis.zadd(this.keys.index(), score, `${flow}/${id}`)]);
  }

  /**
   * Binds a starter's start id to an instance id, once: returns the instance an earlier start
   * made, or null when `id` is now the one. Kept as long as finished instances are.
   */
  async claimStart(digest: string, id: string, ttlMs: number): Promise<string | null> {
    const key = this.keys.start(digest);
    const set = await this.redis.set(key, id, 'PX', ttlMs, 'NX');
    return set === 'OK' ? null : await this.redis.get(key);
  }

  /** The instance's status alone (cheap: one field), e.g. to notice a cancel during a run. */
  async status(id: string): Promise<FlowStatus | null> {
    return (await this.redis.hget(this.k(id, 'meta'), 'status')) as FlowStatus | null;
  }

  async create(meta: InstanceMeta): Promise<boolean> {
    const input = meta.input === undefined ? undefined : JSON.stringify(meta.input);
    const apart = input !== undefined && Buffer.byteLength(input) > INLINE_INPUT_BYTES;
    const args = encodeFields({ ...meta, ...(apart ? { input: undefined } : {}) } as unknown as Record<string, unknown>);
    const created = (await this.scripts.createInstance(this.keys.createInstance(meta.id), apart ? input : '', ...args)) === CreateInstanceCode.Created;
    // Indexed on every start, not just the first: a crash between the create and this line is
    // mended by the sender's retry (ZADD of the stored time is idempotent).
    const createdAt = created ? meta.createdAt : ((await this.redis.hget(this.k(meta.id, 'meta'), 'createdAt')) ?? meta.createdAt);
    const score = Date.parse(createdAt);
    await this.addToIndexes(meta.flow, meta.id, score);
    return created;
  }

  /**
   * The instance's meta; with `withInput`, its input too even when it is kept apart (one more
   * command in the same round trip). Without it, `input` is there only when it is short.
   */
  async meta(id: string, withInput = false): Promise<InstanceMeta | null> {
    if (!withInput) return decodeMeta(Object.entries(await this.redis.hgetall(this.k(id, 'meta'))).flat());
    const r = await this.redis.pipeline().hgetall(this.k(id, 'meta')).get(this.k(id, 'input')).exec();
    for (const [err] of r!) if (err) throw err;
    return decodeMeta(Object.entries(r![0]![1] as Record<string, string>).flat(), r![1]![1] as string | null);
  }

  async update(id: string, fields: Partial<InstanceMeta>, remove: (keyof InstanceMeta)[] = []): Promise<void> {
    const args = encodeFields({ ...fields, updatedAt: new Date().toISOString() });
    const p = this.redis.multi().hset(this.k(id, 'meta'), ...args);
    if (remove.length > 0) p.hdel(this.k(id, 'meta'), ...remove);
    await p.exec();
  }

  /** The instance's input, wherever it is kept (a meta field, or its own key when long). */
  async input(id: string): Promise<unknown> {
    const r = await this.redis.pipeline().hget(this.k(id, 'meta'), 'input').get(this.k(id, 'input')).exec();
    for (const [err] of r!) if (err) throw err;
    const raw = (r![0]![1] ?? r![1]![1]) as string | null;
    return raw === null ? undefined : JSON.parse(raw);
  }

  /**
   * Takes the instance's lock for one run and reads what the run needs, in one round trip
   * (`scripts/beginRun-3.lua`); null when another run holds the lock.
   */
  async beginRun(id: string, token: string, lockMs: number, withJournal: boolean): Promise<BegunRun | null> {
    const r = (await this.scripts.beginRun(this.keys.beginRun(id), token, lockMs, withJournal ? '1' : '0')) as [number, string | null, string[], string[], string | null];
    if (r[0] !== BeginRunCode.Begun) return null;
    return { meta: decodeMeta(r[2], r[4]), ...(r[1] ? { previousRun: r[1] } : {}), ...(withJournal ? { journal: decodeJournal(r[3]) } : {}) };
  }

  /**
   * Journals `entries` (if any) and reads the status, in one round trip (a pipeline in one slot):
   * what a run does before each new side effect, to honour a cancel.
   */
  async journalAndStatus(id: string, entries: JournalEntry[]): Promise<FlowStatus | null> {
    if (entries.length === 0) return this.status(id);
    const r = await this.redis.pipeline().hset(this.k(id, 'journal'), ...encodeSteps(entries)).hget(this.k(id, 'meta'), 'status').exec();
    const [, status] = r![1]!;
    for (const [err] of r!) if (err) throw err;
    return status as FlowStatus | null;
  }

  /** A waiting run's end (`scripts/parkInstance-3.lua`): the status before it ('cancelled' stands). */
  async park(id: string, token: string, entries: JournalEntry[], waitingOn: InstanceMeta['waitingOn']): Promise<FlowStatus | null> {
    return (await this.scripts.parkInstance(this.keys.parkInstance(id), token, JSON.stringify(waitingOn ?? null), new Date().toISOString(), ...encodeSteps(entries))) as FlowStatus | null;
  }

  /**
   * A finishing run's end (`scripts/finishInstance-6.lua`): journals `entries`, records `fields`
   * (with status) unless a cancel stands, keeps the state for `retentionMs`, releases the lock.
   * Returns the status before it.
   */
  async finish(id: string, token: string, fields: Partial<InstanceMeta>, entries: JournalEntry[], retentionMs: number): Promise<FlowStatus | null> {
    const meta = encodeFields({ ...fields, updatedAt: new Date().toISOString() });
    return (await this.scripts.finishInstance(this.keys.finishInstance(id), token, retentionMs, meta.length / 2, ...meta, ...encodeSteps(entries))) as FlowStatus | null;
  }

  /** One journal entry (e.g. the step a reply claims to answer). */
  async step(id: string, n: number): Promise<JournalEntry | undefined> {
    const v = await this.redis.hget(this.k(id, 'journal'), String(n));
    return v === null ? undefined : decodeEntry(String(n), v);
  }

  private lastPrune = new Map<string, number>();

  /**
   * Drops index entries older than the retention (they point at nothing any more), at most once
   * a minute per index and process: two commands per finished instance were a third of the cost
   * of a short flow, and a stale index entry is only skipped by \`list\`.
   */
  async pruneIndexes(flow: string, ms: number): Promise<void> {
    const now = Date.now();
    if (now - (this.lastPrune.get(flow) ?? 0) < 60_000) return;
    this.lastPrune.set(flow, now);
    const cutoff = now - ms;
    await Promise.all([this.redis.zremrangebyscore(this.keys.index(flow), '-inf', cutoff), this.redis.zremrangebyscore(this.keys.index(), '-inf', cutoff)]);
  }

  async journal(id: string): Promise<Map<number, JournalEntry>> {
    return decodeJournal(Object.entries(await this.redis.hgetall(this.k(id, 'journal'))).flat());
  }

  async writeSteps(id: string, entries: JournalEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.redis.hset(this.k(id, 'journal'), ...encodeSteps(entries));
  }

  /** Journals a step that took a message from the inbox, in one transaction with taking it. */
  async consume(id: string, entry: JournalEntry, raw: string): Promise<void> {
    const [journal, consumed, inbox] = this.keys.consumeStep(id);
    await this.redis.multi()
      .hset(journal, String(entry.n), encodeEntry(entry))
      .sadd(consumed, entry.consumed!)
      .lrem(inbox, 1, raw)
      .exec();
  }

  async deleteStep(id: string, n: number): Promise<void> {
    await this.redis.hdel(this.k(id, 'journal'), String(n));
  }

  /** A `DeliverCode`: Delivered, Duplicate, NoInstance or Finished. */
  async deliver(id: string, message: StoredMessage): Promise<DeliverCode> {
    return (await this.scripts.deliverMessage(this.keys.deliverMessage(id), message.id, JSON.stringify(message))) as DeliverCode;
  }

  /**
   * Inbox messages not yet consumed, oldest first, with their stored form (to remove them by).
   * A consumed message leaves the inbox in the same transaction that journals it (`consume`), so
   * the inbox alone is the answer: no read of the consumed set, which grows with every step.
   */
  async inbox(id: string): Promise<{ raw: string; message: StoredMessage }[]> {
    const raws = await this.redis.lrange(this.k(id, 'inbox'), 0, -1);
    return raws.map((raw) => ({ raw, message: JSON.parse(raw) as StoredMessage }));
  }

  /** A finished instance is kept for `ms` (status, journal, result), then Redis drops it. */
  async expire(id: string, flow: string, ms: number): Promise<void> {
    const p = this.redis.multi();
    for (const part of STATE_PARTS) p.pexpire(this.k(id, part), ms);
    await p.exec();
    // Index entries older than the retention point at nothing any more (two slots: two commands).
    const cutoff = Date.now() - ms;
    await Promise.all([this.redis.zremrangebyscore(this.keys.index(flow), '-inf', cutoff), this.redis.zremrangebyscore(this.keys.index(), '-inf', cutoff)]);
  }

  /** Undoes `expire` (a failed instance being retried lives on). */
  async persist(id: string): Promise<void> {
    const p = this.redis.multi();
    for (const part of STATE_PARTS) p.persist(this.k(id, part));
    await p.exec();
  }

  async lock(id: string, token: string, ms: number): Promise<boolean> {
    return (await this.redis.set(this.k(id, 'lock'), token, 'PX', ms, 'NX')) === 'OK';
  }

  async refreshLock(id: string, token: string, ms: number): Promise<boolean> {
    return (await this.scripts.refreshLock(this.keys.refreshLock(id), token, ms)) === LockCode.Done;
  }

  async unlock(id: string, token: string): Promise<void> {
    await this.scripts.releaseLock(this.keys.releaseLock(id), token);
  }

  /**
   * Adds the instance to the index of one tag (`ctx.tag`), scored by the instance's creation
   * time like the flow indexes; idempotent, so a replay after a crash before the journal write
   * adds nothing new.
   */
  async addTag(flow: string, id: string, name: string, value: string, createdAt: string): Promise<void> {
    await this.redis.zadd(this.keys.tag(name, value), Date.parse(createdAt), `${flow}/${id}`);
  }

  /**
   * Instances of one flow (or all), or with one tag, newest first, created in [from, to] (epoch
   * ms), at most `limit`: a range read on an index, never a scan. Entries older than `keepFrom`
   * point at nothing any more and are dropped from a tag index on the way.
   */
  async range(q: { flow?: string; tag?: { name: string; value: string }; from?: number; to?: number; offset?: number; limit: number; keepFrom?: number }): Promise<{ flow: string; id: string }[]> {
    const key = q.tag ? this.keys.tag(q.tag.name, q.tag.value) : this.keys.index(q.flow);
    if (q.tag && q.keepFrom !== undefined) await this.redis.zremrangebyscore(key, '-inf', q.keepFrom);
    const ids = await this.redis.zrevrangebyscore(key, q.to ?? '+inf', q.from ?? '-inf', 'LIMIT', q.offset ?? 0, q.limit);
    const rows = ids.map((v) => (!q.tag && q.flow ? { flow: q.flow, id: v } : { flow: v.slice(0, v.indexOf('/')), id: v.slice(v.indexOf('/') + 1) }));
    return q.tag && q.flow ? rows.filter((r) => r.flow === q.flow) : rows;
  }

  /** Newest first. */
  async list(flow: string | undefined, limit: number): Promise<{ flow: string; id: string }[]> {
    const ids = await this.redis.zrevrange(this.keys.index(flow), 0, limit - 1);
    return ids.map((v) => (flow ? { flow, id: v } : { flow: v.slice(0, v.indexOf('/')), id: v.slice(v.indexOf('/') + 1) }));
  }
}
