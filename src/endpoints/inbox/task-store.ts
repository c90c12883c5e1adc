import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Decision, FieldKind } from '../../flows/define.ts';

export interface HistoryEntry {
  at: string;
  by: string;
  action: 'created' | 'claimed' | 'released' | 'delegated' | 'decided' | 'escalated';
  detail?: string;
  from?: string;
}

/** A task as the API shows it (DESIGN §6). */
export interface Task {
  id: string;
  kind: 'task' | 'message';
  title: string;
  description?: string;
  data: Record<string, unknown>;
  actions: string[];
  fields: Record<string, FieldKind>;
  assignee?: string;
  group?: string;
  claimedBy?: string;
  due?: string;
  escalateTo?: string;
  status: 'open' | 'decided';
  decision?: Decision;
  createdAt: string;
  sender: string;
  history: HistoryEntry[];
}

/** Stored but not shown: where the decision goes. */
interface Routing {
  replyTo?: string;
  correlationId?: string;
  messageId: string;
}

const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'open', 'updatedAt', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1`;

// Decides once: of two people deciding at the same moment exactly one wins; the other learns who.
const DECIDE = `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
if claimed and claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
redis.call('HSET', KEYS[1], 'status', 'decided', 'decidedBy', ARGV[1], 'claimedBy', ARGV[1], 'decision', ARGV[2], 'updatedAt', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[5])
return {'ok', ARGV[1]}`;

const CLAIM = `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
if claimed and claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
if claimed ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'claimedBy', ARGV[1], 'updatedAt', ARGV[3])
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
return {'ok', ARGV[1]}`;

export type Outcome = { ok: true } | { ok: false; reason: 'missing' | 'decided' | 'claimed'; holder: string };

/**
 * Tasks of people and groups in Redis. All task keys share the `{tasks}` hash tag so the
 * scripts that decide and claim atomically touch one Redis Cluster slot.
 */
export class TaskStore {
  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  private key(id: string, part = ''): string {
    return `${this.prefix}:{tasks}:task:${id}${part}`;
  }

  private index(task: { assignee?: string; group?: string }): string {
    return task.assignee !== undefined ? `${this.prefix}:{tasks}:open:person:${task.assignee}` : `${this.prefix}:{tasks}:open:group:${task.group}`;
  }

  private get unnotifiedKey(): string {
    return `${this.prefix}:{tasks}:unnotified`;
  }

  static idFor(messageId: string): string {
    return createHash('sha256').update(messageId).digest('base64url').slice(0, 22);
  }

  /** Creates the task once per message id; false when it existed. */
  async create(task: Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>, routing: Routing): Promise<boolean> {
    const spec = JSON.stringify({ ...task, ...routing });
    const created: HistoryEntry = { at: task.createdAt, by: task.sender, action: 'created', detail: task.assignee ? `for ${task.assignee}` : `for group ${task.group}` };
    return (await this.redis.eval(CREATE, 3, this.key(task.id), this.key(task.id, ':history'), this.index(task), spec, task.createdAt, JSON.stringify(created), Date.parse(task.createdAt), task.id)) === 1;
  }

  async get(id: string): Promise<(Task & Routing) | null> {
    const [h, history] = await Promise.all([this.redis.hgetall(this.key(id)), this.redis.lrange(this.key(id, ':history'), 0, -1)]);
    if (!h.spec) return null;
    const spec = JSON.parse(h.spec) as Task & Routing;
    return {
      ...spec,
      status: h.status as Task['status'],
      ...(h.claimedBy ? { claimedBy: h.claimedBy } : {}),
      ...(h.decision ? { decision: JSON.parse(h.decision) as Decision } : {}),
      history: history.map((e) => JSON.parse(e) as HistoryEntry),
    };
  }

  /** Open tasks of a person or a group, oldest first. */
  async open(of: { assignee?: string; group?: string }, limit = 500): Promise<string[]> {
    return this.redis.zrange(this.index(of), 0, limit - 1);
  }

  private static outcome([result, holder]: [string, string]): Outcome {
    return result === 'ok' ? { ok: true } : { ok: false, reason: result as 'missing' | 'decided' | 'claimed', holder };
  }

  async claim(id: string, by: string, from?: string): Promise<Outcome> {
    const at = new Date().toISOString();
    const entry: HistoryEntry = { at, by, action: 'claimed', ...(from ? { from } : {}) };
    return TaskStore.outcome((await this.redis.eval(CLAIM, 2, this.key(id), this.key(id, ':history'), by, JSON.stringify(entry), at)) as [string, string]);
  }

  async decide(task: Task, decision: Decision, from?: string): Promise<Outcome> {
    const entry: HistoryEntry = { at: decision.at, by: decision.by, action: 'decided', detail: decision.comment ? `${decision.action}: ${decision.comment}` : decision.action, ...(from ? { from } : {}) };
    const r = (await this.redis.eval(DECIDE, 4, this.key(task.id), this.key(task.id, ':history'), this.unnotifiedKey, this.index(task), decision.by, JSON.stringify(decision), JSON.stringify(entry), decision.at, task.id)) as [string, string];
    return TaskStore.outcome(r);
  }

  /** Decided tasks whose decision message has not been accepted by its destination yet. */
  async unnotified(): Promise<string[]> {
    return this.redis.smembers(this.unnotifiedKey);
  }

  async notified(id: string): Promise<void> {
    await this.redis.srem(this.unnotifiedKey, id);
  }
}
