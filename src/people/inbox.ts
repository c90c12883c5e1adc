import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Directory } from '../auth/directory.ts';
import type { Permissions } from '../auth/permissions.ts';
import { Conflict, NotFound, PermissionDenied, ValidationError } from '../core/errors.ts';
import { principalId, type Message, type Principal } from '../core/message.ts';
import type { EventJournal } from '../core/lifecycle.ts';
import type { Router } from '../core/router.ts';
import type { Approval, Decision, HistoryEntry, Task, TaskIntake } from '../core/task.ts';
import { storedTraceContext } from '../tracing/trace-context.ts';
import type { TraceSpan } from '../tracing/tracing.ts';
import { DecisionDelivery } from './decision-delivery.ts';
import { FollowUps } from './follow-ups.ts';
import { Notices } from './notices.ts';
import { MessageIntake } from './task-intake.ts';
import { TaskEvents, taskLifecycleEvents, type TaskEvent } from './task-events.ts';
import { TaskStore, type Outcome } from './task-store.ts';
import { excludedReason, FourEyesRefused, mayAct, maySee, placeOf, taskAddress, validateFields, type TaskPlace } from './task-rules.ts';

export { validateFields } from './task-rules.ts';

export interface InboxOptions {
  redis: Redis;
  /** Redis key prefix of the gateway. */
  prefix: string;
  /**
   * Hash tags tasks and their follow-up jobs are spread over (redis.shards).
   * @defaultValue 1 (the `{tasks}` and `{people}` layout)
   */
  shards?: number;
  /** Sends notices (to email:) and decisions (to whoever waits). */
  router: Router;
  /** Who may act on or see a task: consume and browse rights on its person:/group: address. */
  permissions: Permissions;
  /** Users and group members, for delegation and notices. */
  directory: Directory;
  /** Where links in e-mails point, e.g. https://switchboard.example.com */
  baseUrl: string;
  /** E-mail notices on new, overdue and escalated tasks (needs the email: endpoint). */
  email: boolean;
  /** Reminder e-mails this long before a task is due, e.g. [3600000] for an hour before. */
  remindersMs: number[];
  /** Told of each decision made here (once, in the process that made it): task-age metrics. */
  onDecided?: (task: Task, decidedAt: string) => void;
  /**
   * Where task changes record their lifecycle events, in the same script as the change.
   * @defaultValue undefined (events off: no extra work)
   */
  events?: EventJournal;
  log: Logger;
}

/**
 * People's side: tasks from `ctx.ask` and plain messages to `person:`/`group:`, who may act on
 * them, claiming and deciding. This is what the doors (web inbox, task API) use; the work is in
 * rooms of its own: task-intake (message → task), task-rules (pure checks), follow-ups (notices,
 * reminders, escalation), notices (e-mail) and decision-delivery (decision → the waiting flow).
 */
export class Inbox implements TaskIntake {
  readonly store: TaskStore;
  readonly events: TaskEvents;
  /** What the `person:`/`group:` transport hands messages to. */
  readonly intake: MessageIntake;
  private readonly followUps: FollowUps;
  private readonly delivery: DecisionDelivery;
  private readonly permissions: Permissions;
  private readonly directory: Directory;
  private readonly onDecided: InboxOptions['onDecided'];

  constructor(o: InboxOptions) {
    this.onDecided = o.onDecided;
    this.store = new TaskStore(o.redis, o.prefix, o.shards ?? 1, o.events);
    this.events = new TaskEvents(o.redis, o.prefix, o.log);
    this.permissions = o.permissions;
    this.directory = o.directory;
    const notices = new Notices({ router: o.router, directory: o.directory, baseUrl: o.baseUrl, enabled: o.email });
    this.followUps = new FollowUps({ redis: o.redis, prefix: o.prefix, store: this.store, events: this.events, notices, remindersMs: o.remindersMs, log: o.log });
    this.intake = new MessageIntake({ store: this.store, events: this.events, followUps: this.followUps });
    this.delivery = new DecisionDelivery({ store: this.store, router: o.router, log: o.log });
  }

  async start(): Promise<void> {
    await this.events.start();
    await this.followUps.start();
    this.delivery.start();
  }

  async stop(): Promise<void> {
    this.delivery.stop();
    await this.followUps.stop();
    await this.events.stop();
  }

  /** Turns a message to person:/group: into a task (once per sender and message id). */
  accept(message: Message): Promise<{ taskId: string; created: boolean }> {
    return this.intake.accept(message);
  }

  /** Why four-eyes keeps this principal from deciding this task, for the task page; undefined if it does not. */
  excludedReason(p: Principal, task: Task): string | undefined {
    if (task.status === 'open' && task.approvals?.some((a) => a.by === principalId(p))) return 'you approved this task already; another approver must';
    return excludedReason(p, task);
  }

  /** May this principal claim and decide this task? */
  mayAct(p: Principal, task: TaskPlace): boolean {
    return mayAct(this.permissions, p, task);
  }

  /** A task the principal may act on or browse; NotFound otherwise (no probing of task ids). */
  async get(p: Principal, id: string): Promise<Task> {
    const task = await this.store.get(id);
    if (!task || !maySee(this.permissions, p, task)) throw new NotFound(`no task '${id}' for you`);
    return publicTask(task);
  }

  /** My open tasks and my groups' open tasks, oldest first. */
  async list(p: Principal): Promise<Task[]> {
    const sources: TaskPlace[] = [{ assignee: p.name }];
    // My directory groups, and groups a rule names for me by name, where I may consume.
    const named = this.permissions.rulesFor(p).filter((r) => r.verbs.includes('consume') && /^group:[^*]+$/.test(r.address)).map((r) => r.address.slice('group:'.length));
    for (const g of new Set([...(p.groups ?? []).filter((x) => !x.includes('=')), ...named])) {
      if (this.permissions.check(p, 'consume', `group:${g}`).allowed) sources.push({ group: g });
    }
    const ids = new Set<string>();
    for (const s of sources) for (const id of await this.store.open(s)) ids.add(id);
    const tasks: Task[] = [];
    for (const id of ids) {
      const t = await this.store.get(id);
      if (t && t.status === 'open' && (!t.claimedBy || t.claimedBy === principalId(p) || t.assignee !== undefined)) tasks.push(publicTask(t));
    }
    return tasks.sort((a, b) => (a.due ?? '9999').localeCompare(b.due ?? '9999') || a.createdAt.localeCompare(b.createdAt));
  }

  /** Marks a task "I am working on this". Four-eyes: an excluded person may not hold it either. */
  async claim(p: Principal, id: string, from?: string): Promise<Task> {
    const task = await this.actionable(p, id);
    refuseExcluded(p, task);
    const claimed: TaskEvent = { type: 'claimed', taskId: id, ...placeOf(task), by: principalId(p) };
    const r = await this.store.claim(id, principalId(p), from, 'claim', () => taskLifecycleEvents(claimed, new Date().toISOString()));
    if (!r.ok) refuse(r, id);
    await this.events.publish(claimed);
    return this.get(p, id);
  }

  /** Gives a claimed task back to its group. */
  async release(p: Principal, id: string, from?: string): Promise<Task> {
    const task = await this.actionable(p, id);
    const r = await this.store.claim(id, principalId(p), from, 'release');
    if (!r.ok) {
      if (r.reason === 'claimed' && r.holder === '') throw new Conflict(`task '${id}' is not claimed by you`);
      refuse(r, id);
    }
    await this.events.publish({ type: 'released', taskId: id, ...placeOf(task), by: principalId(p) });
    return this.get(p, id);
  }

  /** Hands a task to another person, who must be allowed to act on it. */
  async delegate(p: Principal, id: string, to: unknown, from?: string): Promise<Task> {
    const task = await this.actionable(p, id);
    if (typeof to !== 'string' || !to.trim()) throw new ValidationError("'to' must be the user name of the person to delegate to");
    const name = to.trim().replace(/^person:/, '');
    const target = await this.directory.lookup(name);
    if (!target) throw new ValidationError(`there is no user '${name}' in the directory`);
    if (!this.mayAct(target, task)) throw new ValidationError(`${name} may not act on this task (no consume right on ${taskAddress(task)})`);
    const excluded = excludedReason(target, task);
    if (excluded) throw new FourEyesRefused(principalId(target), id, `${name} may not receive this task: ${excluded.replace(/^you /, 'they ')}`);
    const entry: HistoryEntry = { at: new Date().toISOString(), by: principalId(p), action: 'delegated', detail: `to ${name}`, ...(from ? { from } : {}) };
    const delegated: TaskEvent = { type: 'delegated', taskId: id, assignee: name, previous: placeOf(task), by: principalId(p) };
    const r = await this.store.reassign(id, `person:${name}`, entry, principalId(p), () => taskLifecycleEvents(delegated, entry.at));
    if (!r.ok) refuse(r, id);
    await this.events.publish(delegated);
    await this.followUps.afterDelegation(id, name, entry.at);
    // The delegate may see it now; the delegator may no longer, which is fine: they answered with 200.
    return this.store.get(id).then((t) => publicTask(t!));
  }

  /**
   * Records a decision (claiming an unclaimed group task in the same atomic step), then sends it
   * to whoever waits; if that fails now, the sweeper sends it again. `request`: the span of the
   * HTTP request deciding; it is linked to the task's trace and the decision's span to it.
   */
  async decide(p: Principal, id: string, input: { action?: unknown; fields?: unknown; comment?: unknown }, from?: string, request?: TraceSpan): Promise<Task> {
    const task = await this.store.get(id);
    if (!task || !maySee(this.permissions, p, task)) throw new NotFound(`no task '${id}' for you`);
    request?.addLink(storedTraceContext(task));
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', taskAddress(task));
    refuseExcluded(p, task);
    if (typeof input.action !== 'string' || !task.actions.includes(input.action)) throw new ValidationError(`'action' must be one of ${task.actions.join(', ')}`);
    if (input.comment !== undefined && (typeof input.comment !== 'string' || input.comment.length > 10_000)) throw new ValidationError("'comment' must be text of at most 10000 characters");
    let decision: Decision = { action: input.action, fields: validateFields(task.fields, input.fields), ...(input.comment ? { comment: input.comment as string } : {}), by: principalId(p), at: new Date().toISOString() };
    const needed = task.controls?.approvals ?? 1;
    if (needed > 1) {
      // Four-eyes with N approvers: the first action approves, any other ends the ask at once.
      const approval: Approval = { by: decision.by, action: decision.action, ...(decision.comment ? { comment: decision.comment } : {}), at: decision.at };
      let earlier = task.approvals ?? [];
      if (decision.action === task.actions[0]) {
        const a = await this.store.approve(id, approval, needed, from);
        if (!a.ok) {
          if (a.reason === 'approved_already') throw new FourEyesRefused(decision.by, id, 'you approved this task already; another approver must');
          refuse(a, id);
        }
        if ('count' in a) {
          await this.events.publish({ type: 'approved', taskId: id, ...placeOf(task), by: decision.by });
          return this.get(p, id);
        }
        earlier = a.final;
      }
      decision = { ...decision, approvals: [...earlier, approval] };
    }
    const decided: TaskEvent = { type: 'decided', taskId: id, ...placeOf(task), by: decision.by, action: decision.action };
    const r = await this.store.decide(task, decision, from, () => taskLifecycleEvents(decided, decision.at));
    if (!r.ok) refuse(r, id);
    this.onDecided?.(task, decision.at);
    await this.events.publish(decided);
    await this.delivery.deliver(id, request?.context).catch((err) => this.delivery.failed(id, err));
    return this.get(p, id);
  }

  /** Sends every decision not yet delivered (the sweeper does this every 10 s). */
  sweep(): Promise<void> {
    return this.delivery.sweep();
  }

  /** A task the principal may see and act on: NotFound if they may not see it, 403 if only see. */
  private async actionable(p: Principal, id: string): Promise<Task> {
    const task = await this.get(p, id);
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', taskAddress(task));
    return task;
  }
}

/** Four-eyes: refuses a person the task's controls exclude, saying why. */
function refuseExcluded(p: Principal, task: Task): void {
  const reason = excludedReason(p, task);
  if (reason) throw new FourEyesRefused(principalId(p), task.id, reason);
}

/** Maps a refused store outcome to the error a person sees (404, or 409 naming the holder). */
function refuse(outcome: Exclude<Outcome, { ok: true }>, id: string): never {
  if (outcome.reason === 'missing') throw new NotFound(`no task '${id}'`);
  if (outcome.reason === 'decided') throw new Conflict(`task '${id}' has already been decided by ${outcome.holder}`);
  throw new Conflict(`task '${id}' is already taken by ${outcome.holder}`);
}

/** A task without its routing (replyTo, correlationId, messageId): those are the gateway's business. */
function publicTask(t: Task & { replyTo?: string; correlationId?: string; messageId?: string; traceparent?: string; tracestate?: string }): Task {
  const { replyTo: _r, correlationId: _c, messageId: _m, traceparent: _p, tracestate: _s, ...rest } = t;
  return rest;
}
