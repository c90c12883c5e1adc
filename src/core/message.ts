import { randomUUID } from 'node:crypto';
import { parseAddress } from './address.ts';
import { ValidationError } from './errors.ts';

/**
 * Who sent a message. Stamped by the door that authenticated it, never read from the client:
 * a `user` (directory login or one of their API tokens), a `peer` gateway (certificate subject),
 * a `flow`, a `broker` a message was consumed from, an inbound `webhook` (its signature), a
 * `route` from the config moving a message on, or the gateway itself (`system`).
 */
export interface Principal {
  readonly kind: 'user' | 'peer' | 'flow' | 'broker' | 'webhook' | 'route' | 'system';
  readonly name: string;
  /** Groups from the directory, for permission checks; not carried on messages. */
  readonly groups?: readonly string[];
  /** E-mail address from the directory, for notices; not carried on messages. */
  readonly email?: string;
}

/** The envelope every hop carries (DESIGN §2). */
export interface Message {
  id: string;
  to: string;
  from?: string;
  sender: { kind: Principal['kind']; name: string };
  correlationId?: string;
  replyTo?: string;
  subject?: string;
  headers: Record<string, string>;
  contentType: string;
  body: unknown;
  createdAt: string;
  expiresAt?: string;
}

/** What a client may set; everything else is the gateway's to decide. */
export interface MessageInput {
  to: unknown;
  body?: unknown;
  id?: unknown;
  headers?: unknown;
  correlationId?: unknown;
  replyTo?: unknown;
  subject?: unknown;
  contentType?: unknown;
  expiresAt?: unknown;
}

export function principalId(p: { kind: string; name: string }): string {
  return `${p.kind}:${p.name}`;
}

const ID = /^[\x21-\x7e]{1,256}$/;
const MAX_HEADERS = 64;

function optionalString(field: string, v: unknown, max = 1024): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > max) {
    throw new ValidationError(`'${field}' must be a non-empty string of at most ${max} characters`);
  }
  return v;
}

/**
 * Builds a Message from client input and the authenticated sender. A client-supplied id is kept
 * (it is the dedup key across hops); a missing one is generated.
 */
export function createMessage(input: MessageInput, sender: Principal, now = new Date()): Message {
  if (input === null || typeof input !== 'object') throw new ValidationError('expected a JSON object with at least {"to": "<address>"}');
  const to = parseAddress(input.to).raw;
  const id = input.id === undefined || input.id === null ? randomUUID() : input.id;
  if (typeof id !== 'string' || !ID.test(id)) {
    throw new ValidationError("'id' must be 1 to 256 visible ASCII characters without spaces");
  }
  const headers: Record<string, string> = {};
  if (input.headers !== undefined && input.headers !== null) {
    if (typeof input.headers !== 'object' || Array.isArray(input.headers)) throw new ValidationError("'headers' must be an object of string values");
    const entries = Object.entries(input.headers as Record<string, unknown>);
    if (entries.length > MAX_HEADERS) throw new ValidationError(`'headers' may have at most ${MAX_HEADERS} entries`);
    for (const [k, v] of entries) {
      if (typeof v !== 'string') throw new ValidationError(`header '${k}' must be a string, got ${typeof v}`);
      headers[k] = v;
    }
  }
  const replyTo = optionalString('replyTo', input.replyTo);
  if (replyTo !== undefined) parseAddress(replyTo);
  const expiresAt = optionalString('expiresAt', input.expiresAt, 64);
  if (expiresAt !== undefined && Number.isNaN(Date.parse(expiresAt))) throw new ValidationError("'expiresAt' must be an ISO 8601 date-time");
  const message: Message = {
    id,
    to,
    sender: { kind: sender.kind, name: sender.name },
    headers,
    contentType: optionalString('contentType', input.contentType, 255) ?? 'application/json',
    body: input.body ?? null,
    createdAt: now.toISOString(),
  };
  const correlationId = optionalString('correlationId', input.correlationId);
  const subject = optionalString('subject', input.subject);
  if (correlationId !== undefined) message.correlationId = correlationId;
  if (replyTo !== undefined) message.replyTo = replyTo;
  if (subject !== undefined) message.subject = subject;
  if (expiresAt !== undefined) message.expiresAt = new Date(expiresAt).toISOString();
  return message;
}

/** JSON-safe form for storage: a binary body is kept as base64 and flagged on the envelope. */
export type StoredMessage = Omit<Message, 'body'> & { body: unknown; bodyBase64?: true };

export function encodeMessage(m: Message): StoredMessage {
  return Buffer.isBuffer(m.body) || m.body instanceof Uint8Array
    ? { ...m, body: Buffer.from(m.body as Uint8Array).toString('base64'), bodyBase64: true }
    : m;
}

export function decodeMessage(s: StoredMessage): Message {
  if (s.bodyBase64 === true && typeof s.body === 'string') {
    const { bodyBase64: _flag, ...rest } = s;
    return { ...rest, body: Buffer.from(s.body, 'base64') };
  }
  return s as Message;
}
