import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Directory } from '../auth/directory.ts';
import type { Permissions } from '../auth/permissions.ts';
import { parseDuration } from '../core/duration.ts';
import { parseAddress } from '../core/address.ts';
import { Conflict, NotFound, PermissionDenied, ValidationError } from '../core/errors.ts';
import { principalId, type Message, type Principal } from '../core/message.ts';
import type { Router } from '../core/router.ts';
import type { Decision, FieldKind, TaskSpec } from '../core/task.ts';
import { TaskEvents } from './task-events.ts';
import { TaskStore, type HistoryEntry, type Task } from './task-store.ts';

const FIELD_KINDS = new Set(['text', 'number', 'date']);

function validFieldKind(k: unknown): k is FieldKind {
  return (typeof k === 'string' && FIELD_KINDS.has(k)) || (typeof k === 'object' && k !== null && Array.isArray((k as { choice?: unknown }).choice) && (k as { choice: unknown[] }).choice.every((c) => typeof c === 'string'));
}

/** Checks submitted form values against the task's field kinds; returns them typed. */
export function validateFields(spec: Record<string, FieldKind>, given: unknown): Record<string, unknown> {
  if (given === undefined || given === null) return {};
  if (typeof given !== 'object' || Array.isArray(given)) throw new ValidationError("'fields' must be an object of field values");
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(given as Record<string, unknown>)) {
    const kind = spec[name];
    if (kind === undefined) throw new ValidationError(`unknown field '${name}' (this task has: ${Object.keys(spec).join(', ') || 'no fields'})`);
    if (value === '' || value === null || value === undefined) continue;
    if (kind === 'text') {
      if (typeof value !== 'string' || value.length > 10_000) throw new ValidationError(`field '${name}' must be text of at most 10000 characters`);
      out[name] = value;
    } else if (kind === 'number') {
      const n = typeof value === 'string' ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isFinite(n)) throw new ValidationError(`field '${name}' must be a number, got ${JSON.stringify(value)}`);
      out[name] = n;
    } else if (kind === 'date') {
      if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(Date.parse(value))) throw new ValidationError(`field '${name}' must be a date like 2026-12-31, got ${JSON.stringify(value)}`);
      out[name] = value;
    } else {
      if (typeof value !== 'string' || !kind.choice.includes(value)) throw new ValidationError(`field '${name}' must be one of ${kind.choice.join(', ')}, got ${JSON.stringify(value)}`);
      out[name] = value;
    }
  }
  return out;
}

/**
 * People's side: tasks from `ctx.ask` and plain messages to `person:`/`group:`, who may act on
 * them, claiming and deciding. A decision is recorded atomically first and then sent to whoever
 * waits (the flow); a decision not yet accepted by its destination is sent again by a sweep, and
 * its fixed message id makes the repeat harmless.
 */
export interface InboxOptions {
  redis: Redis;
  prefix: string;
  router: Router;
  permissions: Permissions;
  directory: Directory;
  /** Where links in e-mails point, e.g. https://switchboard.example.com */
  baseUrl: string;
  /** E-mail notices on new, overdue and escalated tasks (needs the email: endpoint). */
  email: boolean;
  /** Reminder e-mails this long before a task is due, e.g. [3600000] for an hour before. */
  remindersMs: number[];
  log: Logger;
}

interface PeopleJob {
  kind: 'notify-new' | 'due' | 'remind';
  taskId: string;
  /** Distinguishes notices of one kind (a delegation is a new notice even for someone told before). */
  tag?: string;
}

export class Inbox {
  readonly store: TaskStore;
  readonly events: TaskEvents;
  private sweeper?: NodeJS.Timeout;
  private readonly router: Router;
  private readonly permissions: Permissions;
  private readonly log: Logger;
  private readonly jobs: Queue<PeopleJob>;
  private worker?: Worker<PeopleJob>;

  constructor(private readonly o: InboxOptions) {
    this.store = new TaskStore(o.redis, o.prefix);
    this.events = new TaskEvents(o.redis, o.prefix, o.log);
    this.router = o.router;
    this.permissions = o.permissions;
    this.log = o.log;
    this.jobs = new Queue<PeopleJob>('{people}', { connection: o.redis, prefix: o.prefix });
    this.jobs.on('error', (err) => o.log.error({ err: err.message }, 'people jobs queue error'));
  }

  /** Durable follow-ups of a task (notices, due date): each runs once per task, retried if it fails. */
  private async schedule(kind: PeopleJob['kind'], taskId: string, at = Date.now(), suffix = ''): Promise<void> {
    await this.jobs.add(kind, { kind, taskId, ...(suffix ? { tag: suffix.replace(/^:/, '') } : {}) }, {
      delay: Math.max(0, at - Date.now()),
      attempts: 10,
      backoff: { type: 'exponential', delay: 2000 },
      removeOnComplete: true,
      removeOnFail: 1000,
      deduplication: { id: `${kind}:${taskId}${suffix}`, ttl: 7 * 86_400_000 },
    });
  }

  async start(): Promise<void> {
    await this.events.start();
    this.worker = new Worker<PeopleJob>('{people}', async (job) => this.runJob(job.data), { connection: this.o.redis, prefix: this.o.prefix, concurrency: 5 });
    this.worker.on('error', (err) => this.log.error({ err: err.message }, 'people jobs worker error'));
    this.startSweeper();
  }

  /** Turns a message to person:/group: into a task (once per message id). */
  async accept(message: Message): Promise<boolean> {
    const colon = message.to.indexOf(':');
    const scheme = message.to.slice(0, colon);
    const who = message.to.slice(colon + 1);
    const body = message.body as Partial<TaskSpec> | null;
    const isTask = message.headers['switchboard-task'] === 'ask' || (body !== null && typeof body === 'object' && typeof body.title === 'string' && Array.isArray(body.actions));
    let task: Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>;
    const base = { id: TaskStore.idFor(message.id), createdAt: message.createdAt, sender: principalId(message.sender), ...(scheme === 'person' ? { assignee: who } : { group: who }) };
    if (isTask) {
      const spec = body as TaskSpec;
      if (!Array.isArray(spec.actions) || spec.actions.length === 0 || !spec.actions.every((a) => typeof a === 'string' && a.length > 0)) throw new ValidationError("a task needs 'actions': a non-empty list of action names");
      const fields = spec.fields ?? {};
      for (const [k, v] of Object.entries(fields)) if (!validFieldKind(v)) throw new ValidationError(`task field '${k}': expected text, number, date or {choice: [...]}`);
      task = {
        ...base, kind: 'task', title: String(spec.title).slice(0, 500), actions: spec.actions, fields,
        data: spec.data && typeof spec.data === 'object' ? spec.data : {},
        ...(spec.description ? { description: String(spec.description) } : {}),
        ...(spec.due ? { due: dueDate(spec.due, message.createdAt) } : {}),
        ...(spec.escalateTo ? { escalateTo: escalationTarget(spec.escalateTo) } : {}),
      };
    } else {
      task = {
        ...base, kind: 'message', title: message.subject ?? `Message from ${principalId(message.sender)}`, actions: ['acknowledge'], fields: {},
        data: body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : { message: body },
      };
    }
    const created = await this.store.create(task, { messageId: message.id, ...(message.replyTo ? { replyTo: message.replyTo } : {}), ...(message.correlationId ? { correlationId: message.correlationId } : {}) });
    // Scheduled even for a repeat of the same message: a crash right after the create is mended
    // by the sender's retry, and the jobs' dedup ids keep them to one each.
    await this.schedule('notify-new', task.id);
    if (task.due) {
      await this.schedule('due', task.id, Date.parse(task.due));
      for (const r of this.o.remindersMs) if (Date.parse(task.due) - r > Date.now()) await this.schedule('remind', task.id, Date.parse(task.due) - r, `:${r}`);
    }
    if (created) await this.events.publish({ type: 'created', taskId: task.id, ...where(task) });
    return created;
  }

  private async runJob(job: PeopleJob): Promise<void> {
    const task = await this.store.get(job.taskId);
    if (!task || task.status !== 'open') return;
    if (job.kind === 'notify-new') {
      await this.mail(task, `New task: ${task.title}`, `A new task waits for ${task.assignee ?? `the group ${task.group}`}:\n\n  ${task.title}\n${task.due ? `  due ${task.due}\n` : ''}\nOpen it: ${this.link(task.id)}\n`, job.tag ? `new-${job.tag}` : 'new');
    } else if (job.kind === 'remind') {
      await this.mail(task, `Reminder: ${task.title} is due ${task.due}`, `This task is due ${task.due}:\n\n  ${task.title}\n\nOpen it: ${this.link(task.id)}\n`, `remind-${Date.parse(task.due ?? '0')}`);
    } else if (job.kind === 'due') {
      await this.escalate(task);
    }
  }

  /** Past due: to the escalation target if there is one (both sides told), else a notice. */
  private async escalate(task: Task): Promise<void> {
    if (!task.escalateTo) {
      await this.mail(task, `Overdue: ${task.title}`, `This task was due ${task.due} and is still open:\n\n  ${task.title}\n\nOpen it: ${this.link(task.id)}\n`, 'overdue');
      return;
    }
    const entry: HistoryEntry = { at: new Date().toISOString(), by: 'system:switchboard', action: 'escalated', detail: `overdue since ${task.due}; moved to ${task.escalateTo}` };
    const r = await this.store.reassign(task.id, task.escalateTo, entry);
    if (!r.ok) return;
    const moved = (await this.store.get(task.id))!;
    await this.events.publish({ type: 'escalated', taskId: task.id, ...where(moved), previous: where(task), by: 'system:switchboard' });
    const text = `The task "${task.title}" was due ${task.due} and has been escalated from ${task.assignee ?? `group ${task.group}`} to ${task.escalateTo}.\n\nOpen it: ${this.link(task.id)}\n`;
    await this.mail(task, `Escalated: ${task.title}`, text, 'escalated-from');
    await this.mail(moved, `Escalated to you: ${task.title}`, text, 'escalated-to');
  }

  private link(id: string): string {
    return `${this.o.baseUrl.replace(/\/$/, '')}/tasks/${encodeURIComponent(id)}`;
  }

  /** E-mails the task's person, or every member of its group, through the durable email: outbox. */
  private async mail(task: Task, subject: string, text: string, tag: string): Promise<void> {
    if (!this.o.email) return;
    const people = task.assignee !== undefined ? [await this.o.directory.lookup(task.assignee)] : await this.o.directory.members(task.group!);
    for (const p of people) {
      if (!p?.email) continue;
      await this.router.send({
        id: `task:${task.id}:${tag}:${p.name}`, to: `email:${p.email}`, sender: { kind: 'system', name: 'switchboard' },
        headers: { 'switchboard-task': task.id }, contentType: 'application/json', body: { subject, text }, createdAt: new Date().toISOString(),
      });
    }
  }

  /** May this principal claim and decide this task? */
  mayAct(p: Principal, task: Pick<Task, 'assignee' | 'group'>): boolean {
    if (task.assignee !== undefined) return (p.kind === 'user' && p.name === task.assignee) || this.permissions.check(p, 'consume', `person:${task.assignee}`).allowed;
    return this.permissions.check(p, 'consume', `group:${task.group}`).allowed;
  }

  private address(task: Pick<Task, 'assignee' | 'group'>): string {
    return task.assignee !== undefined ? `person:${task.assignee}` : `group:${task.group}`;
  }

  /** A task the principal may act on or browse; NotFound otherwise (no probing of task ids). */
  async get(p: Principal, id: string): Promise<Task> {
    const task = await this.store.get(id);
    if (!task || !(this.mayAct(p, task) || this.permissions.check(p, 'browse', this.address(task)).allowed)) throw new NotFound(`no task '${id}' for you`);
    return publicTask(task);
  }

  /** My open tasks and my groups' open tasks, oldest first. */
  async list(p: Principal): Promise<Task[]> {
    const sources: { assignee?: string; group?: string }[] = [{ assignee: p.name }];
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

  private refuse(outcome: { reason: string; holder: string }, id: string): never {
    if (outcome.reason === 'missing') throw new NotFound(`no task '${id}'`);
    if (outcome.reason === 'decided') throw new Conflict(`task '${id}' has already been decided by ${outcome.holder}`);
    throw new Conflict(`task '${id}' is already taken by ${outcome.holder}`);
  }

  async claim(p: Principal, id: string, from?: string): Promise<Task> {
    const task = await this.get(p, id);
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', this.address(task));
    const r = await this.store.claim(id, principalId(p), from);
    if (!r.ok) this.refuse(r, id);
    await this.events.publish({ type: 'claimed', taskId: id, ...where(task), by: principalId(p) });
    return this.get(p, id);
  }

  /** Gives a claimed task back to its group. */
  async release(p: Principal, id: string, from?: string): Promise<Task> {
    const task = await this.get(p, id);
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', this.address(task));
    const r = await this.store.claim(id, principalId(p), from, 'release');
    if (!r.ok) {
      if (r.reason === 'claimed' && r.holder === '') throw new Conflict(`task '${id}' is not claimed by you`);
      this.refuse(r, id);
    }
    await this.events.publish({ type: 'released', taskId: id, ...where(task), by: principalId(p) });
    return this.get(p, id);
  }

  /** Hands a task to another person, who must be allowed to act on it. */
  async delegate(p: Principal, id: string, to: unknown, from?: string): Promise<Task> {
    const task = await this.get(p, id);
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', this.address(task));
    if (typeof to !== 'string' || !to.trim()) throw new ValidationError("'to' must be the user name of the person to delegate to");
    const name = to.trim().replace(/^person:/, '');
    const target = await this.o.directory.lookup(name);
    if (!target) throw new ValidationError(`there is no user '${name}' in the directory`);
    if (!this.mayAct(target, task)) throw new ValidationError(`${name} may not act on this task (no consume right on ${this.address(task)})`);
    const entry: HistoryEntry = { at: new Date().toISOString(), by: principalId(p), action: 'delegated', detail: `to ${name}`, ...(from ? { from } : {}) };
    const r = await this.store.reassign(id, `person:${name}`, entry, principalId(p));
    if (!r.ok) this.refuse(r, id);
    await this.events.publish({ type: 'delegated', taskId: id, assignee: name, previous: where(task), by: principalId(p) });
    await this.schedule('notify-new', id, Date.now(), `:delegated:${name}:${entry.at}`);
    // The delegate may see it now; the delegator may no longer, which is fine: they answered with 200.
    return this.store.get(id).then((t) => publicTask(t!));
  }

  async decide(p: Principal, id: string, input: { action?: unknown; fields?: unknown; comment?: unknown }, from?: string): Promise<Task> {
    const task = await this.store.get(id);
    if (!task || !(this.mayAct(p, task) || this.permissions.check(p, 'browse', this.address(task)).allowed)) throw new NotFound(`no task '${id}' for you`);
    if (!this.mayAct(p, task)) throw new PermissionDenied(principalId(p), 'consume', this.address(task));
    if (typeof input.action !== 'string' || !task.actions.includes(input.action)) throw new ValidationError(`'action' must be one of ${task.actions.join(', ')}`);
    if (input.comment !== undefined && (typeof input.comment !== 'string' || input.comment.length > 10_000)) throw new ValidationError("'comment' must be text of at most 10000 characters");
    const decision: Decision = { action: input.action, fields: validateFields(task.fields, input.fields), ...(input.comment ? { comment: input.comment as string } : {}), by: principalId(p), at: new Date().toISOString() };
    const r = await this.store.decide(task, decision, from);
    if (!r.ok) this.refuse(r, id);
    await this.events.publish({ type: 'decided', taskId: id, ...where(task), by: decision.by });
    await this.notify(id).catch((err) => this.log.warn({ task: id, err: (err as Error).message }, 'decision not delivered yet; the sweep will retry'));
    return this.get(p, id);
  }

  /** Sends a decided task's decision to whoever waits for it; idempotent by message id. */
  private async notify(id: string): Promise<void> {
    const task = await this.store.get(id);
    if (!task?.decision) return;
    if (task.replyTo) {
      await this.router.send({
        id: `task:${id}:decision`, to: task.replyTo, from: this.address(task), sender: { kind: 'user', name: task.decision.by.replace(/^user:/, '') },
        headers: { 'switchboard-task': id }, contentType: 'application/json', body: task.decision, createdAt: task.decision.at,
        ...(task.correlationId ? { correlationId: task.correlationId } : {}),
      });
    }
    await this.store.notified(id);
  }

  async sweep(): Promise<void> {
    for (const id of await this.store.unnotified()) {
      await this.notify(id).catch((err) => this.log.warn({ task: id, err: (err as Error).message }, 'decision not delivered yet'));
    }
  }

  startSweeper(everyMs = 10_000): void {
    void this.sweep().catch(() => {});
    this.sweeper = setInterval(() => void this.sweep().catch(() => {}), everyMs);
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await this.worker?.close();
    await this.jobs.close();
    await this.events.stop();
  }
}

function where(t: { assignee?: string; group?: string }): { assignee?: string; group?: string } {
  return t.assignee !== undefined ? { assignee: t.assignee } : { group: t.group! };
}

/** '4h' from creation, or an ISO date-time. */
function dueDate(due: string, createdAt: string): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(due) && !Number.isNaN(Date.parse(due))) return new Date(due).toISOString();
  try {
    return new Date(Date.parse(createdAt) + parseDuration(due)).toISOString();
  } catch {
    throw new ValidationError(`task 'due' must be a duration like 4h or an ISO date-time, got ${JSON.stringify(due)}`);
  }
}

function escalationTarget(to: string): string {
  const a = parseAddress(to);
  if (a.scheme !== 'person' && a.scheme !== 'group') throw new ValidationError(`task 'escalateTo' must be a person: or group: address, got '${to}'`);
  return a.raw;
}

function publicTask(t: Task & { replyTo?: string; correlationId?: string; messageId?: string }): Task {
  const { replyTo: _r, correlationId: _c, messageId: _m, ...rest } = t;
  return rest;
}
