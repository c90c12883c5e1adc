import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Decision, HistoryEntry, Task } from '../core/task.ts';

export type { HistoryEntry, Task } from '../core/task.ts';

/** Stored but not shown: where the decision goes. */
interface Routing {
  replyTo?: string;
  correlationId?: string;
  messageId: string;
}

// Index of open tasks: ZSET per person or group, computed in the scripts from the task's own
// fields (all under the {tasks} hash tag, so one Cluster slot), never from a stale read.
const INDEX = `
local function index(prefix, task)
  local a = redis.call('HGET', task, 'assignee')
  if a and a ~= '' then return prefix .. ':{tasks}:open:person:' .. a end
  return prefix .. ':{tasks}:open:group:' .. (redis.call('HGET', task, 'group') or '')
end
`;

const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'open', 'updatedAt', ARGV[2], ARGV[6], ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 1`;

// Decides once: of two people deciding at the same moment exactly one wins; the other learns who.
const DECIDE = INDEX + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy')
if claimed and claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
redis.call('ZREM', index(ARGV[6], KEYS[1]), ARGV[5])
redis.call('HSET', KEYS[1], 'status', 'decided', 'decidedBy', ARGV[1], 'claimedBy', ARGV[1], 'decision', ARGV[2], 'updatedAt', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
return {'ok', ARGV[1]}`;

// ARGV: by, history entry, now, mode ('claim' | 'release')
const CLAIM = `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy') or ''
if ARGV[4] == 'claim' then
  if claimed ~= '' and claimed ~= ARGV[1] then return {'claimed', claimed} end
  if claimed == ARGV[1] then return {'ok', ARGV[1]} end
  redis.call('HSET', KEYS[1], 'claimedBy', ARGV[1], 'updatedAt', ARGV[3])
else
  if claimed ~= ARGV[1] then return {'claimed', claimed} end
  redis.call('HDEL', KEYS[1], 'claimedBy')
  redis.call('HSET', KEYS[1], 'updatedAt', ARGV[3])
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return {'ok', ARGV[1]}`;

// Moves an open task to another person or group (delegate, escalate). ARGV: field, value,
// history entry, now, id, prefix, by (delegate: only the holder or an unclaimed task; '' for escalation)
const REASSIGN = INDEX + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'open' then return {'decided', redis.call('HGET', KEYS[1], 'decidedBy') or ''} end
local claimed = redis.call('HGET', KEYS[1], 'claimedBy') or ''
if ARGV[7] ~= '' and claimed ~= '' and claimed ~= ARGV[7] then return {'claimed', claimed} end
redis.call('ZREM', index(ARGV[6], KEYS[1]), ARGV[5])
redis.call('HDEL', KEYS[1], 'assignee', 'group', 'claimedBy')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'updatedAt', ARGV[4])
redis.call('ZADD', index(ARGV[6], KEYS[1]), ARGV[8], ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[3])
return {'ok', ''}`;

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
    const { assignee, group, ...rest } = task;
    const spec = JSON.stringify({ ...rest, ...routing });
    const created: HistoryEntry = { at: task.createdAt, by: task.sender, action: 'created', detail: assignee !== undefined ? `for ${assignee}` : `for group ${group}` };
    const [field, value] = assignee !== undefined ? ['assignee', assignee] : ['group', group!];
    return (await this.redis.eval(CREATE, 3, this.key(task.id), this.key(task.id, ':history'), this.index(task), spec, task.createdAt, JSON.stringify(created), Date.parse(task.createdAt), task.id, field, value)) === 1;
  }

  async get(id: string): Promise<(Task & Routing) | null> {
    const [h, history] = await Promise.all([this.redis.hgetall(this.key(id)), this.redis.lrange(this.key(id, ':history'), 0, -1)]);
    if (!h.spec) return null;
    const spec = JSON.parse(h.spec) as Task & Routing;
    return {
      ...spec,
      ...(h.assignee ? { assignee: h.assignee } : {}),
      ...(h.group ? { group: h.group } : {}),
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

  async claim(id: string, by: string, from?: string, mode: 'claim' | 'release' = 'claim'): Promise<Outcome> {
    const at = new Date().toISOString();
    const entry: HistoryEntry = { at, by, action: mode === 'claim' ? 'claimed' : 'released', ...(from ? { from } : {}) };
    return TaskStore.outcome((await this.redis.eval(CLAIM, 2, this.key(id), this.key(id, ':history'), by, JSON.stringify(entry), at, mode)) as [string, string]);
  }

  async decide(task: Task, decision: Decision, from?: string): Promise<Outcome> {
    const entry: HistoryEntry = { at: decision.at, by: decision.by, action: 'decided', detail: decision.comment ? `${decision.action}: ${decision.comment}` : decision.action, ...(from ? { from } : {}) };
    const r = (await this.redis.eval(DECIDE, 3, this.key(task.id), this.key(task.id, ':history'), this.unnotifiedKey, decision.by, JSON.stringify(decision), JSON.stringify(entry), decision.at, task.id, this.prefix)) as [string, string];
    return TaskStore.outcome(r);
  }

  /** Moves an open task to `to` (person:x or group:y). `holder`: only if unclaimed or claimed by them. */
  async reassign(id: string, to: string, entry: HistoryEntry, holder = ''): Promise<Outcome> {
    const [scheme, who] = [to.slice(0, to.indexOf(':')), to.slice(to.indexOf(':') + 1)];
    const field = scheme === 'person' ? 'assignee' : 'group';
    return TaskStore.outcome((await this.redis.eval(REASSIGN, 2, this.key(id), this.key(id, ':history'), field, who, JSON.stringify(entry), entry.at, id, this.prefix, holder, Date.parse(entry.at))) as [string, string]);
  }

  /** Decided tasks whose decision message has not been accepted by its destination yet. */
  async unnotified(): Promise<string[]> {
    return this.redis.smembers(this.unnotifiedKey);
  }

  async notified(id: string): Promise<void> {
    await this.redis.srem(this.unnotifiedKey, id);
  }
}
