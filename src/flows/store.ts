import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { NO_EVENTS, withEvents, type ChangeEvents, type EventJournal } from '../core/lifecycle.ts';
import type { StoredMessage } from '../core/message.ts';
import { corkForTurn } from '../store/corked-turn.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { TurnBatches } from '../store/turn-batches.ts';
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

const SCRIPTS = { createInstance: 4, deliverMessage: 3, refreshLock: 1, releaseLock: 1, beginRun: 4, parkInstance: 4, finishInstance: 7, cancelInstance: 2 } as const;

/**
 * Redis keeps a hash as a compact listpack while every value is at most hash-max-listpack-value
 * (64 bytes by default); one longer value turns the whole hash into a hash table, about three
 * times the memory. An input longer than this lives in a string key of its own.
 */
const INLINE_INPUT_BYTES = 64;

/**
 * An input up to this long is kept in the meta hash in pieces of at most INLINE_INPUT_BYTES
 * (fields `i0`, `i1`, …), so the hash stays a listpack: cheaper than a key of its own, and one
 * key fewer to read at a run's begin and to expire at its end. Longer inputs get their own key.
 */
const CHUNKED_INPUT_BYTES = 1024;

const CHUNK_FIELD = /^i\d+$/;

/** `text` cut into pieces of at most `max` UTF-8 bytes each, never inside a character. */
function chunks(text: string, max: number): string[] {
  const out: string[] = [];
  // One byte a character (ASCII, the usual JSON): plain slices, no walk over every character.
  if (Buffer.byteLength(text) === text.length) {
    for (let i = 0; i < text.length; i += max) out.push(text.slice(i, i + max));
    return out;
  }
  let piece = '';
  let bytes = 0;
  for (const ch of text) {
    const b = Buffer.byteLength(ch);
    if (bytes + b > max) {
      out.push(piece);
      piece = '';
      bytes = 0;
    }
    piece += ch;
    bytes += b;
  }
  if (piece !== '') out.push(piece);
  return out;
}

const encodeFields = (fields: Record<string, unknown>): string[] =>
  Object.entries(fields).flatMap(([k, v]) => (v === undefined ? [] : [k, JSON_FIELDS.has(k) ? JSON.stringify(v) : String(v)]));

/**
 * A journal entry as stored: without its step number (the hash field says it) and without a
 * false `done` — a begun wait (`{"kind":"receive","at":"…"}`) stays short enough for the journal
 * hash's compact encoding. Entries stored before carry both, and read the same.
 */
const encodeEntry = (e: JournalEntry): string => {
  // Copied key by key, not by object rest (`{ n, done, ...rest }`), which V8 runs ~3× slower, and
  // a flow writes an entry for every step.
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(e)) if (k !== 'n' && k !== 'done') out[k] = e[k as keyof JournalEntry];
  if (e.done) out.done = e.done;
  return JSON.stringify(out);
};

const decodeEntry = (field: string, value: string): JournalEntry => {
  // Filled in place, not spread into a new object: a replay decodes every entry of the journal,
  // and the copy was most of the cost of waking a flow with 1,000 steps.
  const e = JSON.parse(value) as JournalEntry;
  e.n = Number(field);
  e.done ??= false;
  return e;
};

const encodeSteps = (entries: JournalEntry[]): string[] => entries.flatMap((e) => [String(e.n), encodeEntry(e)]);

/**
 * The meta hash of instance `id` as an object (null: no instance). The input is a field when
 * short, in pieces when longer (see CHUNKED_INPUT_BYTES), else `input`, read from its own key.
 * The id is the key's (instances stored before kept it as a field too).
 */
function decodeMeta(id: string, flat: string[], input?: string | null): InstanceMeta | null {
  if (flat.length === 0) return null;
  const out: Record<string, unknown> = {};
  const pieces: string[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const f = flat[i]!;
    if (CHUNK_FIELD.test(f)) pieces[Number(f.slice(1))] = flat[i + 1]!;
    else out[f] = JSON_FIELDS.has(f) ? JSON.parse(flat[i + 1]!) : flat[i + 1];
  }
  if (out.input === undefined && pieces.length > 0) out.input = JSON.parse(pieces.join(''));
  if (out.input === undefined && typeof input === 'string') out.input = JSON.parse(input);
  out.id = id;
  return out as unknown as InstanceMeta;
}

function decodeJournal(flat: string[]): Map<number, JournalEntry> {
  const out = new Map<number, JournalEntry>();
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const e = decodeEntry(flat[i]!, flat[i + 1]!);
    out.set(e.n, e);
  }
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

  /** @param journal where a change's lifecycle events are recorded with it (none: events off) */
  constructor(private readonly redis: Redis, prefix: string, private readonly eventJournal?: EventJournal) {
    this.keys = new FlowKeys(prefix);
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  private k(id: string, part: InstancePart): string {
    return this.keys.instance(id, part);
  }

  /** Flow names this process has put into the set of indexed flows (written once per process). */
  private readonly named = new Set<string>();

  /**
   * Adds the instance to its flow's index (idempotent). Listing every flow's instances merges the
   * per-flow indexes of the flows in `names()`, so an instance costs one index entry, not two.
   */
  private async addToIndexes(flow: string, id: string, score: number): Promise<void> {
    const known = this.named.has(flow);
    // Different slots: separate commands, not one pipeline (a Cluster client refuses that).
    await Promise.all([this.indexing.add(this.keys.index(flow), [score, id]), known ? undefined : this.redis.sadd(this.keys.names(), flow)]);
    this.named.add(flow);
  }

  /** Index entries asked for in one turn, by index: one ZADD each (many starts arrive together). */
  private readonly indexing = new TurnBatches<[number, string]>((key, entries) => this.redis.zadd(key, ...entries.flat()));

  /**
   * The key instance ids are derived under (see FlowRuntime.instanceId), made once for the whole
   * deployment, and until when start ids bound by earlier versions (a key per start) are still
   * looked at: `legacyWindowMs` from now if any instance of an earlier version may exist (its
   * all-flows index does), else never.
   */
  async instanceIdKey(legacyWindowMs: number): Promise<{ key: Buffer; legacyUntil: number }> {
    const name = this.keys.idKey();
    let v = await this.redis.get(name);
    if (v === null) {
      const earlier = (await this.redis.exists(this.keys.index())) === 1;
      await this.redis.set(name, `${randomBytes(32).toString('base64url')}.${earlier ? Date.now() + legacyWindowMs : 0}`, 'NX');
      v = await this.redis.get(name);
      if (v === null) throw new Error(`flow instance id key ${name} vanished right after it was written`);
    }
    const dot = v.indexOf('.');
    return { key: Buffer.from(v.slice(0, dot), 'base64url'), legacyUntil: Number(v.slice(dot + 1)) || 0 };
  }

  /** The instance a start id was bound to by an earlier version (a key per start), if any. */
  async legacyStart(digest: string): Promise<string | null> {
    return this.redis.get(this.keys.start(digest));
  }

  /** The instance's status alone (cheap: one field), e.g. to notice a cancel during a run. */
  async status(id: string): Promise<FlowStatus | null> {
    corkForTurn(this.redis);
    return (await this.redis.hget(this.k(id, 'meta'), 'status')) as FlowStatus | null;
  }

  /**
   * Creates the instance once per id (false: it existed, nothing written). With `run`, a run of
   * this process begins with it: the lock is taken with the token `run.token` for `run.lockMs`,
   * and the meta's run mark is that token, as `beginRun` would leave them.
   */
  async create(meta: InstanceMeta, events: ChangeEvents = NO_EVENTS, run?: { token: string; lockMs: number }): Promise<boolean> {
    const input = meta.input === undefined ? undefined : JSON.stringify(meta.input);
    const size = input === undefined ? 0 : Buffer.byteLength(input);
    const apart = size > CHUNKED_INPUT_BYTES;
    const pieces = size > INLINE_INPUT_BYTES && !apart ? chunks(input!, INLINE_INPUT_BYTES).flatMap((c, i) => [`i${i}`, c]) : [];
    // The id is the key's, not a field. An empty run mark: never run, so the first run does not
    // read the (empty) journal.
    const fields: Record<string, unknown> = { run: run?.token ?? '' };
    for (const k of Object.keys(meta)) if (k !== 'id') fields[k] = meta[k as keyof InstanceMeta];
    if (size > INLINE_INPUT_BYTES) fields.input = undefined;
    const args = encodeFields(fields);
    const created = await withEvents(this.eventJournal, this.k(meta.id, 'events'), events, async (entries) =>
      (await this.scripts.createInstance(this.keys.createInstance(meta.id), apart ? input! : '', entries.length / 2, run?.token ?? '', run?.lockMs ?? 0, ...args, ...pieces, ...entries)) === CreateInstanceCode.Created);
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
    if (!withInput) return decodeMeta(id, Object.entries(await this.redis.hgetall(this.k(id, 'meta'))).flat());
    const r = await this.redis.pipeline().hgetall(this.k(id, 'meta')).get(this.k(id, 'input')).exec();
    for (const [err] of r!) if (err) throw err;
    return decodeMeta(id, Object.entries(r![0]![1] as Record<string, string>).flat(), r![1]![1] as string | null);
  }

  async update(id: string, fields: Partial<InstanceMeta>, remove: (keyof InstanceMeta)[] = []): Promise<void> {
    const args = encodeFields({ ...fields, updatedAt: new Date().toISOString() });
    const p = this.redis.multi().hset(this.k(id, 'meta'), ...args);
    if (remove.length > 0) p.hdel(this.k(id, 'meta'), ...remove);
    await p.exec();
  }

  /** The instance's input, wherever it is kept (meta fields, or its own key when long). */
  async input(id: string): Promise<unknown> {
    return (await this.meta(id, true))?.input;
  }

  /**
   * Takes the instance's lock for one run and reads what the run needs, in one round trip
   * (`scripts/beginRun-4.lua`); 'busy' when another run holds the lock, 'finished' when the lock
   * is the last run's of an instance that has ended.
   */
  async beginRun(id: string, token: string, lockMs: number, withJournal: boolean): Promise<BegunRun | 'busy' | 'finished'> {
    corkForTurn(this.redis);
    const r = (await this.scripts.beginRun(this.keys.beginRun(id), token, lockMs, withJournal ? '1' : '0', new Date().toISOString())) as [number, string | null, string[], string[], string | null];
    if (r[0] === BeginRunCode.Finished) return 'finished';
    if (r[0] !== BeginRunCode.Begun) return 'busy';
    const meta = decodeMeta(id, r[2], r[4]);
    // The script turned a waiting instance back to running (and dropped what it waited for).
    if (meta?.status === 'waiting') {
      meta.status = 'running';
      delete meta.waitingOn;
    }
    return { meta, ...(r[1] ? { previousRun: r[1] } : {}), ...(withJournal ? { journal: decodeJournal(r[3]) } : {}) };
  }

  /**
   * Journals `entries` (if any) and reads the status, in one round trip (two commands, one slot):
   * what a run does before each new side effect, to honour a cancel.
   */
  async journalAndStatus(id: string, entries: JournalEntry[]): Promise<FlowStatus | null> {
    if (entries.length === 0) return this.status(id);
    // Two commands written together, not a pipeline object: ioredis copies every script defined
    // on the client (BullMQ's, ~80) onto each new pipeline, ~100 µs of CPU per flow step.
    corkForTurn(this.redis);
    const [, status] = await Promise.all([this.redis.hset(this.k(id, 'journal'), ...encodeSteps(entries)), this.redis.hget(this.k(id, 'meta'), 'status')]);
    return status as FlowStatus | null;
  }

  /** A waiting run's end (`scripts/parkInstance-4.lua`): the status before it ('cancelled' stands). */
  async park(id: string, token: string, entries: JournalEntry[], waitingOn: InstanceMeta['waitingOn'], events: ChangeEvents = NO_EVENTS): Promise<FlowStatus | null> {
    return withEvents(this.eventJournal, this.k(id, 'events'), events, async (ev) =>
      (await this.scripts.parkInstance(this.keys.parkInstance(id), token, JSON.stringify(waitingOn ?? null), new Date().toISOString(), ev.length / 2, ...encodeSteps(entries), ...ev)) as FlowStatus | null);
  }

  /**
   * Cancels an instance that has not ended (`scripts/cancelInstance-2.lua`), with its event.
   * Returns the status before: null when there is none, an end status when nothing changed.
   */
  async cancel(id: string, by: string, events: ChangeEvents = NO_EVENTS): Promise<FlowStatus | null> {
    return withEvents(this.eventJournal, this.k(id, 'events'), events, async (ev) =>
      (await this.scripts.cancelInstance(this.keys.cancelInstance(id), by, new Date().toISOString(), ev.length / 2, ...ev)) as FlowStatus | null);
  }

  /**
   * A finishing run's end (`scripts/finishInstance-7.lua`): journals `entries`, records `fields`
   * (with status) unless a cancel stands, keeps the state for `retentionMs`; the lock is left to
   * expire (see `beginRun`).
   * Returns the status before it.
   */
  async finish(id: string, fields: Partial<InstanceMeta>, entries: JournalEntry[], retentionMs: number, events: ChangeEvents = NO_EVENTS): Promise<FlowStatus | null> {
    const meta = encodeFields({ ...fields, updatedAt: new Date().toISOString() });
    return withEvents(this.eventJournal, this.k(id, 'events'), events, async (ev) => {
      corkForTurn(this.redis);
      return (await this.scripts.finishInstance(this.keys.finishInstance(id), retentionMs, meta.length / 2, ev.length / 2, ...meta, ...encodeSteps(entries), ...ev)) as FlowStatus | null;
    });
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
   * of a short flow, and a stale index entry is only skipped by `list`.
   */
  async pruneIndexes(flow: string, ms: number): Promise<void> {
    const now = Date.now();
    if (now - (this.lastPrune.get(flow) ?? 0) < 60_000) return;
    this.lastPrune.set(flow, now);
    await this.pruneIndex(flow, now - ms);
  }

  /** Drops index entries created before `cutoff`: the flow's, and the all-flows index of instances stored before it went. */
  private async pruneIndex(flow: string, cutoff: number): Promise<void> {
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
    // Index entries older than the retention point at nothing any more.
    await this.pruneIndex(flow, Date.now() - ms);
  }

  /**
   * Undoes `expire` (a failed instance being retried lives on), and drops the lock its last run
   * left to expire, so the retry runs now, not when that lock times out.
   */
  async persist(id: string): Promise<void> {
    const p = this.redis.multi();
    for (const part of STATE_PARTS) p.persist(this.k(id, part));
    p.del(this.k(id, 'lock'));
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
   * point at nothing any more and are dropped from a tag index on the way. All flows: the same
   * range of each flow's index (and of the all-flows index instances stored before it went are
   * still in), merged.
   */
  async range(q: { flow?: string; tag?: { name: string; value: string }; from?: number; to?: number; offset?: number; limit: number; keepFrom?: number }): Promise<{ flow: string; id: string }[]> {
    if (!q.tag && !q.flow) return this.rangeAll(q.to ?? '+inf', q.from ?? '-inf', q.offset ?? 0, q.limit);
    const key = q.tag ? this.keys.tag(q.tag.name, q.tag.value) : this.keys.index(q.flow);
    if (q.tag && q.keepFrom !== undefined) await this.redis.zremrangebyscore(key, '-inf', q.keepFrom);
    const ids = await this.redis.zrevrangebyscore(key, q.to ?? '+inf', q.from ?? '-inf', 'LIMIT', q.offset ?? 0, q.limit);
    const rows = ids.map((v) => (!q.tag && q.flow ? { flow: q.flow, id: v } : { flow: v.slice(0, v.indexOf('/')), id: v.slice(v.indexOf('/') + 1) }));
    return q.tag && q.flow ? rows.filter((r) => r.flow === q.flow) : rows;
  }

  /** Every flow's instances created in [from, to], newest first: the flows' indexes merged. */
  private async rangeAll(to: number | string, from: number | string, offset: number, limit: number): Promise<{ flow: string; id: string }[]> {
    const rows = new Map<string, { flow: string; id: string; score: number }>();
    const add = (f: string, id: string, score: number) => {
      const key = `${f}/${id}`;
      if (!rows.has(key)) rows.set(key, { flow: f, id, score });
    };
    const names = await this.redis.smembers(this.keys.names());
    const want = offset + limit;
    const read = (key: string) => this.redis.zrevrangebyscore(key, to, from, 'WITHSCORES', 'LIMIT', 0, want);
    const [legacy, ...lists] = await Promise.all([read(this.keys.index()), ...names.map((f) => read(this.keys.index(f)))]);
    names.forEach((f, i) => {
      const l = lists[i]!;
      for (let j = 0; j + 1 < l.length; j += 2) add(f, l[j]!, Number(l[j + 1]));
    });
    for (let j = 0; j + 1 < legacy!.length; j += 2) {
      const v = legacy![j]!;
      add(v.slice(0, v.indexOf('/')), v.slice(v.indexOf('/') + 1), Number(legacy![j + 1]));
    }
    return [...rows.values()].sort((a, b) => b.score - a.score).slice(offset, want).map(({ flow: f, id }) => ({ flow: f, id }));
  }

  /** Newest first (all flows: their indexes merged, see `range`). */
  async list(flow: string | undefined, limit: number): Promise<{ flow: string; id: string }[]> {
    if (flow) return (await this.redis.zrevrange(this.keys.index(flow), 0, limit - 1)).map((id) => ({ flow, id }));
    return this.rangeAll('+inf', '-inf', 0, limit);
  }
}
