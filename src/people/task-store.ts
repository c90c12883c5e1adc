import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { NO_EVENTS, withEvents, type ChangeEvents, type EventJournal } from '../core/lifecycle.ts';
import type { Approval, Decision, HistoryEntry, Task } from '../core/task.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { ownerField, storedOwner, TaskKeys, type TaskOwner } from './keys.ts';
import { ApproveCode, CreateTaskCode, TaskCode } from './scripts/codes.ts';

export type { HistoryEntry, Task } from '../core/task.ts';

/** Stored but not shown: where the decision goes. */
interface Routing {
  replyTo?: string;
  correlationId?: string;
  messageId: string;
  /** The trace context the task was asked in (DESIGN §11): its decision continues that trace. */
  traceparent?: string;
  tracestate?: string;
}

export type Outcome = { ok: true } | { ok: false; reason: 'missing' | 'decided' | 'claimed'; holder: string };

const SCRIPTS = { createTask: 5, decideTask: 6, approveTask: 2, claimTask: 3, releaseTask: 2, reassignTask: 5 } as const;

/**
 * How often a decide or reassign re-reads a task's owner after the task moved under it
 * (`TaskCode.StaleIndex`). Each retry means another reassignment won a race in between, so a
 * handful is already far more than happens.
 */
const STALE_RETRIES = 10;

/**
 * Tasks of people and groups in Redis. Each change is one script in `./scripts/` (named for what
 * it does); a task's keys share its shard's hash tag (see `./keys.ts`) so every script runs in
 * one Redis Cluster slot, and the shards spread tasks over the masters of a cluster.
 */
export class TaskStore {
  private readonly keys: TaskKeys;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;

  /**
   * @param shards hash tags tasks are spread over (redis.shards); 1 keeps the `{tasks}` layout
   * @param journal where a change's lifecycle events are recorded, by its own script (none: events off)
   */
  constructor(readonly redis: Redis, readonly prefix: string, shards = 1, private readonly journal?: EventJournal) {
    this.keys = new TaskKeys(prefix, shards);
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  /** Whom the task is for now, as stored. */
  private async owner(id: string): Promise<TaskOwner> {
    const [assignee, group] = await this.redis.hmget(this.keys.task(id), 'assignee', 'group');
    return storedOwner(assignee, group);
  }

  /**
   * Runs a script that takes the task's open-task index in its KEYS: the caller names the owner
   * it believes in; when the task has moved meanwhile the script writes nothing and answers
   * `StaleIndex`, and this reads the owner again and repeats.
   */
  private async withOwner(id: string, first: TaskOwner, run: (owner: TaskOwner) => Promise<[string, string]>): Promise<Outcome> {
    let owner = first;
    for (let attempt = 0; ; attempt++) {
      const reply = await run(owner);
      if (reply[0] !== TaskCode.StaleIndex) return TaskStore.outcome(reply);
      if (attempt === STALE_RETRIES) throw new Error(`task '${id}' kept moving to another person or group while being changed (${STALE_RETRIES} retries)`);
      owner = await this.owner(id);
    }
  }

  static idFor(messageId: string): string {
    return createHash('sha256').update(messageId).digest('base64url').slice(0, 22);
  }

  /** Creates the task once per message id; false when it existed. */
  async create(task: Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>, routing: Routing, events: ChangeEvents = NO_EVENTS): Promise<boolean> {
    const { assignee, group, ...rest } = task;
    const spec = JSON.stringify({ ...rest, ...routing });
    const created: HistoryEntry = { at: task.createdAt, by: task.sender, action: 'created', detail: assignee !== undefined ? `for ${assignee}` : `for group ${group}` };
    const [field, value] = ownerField({ assignee, group });
    const code = await withEvents(this.journal, this.keys.events(task.id), events, (ev) =>
      this.scripts.createTask(this.keys.createTask(task.id, { assignee, group }), spec, task.createdAt, JSON.stringify(created), Date.parse(task.createdAt), task.id, field, value, task.due !== undefined ? Date.parse(task.due) : '+inf', ...ev));
    return code === CreateTaskCode.Created;
  }

  async get(id: string): Promise<(Task & Routing) | null> {
    const [h, history] = await Promise.all([this.redis.hgetall(this.keys.task(id)), this.redis.lrange(this.keys.history(id), 0, -1)]);
    if (!h.spec) return null;
    const spec = JSON.parse(h.spec) as Task & Routing;
    return {
      ...spec,
      ...(h.assignee ? { assignee: h.assignee } : {}),
      ...(h.group ? { group: h.group } : {}),
      status: h.status as Task['status'],
      ...(h.claimedBy ? { claimedBy: h.claimedBy } : {}),
      ...(h.decision ? { decision: JSON.parse(h.decision) as Decision } : {}),
      ...(h.approvals ? { approvals: JSON.parse(h.approvals) as Approval[] } : {}),
      history: history.map((e) => JSON.parse(e) as HistoryEntry),
    };
  }

  /** Open tasks of a person or a group, oldest first: their index in every shard, merged. */
  async open(of: { assignee?: string; group?: string }, limit = 500): Promise<string[]> {
    if (this.keys.tags.length === 1) return this.redis.zrange(this.keys.openIn(this.keys.tags[0]!, of), 0, limit - 1);
    const perShard = await Promise.all(this.keys.tags.map((tag) => this.redis.zrange(this.keys.openIn(tag, of), 0, limit - 1, 'WITHSCORES')));
    const all: [string, number][] = [];
    for (const flat of perShard) for (let i = 0; i < flat.length; i += 2) all.push([flat[i]!, Number(flat[i + 1])]);
    return all.sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0])).slice(0, limit).map(([id]) => id);
  }

  /**
   * Open tasks counted by due date at `now`: `late` past it, `on_time` before it, `none` without
   * one. Three ZCOUNTs per shard, so a scrape costs the same with a million open tasks.
   */
  async openByDue(now = Date.now()): Promise<{ on_time: number; late: number; none: number }> {
    const counts = await Promise.all(this.keys.tags.map(async (tag) => {
      const key = this.keys.openByDueIn(tag);
      const [late, onTime, none] = await Promise.all([this.redis.zcount(key, '-inf', now), this.redis.zcount(key, `(${now}`, '(+inf'), this.redis.zcount(key, '+inf', '+inf')]);
      return { late, onTime, none };
    }));
    return counts.reduce((a, c) => ({ on_time: a.on_time + c.onTime, late: a.late + c.late, none: a.none + c.none }), { on_time: 0, late: 0, none: 0 });
  }

  private static outcome([code, holder]: [string, string]): Outcome {
    switch (code) {
      case TaskCode.Ok:
        return { ok: true };
      case TaskCode.Missing:
      case TaskCode.Decided:
      case TaskCode.Claimed:
        return { ok: false, reason: code, holder };
      default:
        throw new Error(`a task script answered '${code}', which the task store does not know`);
    }
  }

  /** `events`: of a claim (a release is no lifecycle event). */
  async claim(id: string, by: string, from?: string, mode: 'claim' | 'release' = 'claim', events: ChangeEvents = NO_EVENTS): Promise<Outcome> {
    const at = new Date().toISOString();
    const entry: HistoryEntry = { at, by, action: mode === 'claim' ? 'claimed' : 'released', ...(from ? { from } : {}) };
    const reply = mode === 'claim'
      ? await withEvents(this.journal, this.keys.events(id), events, (ev) => this.scripts.claimTask(this.keys.claimTask(id), by, JSON.stringify(entry), at, ...ev))
      : await this.scripts.releaseTask(this.keys.releaseTask(id), by, JSON.stringify(entry), at);
    return TaskStore.outcome(reply as [string, string]);
  }

  async decide(task: Task, decision: Decision, from?: string, events: ChangeEvents = NO_EVENTS): Promise<Outcome> {
    const entry: HistoryEntry = { at: decision.at, by: decision.by, action: 'decided', detail: decision.comment ? `${decision.action}: ${decision.comment}` : decision.action, ...(from ? { from } : {}) };
    return withEvents(this.journal, this.keys.events(task.id), events, (ev) => this.withOwner(task.id, task, async (owner) => {
      const [field, name] = ownerField(owner);
      return (await this.scripts.decideTask(this.keys.decideTask(task.id, owner), decision.by, JSON.stringify(decision), JSON.stringify(entry), decision.at, task.id, field, name, ...ev)) as [string, string];
    }));
  }

  /**
   * Records one approval of a task that needs `needed` distinct approvers. `final` (with the
   * earlier approvals) when this one completes the count: the caller then decides the task.
   */
  async approve(id: string, approval: Approval, needed: number, from?: string): Promise<{ ok: true; count: number } | { ok: true; final: Approval[] } | Exclude<Outcome, { ok: true }> | { ok: false; reason: 'approved_already'; holder: string }> {
    const entry: HistoryEntry = { at: approval.at, by: approval.by, action: 'approved', detail: approval.comment ? `${approval.action}: ${approval.comment}` : approval.action, ...(from ? { from } : {}) };
    const [code, detail] = (await this.scripts.approveTask(this.keys.approveTask(id), approval.by, JSON.stringify(approval), JSON.stringify(entry), approval.at, needed)) as [string, string];
    if (code === ApproveCode.Recorded) return { ok: true, count: Number(detail) };
    if (code === ApproveCode.Final) return { ok: true, final: JSON.parse(detail) as Approval[] };
    if (code === ApproveCode.ApprovedAlready) return { ok: false, reason: 'approved_already', holder: detail };
    return TaskStore.outcome([code, detail]) as Exclude<Outcome, { ok: true }>;
  }

  /** Moves an open task to `to` (person:x or group:y). `holder`: only if unclaimed or claimed by them. */
  async reassign(id: string, to: string, entry: HistoryEntry, holder = '', events: ChangeEvents = NO_EVENTS): Promise<Outcome> {
    const [scheme, who] = [to.slice(0, to.indexOf(':')), to.slice(to.indexOf(':') + 1)];
    const target: TaskOwner = scheme === 'person' ? { assignee: who } : { group: who };
    const [field, name] = ownerField(target);
    return withEvents(this.journal, this.keys.events(id), events, async (ev) => this.withOwner(id, await this.owner(id), async (from) => {
      const [fromField, fromName] = ownerField(from);
      return (await this.scripts.reassignTask(this.keys.reassignTask(id, from, target), field, name, JSON.stringify(entry), entry.at, id, holder, Date.parse(entry.at), fromField, fromName, ...ev)) as [string, string];
    }));
  }

  /** Decided tasks whose decision message has not been accepted by its destination yet. */
  async unnotified(): Promise<string[]> {
    return (await Promise.all(this.keys.tags.map((tag) => this.redis.smembers(this.keys.unnotifiedIn(tag))))).flat();
  }

  async notified(id: string): Promise<void> {
    await this.redis.srem(this.keys.unnotifiedIn(this.keys.tagOf(id)), id);
  }

  /** The shard of a task (0 … shards-1), which its follow-up jobs use too. */
  shardOf(id: string): number {
    return this.keys.tags.indexOf(this.keys.tagOf(id));
  }

  /** How many shards tasks are spread over. */
  get shards(): number {
    return this.keys.tags.length;
  }
}
