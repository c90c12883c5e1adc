import { createHash } from 'node:crypto';
import { ATTACHMENTS_HEADER, parseAttachmentRefs } from '../attachments/reference.ts';
import { ValidationError } from '../core/errors.ts';
import { principalId, type Message } from '../core/message.ts';
import type { Task, TaskControls, TaskIntake, TaskSpec } from '../core/task.ts';
import { readTraceContext } from '../tracing/trace-context.ts';
import type { FollowUps } from './follow-ups.ts';
import { taskLifecycleEvents, type TaskEvent, type TaskEvents } from './task-events.ts';
import type { TaskStore } from './task-store.ts';
import { dueDate, escalationTarget, placeOf, validateFieldSpec } from './task-rules.ts';

/** A task as the intake makes it, before the store adds status and history. */
export type NewTask = Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>;

/**
 * Task ids are the inbox's own: a digest of the address, the sender and the sender's message id.
 * The same message sent again is the same task, but nobody can pick an id that pre-empts or
 * stands in for another sender's task (a flow's ask above all).
 */
export function taskIdFor(message: Pick<Message, 'to' | 'id' | 'sender'>): string {
  return createHash('sha256').update(`${message.to}\0${principalId(message.sender)}\0${message.id}`).digest('base64url').slice(0, 22);
}

/**
 * What a message to `person:<user>` or `group:<group>` becomes. A task spec (from `ctx.ask`, or a
 * body with a title and actions) is checked and becomes a task with its buttons and form; any
 * other message becomes an item to acknowledge, its body shown as data. The task id comes from
 * the message id, so a repeat of the message is the same task.
 */
export function taskFromMessage(message: Message): NewTask {
  const colon = message.to.indexOf(':');
  const scheme = message.to.slice(0, colon);
  const who = message.to.slice(colon + 1);
  const body = message.body as Partial<TaskSpec> | null;
  const isTask = message.headers['switchboard-task'] === 'ask' || (body !== null && typeof body === 'object' && typeof body.title === 'string' && Array.isArray(body.actions));
  // The router's claim check has verified the references; the task keeps them for its page.
  const attachments = parseAttachmentRefs(message.headers[ATTACHMENTS_HEADER]);
  const base = { id: taskIdFor(message), createdAt: message.createdAt, sender: principalId(message.sender), ...(scheme === 'person' ? { assignee: who } : { group: who }), ...(attachments.length > 0 ? { attachments } : {}) };
  if (!isTask) {
    return {
      ...base, kind: 'message', title: message.subject ?? `Message from ${principalId(message.sender)}`, actions: ['acknowledge'], fields: {},
      data: body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : { message: body },
    };
  }
  const spec = (body ?? {}) as TaskSpec;
  if (!Array.isArray(spec.actions) || spec.actions.length === 0 || !spec.actions.every((a) => typeof a === 'string' && a.length > 0)) throw new ValidationError("a task needs 'actions': a non-empty list of action names");
  const fields = validateFieldSpec(spec.fields);
  return {
    ...base, kind: 'task', title: String(spec.title).slice(0, 500), actions: spec.actions, fields,
    data: spec.data && typeof spec.data === 'object' ? spec.data : {},
    ...(spec.description ? { description: String(spec.description) } : {}),
    ...(spec.due ? { due: dueDate(spec.due, message.createdAt) } : {}),
    ...(spec.escalateTo ? { escalateTo: escalationTarget(spec.escalateTo) } : {}),
    ...(spec.controls !== undefined ? { controls: taskControls(spec.controls) } : {}),
  };
}

/** Four-eyes controls as the inbox will enforce them; anything malformed is refused, not ignored. */
function taskControls(c: unknown): TaskControls {
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new ValidationError("task 'controls' must be an object {excluded?, excludedReason?, approvals?}");
  const { excluded, excludedReason, approvals, ...unknown } = c as TaskControls;
  if (Object.keys(unknown).length > 0) throw new ValidationError(`task 'controls' has unknown keys: ${Object.keys(unknown).join(', ')}`);
  if (excluded !== undefined && (!Array.isArray(excluded) || excluded.length > 100 || !excluded.every((e) => typeof e === 'string' && /^[a-z]+:.{1,256}$/.test(e)))) {
    throw new ValidationError("task 'controls.excluded' must be a list of principals like 'user:carol'");
  }
  if (excludedReason !== undefined && (excludedReason === null || typeof excludedReason !== 'object' || !Object.values(excludedReason).every((r) => typeof r === 'string' && r.length <= 200))) {
    throw new ValidationError("task 'controls.excludedReason' must map principals to short texts");
  }
  if (approvals !== undefined && (!Number.isInteger(approvals) || approvals < 1 || approvals > 20)) throw new ValidationError("task 'controls.approvals' must be a whole number from 1 to 20");
  return { ...(excluded ? { excluded } : {}), ...(excludedReason ? { excludedReason: Object.fromEntries(Object.entries(excludedReason)) } : {}), ...(approvals !== undefined ? { approvals } : {}) };
}

export interface MessageIntakeOptions {
  store: TaskStore;
  events: TaskEvents;
  followUps: FollowUps;
}

/** The people application's side of the `person:`/`group:` transport: stores the task, plans its follow-ups, tells open inboxes. */
export class MessageIntake implements TaskIntake {
  constructor(private readonly o: MessageIntakeOptions) {}

  /** Turns a message into a task, once per sender and message id. */
  async accept(message: Message): Promise<{ taskId: string; created: boolean }> {
    const task = taskFromMessage(message);
    const trace = readTraceContext(message.headers);
    const news: TaskEvent = { type: 'created', taskId: task.id, ...placeOf(task) };
    const created = await this.o.store.create(task, {
      messageId: message.id, ...(message.replyTo ? { replyTo: message.replyTo } : {}), ...(message.correlationId ? { correlationId: message.correlationId } : {}),
      ...(trace ? { traceparent: trace.traceparent, ...(trace.tracestate !== undefined ? { tracestate: trace.tracestate } : {}) } : {}),
    }, () => taskLifecycleEvents(news, task.createdAt));
    // Planned even for a repeat of the same message: a crash right after the create is mended
    // by the sender's retry, and the jobs' dedup ids keep them to one each.
    await this.o.followUps.afterCreate(task);
    if (created) await this.o.events.publish(news);
    return { taskId: task.id, created };
  }
}
