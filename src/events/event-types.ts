/**
 * Every lifecycle event type Switchboard emits, with what its `subject` names and the fields of
 * its `data` (README "Lifecycle events" lists the same). Patterns in `events[].types` are checked
 * against this list, so a typo is refused at start instead of silently matching nothing.
 */
export const EVENT_TYPES = {
  'switchboard.flow.started': { subject: 'flow:<name>/<instanceId>', data: ['flow', 'instanceId', 'startedBy'] },
  'switchboard.flow.waiting': { subject: 'flow:<name>/<instanceId>', data: ['flow', 'instanceId', 'step', 'kind', 'target?', 'until?'] },
  'switchboard.flow.completed': { subject: 'flow:<name>/<instanceId>', data: ['flow', 'instanceId', 'startedBy'] },
  'switchboard.flow.failed': { subject: 'flow:<name>/<instanceId>', data: ['flow', 'instanceId', 'attempt', 'error'] },
  'switchboard.flow.cancelled': { subject: 'flow:<name>/<instanceId>', data: ['flow', 'instanceId', 'by'] },
  'switchboard.task.created': { subject: 'task:<taskId>', data: ['taskId', 'assignee?', 'group?'] },
  'switchboard.task.claimed': { subject: 'task:<taskId>', data: ['taskId', 'by', 'assignee?', 'group?'] },
  'switchboard.task.delegated': { subject: 'task:<taskId>', data: ['taskId', 'by', 'assignee?', 'previous'] },
  'switchboard.task.decided': { subject: 'task:<taskId>', data: ['taskId', 'by', 'assignee?', 'group?'] },
  'switchboard.task.escalated': { subject: 'task:<taskId>', data: ['taskId', 'by', 'assignee?', 'group?', 'previous'] },
  'switchboard.message.dead-lettered': { subject: '<address>', data: ['address', 'messageId', 'transport', 'reason'] },
  'switchboard.message.replayed': { subject: '<address>', data: ['address', 'messageIds?', 'replayed'] },
  'switchboard.peer.up': { subject: 'peer:<alias>', data: ['alias'] },
  'switchboard.peer.down': { subject: 'peer:<alias>', data: ['alias', 'state', 'lastError?'] },
  'switchboard.peer.undeliverable': { subject: '<address>', data: ['alias', 'address', 'messageId', 'reason'] },
  'switchboard.permission.changed': { subject: 'permissions', data: ['change', 'by', 'version?', 'rule?', 'address?'] },
} as const satisfies Record<string, { subject: string; data: readonly string[] }>;

export type EventType = keyof typeof EVENT_TYPES;

export const ALL_EVENT_TYPES = Object.keys(EVENT_TYPES) as EventType[];

/** Thrown for a type pattern that is malformed or matches no event type. */
export class EventTypePatternError extends Error {
  readonly code = 'bad_event_type';
  constructor(readonly pattern: string, reason: string) {
    super(`event type pattern '${pattern}': ${reason}`);
    this.name = 'EventTypePatternError';
  }
}

const SEGMENT = /^[a-z0-9-]+$/;

/**
 * A type pattern: dot-separated segments where `*` is one whole segment and `**` (last only) any
 * rest, like address patterns (`switchboard.flow.*`, `switchboard.**`, or one exact type).
 */
export interface TypePattern {
  readonly raw: string;
  readonly segments: readonly string[];
}

export function parseTypePattern(raw: string): TypePattern {
  if (typeof raw !== 'string' || raw === '') throw new EventTypePatternError(String(raw), "expected a type like 'switchboard.flow.completed' or a pattern like 'switchboard.flow.*'");
  const segments = raw.split('.');
  segments.forEach((s, i) => {
    if (s === '**' && i !== segments.length - 1) throw new EventTypePatternError(raw, "'**' may only be the last segment");
    if (s !== '*' && s !== '**' && !SEGMENT.test(s)) throw new EventTypePatternError(raw, s === '' ? 'empty segment' : `segment '${s}': lower-case letters, digits and '-', or a whole-segment wildcard (* or **)`);
  });
  const pattern = { raw, segments };
  if (!ALL_EVENT_TYPES.some((t) => matchesType(pattern, t))) {
    throw new EventTypePatternError(raw, `matches no event type (known: ${ALL_EVENT_TYPES.join(', ')})`);
  }
  return pattern;
}

export function matchesType(pattern: TypePattern, type: string): boolean {
  const parts = type.split('.');
  const { segments } = pattern;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '**') return true;
    if (parts[i] === undefined || (s !== '*' && s !== parts[i])) return false;
  }
  return parts.length === segments.length;
}
