import type { Message } from './message.ts';
import type { Caller, Door } from './pipeline.ts';

/** The gateway's own principal: notices, reminders, escalations and other messages no one typed. */
export const SYSTEM_SENDER = { kind: 'system', name: 'switchboard' } as const;

/**
 * The gateway acting on its own account through an internal door (the inbox delivering a
 * decision, a transport sending a notice). No client door can present this principal.
 */
export function systemCaller(door: Door = 'system', name: string = SYSTEM_SENDER.name): Caller {
  return { principal: { kind: 'system', name }, door };
}

export interface SystemMessageInput {
  /** Fixed per purpose (e.g. `task:<id>:decision`), so a repeat after a crash is deduplicated. */
  id: string;
  to: string;
  body: unknown;
  from?: string;
  headers?: Record<string, string>;
  correlationId?: string;
  subject?: string;
  /** Defaults to the gateway itself; a decision is sent on behalf of the person who decided. */
  sender?: Message['sender'];
  createdAt?: string;
}

/**
 * Builds a message the gateway sends on its own account (flows, the inbox, notices). One builder,
 * so every such message has the same shape and nobody forgets the content type or the time.
 */
export function systemMessage(input: SystemMessageInput): Message {
  return {
    id: input.id,
    to: input.to,
    sender: input.sender ?? SYSTEM_SENDER,
    headers: input.headers ?? {},
    contentType: 'application/json',
    body: input.body,
    createdAt: input.createdAt ?? new Date().toISOString(),
    ...(input.from !== undefined ? { from: input.from } : {}),
    ...(input.correlationId !== undefined ? { correlationId: input.correlationId } : {}),
    ...(input.subject !== undefined ? { subject: input.subject } : {}),
  };
}
