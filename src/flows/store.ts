import type { Redis } from 'ioredis';
import type { StoredMessage } from '../core/message.ts';

export type FlowStatus = 'running' | 'waiting' | 'completed' | 'failed' | 'cancelled';

/** One journaled ctx call. `done: false` marks a wait that has begun (its deadline is fixed). */
export interface JournalEntry {
  n: number;
  kind: 'send' | 'request' | 'receive' | 'ask' | 'sleep' | 'step' | 'now' | 'uuid';
  target?: string;
  at: string;
  done: boolean;
  result?: unknown;
  error?: { name: string; code?: string; message: string };
  /** Epoch ms when a wait times out (request, receive, ask, sleep). */
  deadline?: number;
  /** Message consumed by a receive/request/ask (never consumed twice). */
  consumed?: string;
  /** The correlation id a request or ask waits for. */
  correlation?: string;
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
}

const JSON_FIELDS = new Set(['input', 'result', 'error', 'waitingOn']);

// Creates the instance only if its id is new: starting twice with the same message id is one instance.
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`;

// Delivers a message into an instance's inbox once per message id (idempotent receiver).
// A repeat of a message already taken is a duplicate even after the instance finished (a route
// redelivering after a crash must hear "duplicate", not "conflict").
const DELIVER = `
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'completed' or status == 'cancelled' then return -2 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1`;

const REFRESH = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

/** Redis state of flow instances; every key of one instance shares a hash tag. */
export class InstanceStore {
  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  private k(id: string, part: string): string {
    return `${this.prefix}:flow:{${id}}:${part}`;
  }

  private index(flow?: string): string {
    return flow ? `${this.prefix}:flows:${flow}` : `${this.prefix}:flows`;
  }

  async create(meta: InstanceMeta): Promise<boolean> {
    const args = Object.entries(meta).flatMap(([k, v]) => (v === undefined ? [] : [k, JSON_FIELDS.has(k) ? JSON.stringify(v) : String(v)]));
    const created = (await this.redis.eval(CREATE, 1, this.k(meta.id, 'meta'), ...args)) === 1;
    // Indexed on every start, not just the first: a crash between the create and this line is
    // mended by the sender's retry (ZADD of the stored time is idempotent).
    const createdAt = created ? meta.createdAt : ((await this.redis.hget(this.k(meta.id, 'meta'), 'createdAt')) ?? meta.createdAt);
    const score = Date.parse(createdAt);
    await this.redis.pipeline().zadd(this.index(meta.flow), score, meta.id).zadd(this.index(), score, `${meta.flow}/${meta.id}`).exec();
    return created;
  }

  async meta(id: string): Promise<InstanceMeta | null> {
    const h = await this.redis.hgetall(this.k(id, 'meta'));
    if (!h.id) return null;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(h)) out[k] = JSON_FIELDS.has(k) ? JSON.parse(v) : v;
    return out as unknown as InstanceMeta;
  }

  async update(id: string, fields: Partial<InstanceMeta>, remove: (keyof InstanceMeta)[] = []): Promise<void> {
    const args = Object.entries({ ...fields, updatedAt: new Date().toISOString() }).flatMap(([k, v]) => (v === undefined ? [] : [k, JSON_FIELDS.has(k) ? JSON.stringify(v) : String(v)]));
    const p = this.redis.multi().hset(this.k(id, 'meta'), ...args);
    if (remove.length > 0) p.hdel(this.k(id, 'meta'), ...remove);
    await p.exec();
  }

  async journal(id: string): Promise<Map<number, JournalEntry>> {
    const h = await this.redis.hgetall(this.k(id, 'journal'));
    return new Map(Object.entries(h).map(([n, v]) => [Number(n), JSON.parse(v) as JournalEntry]));
  }

  async writeSteps(id: string, entries: JournalEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.redis.hset(this.k(id, 'journal'), ...entries.flatMap((e) => [String(e.n), JSON.stringify(e)]));
  }

  /** Journals a step that took a message from the inbox, in one transaction with taking it. */
  async consume(id: string, entry: JournalEntry, raw: string): Promise<void> {
    await this.redis.multi()
      .hset(this.k(id, 'journal'), String(entry.n), JSON.stringify(entry))
      .sadd(this.k(id, 'consumed'), entry.consumed!)
      .lrem(this.k(id, 'inbox'), 1, raw)
      .exec();
  }

  async deleteStep(id: string, n: number): Promise<void> {
    await this.redis.hdel(this.k(id, 'journal'), String(n));
  }

  /** 1 delivered, 0 duplicate, -1 no such instance, -2 instance finished. */
  async deliver(id: string, message: StoredMessage): Promise<number> {
    return (await this.redis.eval(DELIVER, 3, this.k(id, 'seen'), this.k(id, 'inbox'), this.k(id, 'meta'), message.id, JSON.stringify(message))) as number;
  }

  /** Inbox messages not yet consumed, oldest first, with their stored form (to remove them by). */
  async inbox(id: string): Promise<{ raw: string; message: StoredMessage }[]> {
    const [raws, consumed] = await Promise.all([this.redis.lrange(this.k(id, 'inbox'), 0, -1), this.redis.smembers(this.k(id, 'consumed'))]);
    const done = new Set(consumed);
    return raws.map((raw) => ({ raw, message: JSON.parse(raw) as StoredMessage })).filter((m) => !done.has(m.message.id));
  }

  /** A finished instance is kept for `ms` (status, journal, result), then Redis drops it. */
  async expire(id: string, flow: string, ms: number): Promise<void> {
    const p = this.redis.multi();
    for (const part of ['meta', 'journal', 'inbox', 'seen', 'consumed']) p.pexpire(this.k(id, part), ms);
    await p.exec();
    // Index entries older than the retention point at nothing any more.
    const cutoff = Date.now() - ms;
    await this.redis.pipeline().zremrangebyscore(this.index(flow), '-inf', cutoff).zremrangebyscore(this.index(), '-inf', cutoff).exec();
  }

  /** Undoes `expire` (a failed instance being retried lives on). */
  async persist(id: string): Promise<void> {
    const p = this.redis.multi();
    for (const part of ['meta', 'journal', 'inbox', 'seen', 'consumed']) p.persist(this.k(id, part));
    await p.exec();
  }

  async lock(id: string, token: string, ms: number): Promise<boolean> {
    return (await this.redis.set(this.k(id, 'lock'), token, 'PX', ms, 'NX')) === 'OK';
  }

  async refreshLock(id: string, token: string, ms: number): Promise<boolean> {
    return (await this.redis.eval(REFRESH, 1, this.k(id, 'lock'), token, ms)) === 1;
  }

  async unlock(id: string, token: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.k(id, 'lock'), token);
  }

  /** Newest first. */
  async list(flow: string | undefined, limit: number): Promise<{ flow: string; id: string }[]> {
    const ids = await this.redis.zrevrange(this.index(flow), 0, limit - 1);
    return ids.map((v) => (flow ? { flow, id: v } : { flow: v.slice(0, v.indexOf('/')), id: v.slice(v.indexOf('/') + 1) }));
  }
}
