import type { Logger } from 'pino';
import type { Permissions } from '../../auth/permissions.ts';
import { Conflict, NotFound, PermissionDenied, ValidationError } from '../../core/errors.ts';
import { principalId, type Message, type Principal } from '../../core/message.ts';
import type { Router } from '../../core/router.ts';
import type { Decision, FieldKind, TaskSpec } from '../../flows/define.ts';
import { TaskStore, type Task } from './task-store.ts';

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
export class Inbox {
  readonly store: TaskStore;
  private sweeper?: NodeJS.Timeout;

  constructor(redis: import('ioredis').Redis, prefix: string, private readonly router: Router, private readonly permissions: Permissions, private readonly log: Logger) {
    this.store = new TaskStore(redis, prefix);
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
        ...(spec.due ? { due: spec.due } : {}),
        ...(spec.escalateTo ? { escalateTo: spec.escalateTo } : {}),
      };
    } else {
      task = {
        ...base, kind: 'message', title: message.subject ?? `Message from ${principalId(message.sender)}`, actions: ['acknowledge'], fields: {},
        data: body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : { message: body },
      };
    }
    return this.store.create(task, { messageId: message.id, ...(message.replyTo ? { replyTo: message.replyTo } : {}), ...(message.correlationId ? { correlationId: message.correlationId } : {}) });
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
    return this.get(p, id);
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

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
  }
}

function publicTask(t: Task & { replyTo?: string; correlationId?: string; messageId?: string }): Task {
  const { replyTo: _r, correlationId: _c, messageId: _m, ...rest } = t;
  return rest;
}
