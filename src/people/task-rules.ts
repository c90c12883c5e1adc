import type { Permissions } from '../auth/permissions.ts';
import { parseAddress } from '../core/address.ts';
import { parseDuration } from '../core/duration.ts';
import { SwitchboardError, ValidationError } from '../core/errors.ts';
import type { Principal } from '../core/message.ts';
import type { FieldKind, Task } from '../core/task.ts';

/**
 * The rules of people's tasks, as pure functions: which fields a task may have and what may be
 * typed into them, when a task is due, where it escalates to, and who may act on it. No I/O, so
 * the intake, the follow-ups and the inbox apply the same rules and unit tests prove them.
 */

/** Where a task sits: with one person or with a group. */
export type TaskPlace = Pick<Task, 'assignee' | 'group'>;

const FIELD_KINDS = new Set(['text', 'number', 'date']);

/**
 * Names a field may not have. Field specs and values arrive as JSON objects; these names would
 * reach `Object.prototype` through a lookup or an assignment instead of a field of the task.
 */
const RESERVED_FIELD_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

function refuseReservedName(name: string, what: string): void {
  if (RESERVED_FIELD_NAMES.has(name)) throw new ValidationError(`${what} '${name}' is a reserved name; choose another field name`);
}

function validFieldKind(k: unknown): k is FieldKind {
  if (typeof k === 'string') return FIELD_KINDS.has(k);
  if (typeof k !== 'object' || k === null) return false;
  const choice = (k as { choice?: unknown }).choice;
  return Array.isArray(choice) && choice.every((c) => typeof c === 'string');
}

/** Checks a task's form (from a TaskSpec): field name → text, number, date or {choice: [...]}. */
export function validateFieldSpec(fields: unknown): Record<string, FieldKind> {
  if (fields === undefined || fields === null) return {};
  if (typeof fields !== 'object' || Array.isArray(fields)) throw new ValidationError("task 'fields' must be an object of field name → text, number, date or {choice: [...]}");
  for (const [k, v] of Object.entries(fields)) {
    refuseReservedName(k, 'task field');
    if (!validFieldKind(v)) throw new ValidationError(`task field '${k}': expected text, number, date or {choice: [...]}`);
  }
  return fields as Record<string, FieldKind>;
}

/** Checks submitted form values against the task's field kinds; returns them typed. */
export function validateFields(spec: Record<string, FieldKind>, given: unknown): Record<string, unknown> {
  if (given === undefined || given === null) return {};
  if (typeof given !== 'object' || Array.isArray(given)) throw new ValidationError("'fields' must be an object of field values");
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(given as Record<string, unknown>)) {
    refuseReservedName(name, 'field');
    // Own fields only: an inherited name such as 'toString' is not a field of this task.
    const kind = Object.hasOwn(spec, name) ? spec[name] : undefined;
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
    } else if (validFieldKind(kind)) {
      if (typeof value !== 'string' || !kind.choice.includes(value)) throw new ValidationError(`field '${name}' must be one of ${kind.choice.join(', ')}, got ${JSON.stringify(value)}`);
      out[name] = value;
    } else {
      throw new ValidationError(`field '${name}' has no usable kind on this task`);
    }
  }
  return out;
}

/** When a task is due: a duration from its creation ('4h'), or an ISO date-time. */
export function dueDate(due: string, createdAt: string): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(due) && !Number.isNaN(Date.parse(due))) return new Date(due).toISOString();
  try {
    return new Date(Date.parse(createdAt) + parseDuration(due)).toISOString();
  } catch {
    throw new ValidationError(`task 'due' must be a duration like 4h or an ISO date-time, got ${JSON.stringify(due)}`);
  }
}

/** Where an overdue task goes: a person: or group: address, normalised. */
export function escalationTarget(to: string): string {
  const a = parseAddress(to);
  if (a.scheme !== 'person' && a.scheme !== 'group') throw new ValidationError(`task 'escalateTo' must be a person: or group: address, got '${to}'`);
  return a.raw;
}

/** The address a task sits at: `person:<user>` or `group:<group>`. */
export function taskAddress(task: TaskPlace): string {
  return task.assignee !== undefined ? `person:${task.assignee}` : `group:${task.group}`;
}

/** Just where a task sits, for events (a person or a group, never both). */
export function placeOf(t: TaskPlace): TaskPlace {
  return t.assignee !== undefined ? { assignee: t.assignee } : { group: t.group! };
}

/**
 * May this principal claim and decide this task? The assignee may, and so may whoever may
 * consume from the task's address (a deputy of a person, a member of a group).
 */
export function mayAct(permissions: Permissions, p: Principal, task: TaskPlace): boolean {
  if (task.assignee !== undefined) return (p.kind === 'user' && p.name === task.assignee) || permissions.check(p, 'consume', `person:${task.assignee}`).allowed;
  return permissions.check(p, 'consume', `group:${task.group}`).allowed;
}

/** May this principal see this task? Whoever may act on it, and whoever may browse its address. */
export function maySee(permissions: Permissions, p: Principal, task: TaskPlace): boolean {
  return mayAct(permissions, p, task) || permissions.check(p, 'browse', taskAddress(task)).allowed;
}

/** A person the task's four-eyes controls exclude tried to decide, claim, or receive it. */
export class FourEyesRefused extends SwitchboardError {
  constructor(readonly principal: string, readonly taskId: string, reason: string) {
    super('four_eyes', `${reason}; someone else must decide (task '${taskId}')`, 403);
  }
}

/**
 * Why this principal may not decide this task (four-eyes), or undefined when they may. The
 * starter of a four-eyes ask is told "you started this request"; anyone in `notBy` is told that
 * the flow excluded them.
 */
export function excludedReason(p: Pick<Principal, 'kind' | 'name'>, task: Pick<Task, 'controls'>): string | undefined {
  const id = `${p.kind}:${p.name}`;
  if (!task.controls?.excluded?.includes(id)) return undefined;
  return task.controls.excludedReason?.[id] ?? 'the flow that asked excludes you from deciding this task';
}
