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
  /** For a peer, its network identity as in the network map ('O=Bank A,L=London,C=GB'), so audits name the organisation. */
  readonly name: string;
  /** For a peer, the local alias of the network map (`bank-a`): what permission rules, `peer:<alias>/…` addresses and reply checks use. */
  readonly alias?: string;
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
  /** A peer's sender is its network identity, with the local alias beside it (DESIGN §6). */
  sender: { kind: Principal['kind']; name: string; alias?: string };
  correlationId?: string;
  replyTo?: string;
  subject?: string;
  headers: Record<string, string>;
  contentType: string;
  body: unknown;
  createdAt: string;
  expiresAt?: string;
  /**
   * What an AMQP sender said beyond the fields above, kept so the message leaves Switchboard as it
   * came in (DESIGN §2, §6): the AMQP types of its ids and application properties, its body section
   * and header fields. Optional and JSON-safe; `id`, `correlationId` and `headers` stay the string
   * forms that HTTP, dedup and older code read. Each typed form is used on the way out only while
   * its string form still equals the field it describes, so a hop that changes a field is not undone.
   */
  amqp?: AmqpFidelity;
}

/**
 * One AMQP 1.0 value with its type, as JSON. 64-bit integers are decimal strings (JSON numbers
 * lose precision past 2^53); binary and decimals are base64; a uuid is its canonical dashed text;
 * a timestamp is milliseconds since the epoch; a non-finite float or double is the text `NaN`,
 * `Infinity` or `-Infinity`.
 */
export type AmqpValue =
  | { type: 'null' }
  | { type: 'boolean'; value: boolean }
  | { type: 'ubyte' | 'ushort' | 'uint' | 'byte' | 'short' | 'int' | 'char'; value: number }
  | { type: 'float' | 'double'; value: number | 'NaN' | 'Infinity' | '-Infinity' }
  | { type: 'ulong' | 'long'; value: string }
  | { type: 'timestamp'; value: number }
  | { type: 'uuid' | 'string' | 'symbol'; value: string }
  | { type: 'binary' | 'decimal32' | 'decimal64' | 'decimal128'; value: string }
  | { type: 'list'; value: AmqpValue[] }
  | { type: 'map'; value: [AmqpValue, AmqpValue][] }
  /** `code` is the element constructor's AMQP typecode, kept so the array is written back the same. */
  | { type: 'array'; code: number; descriptor?: AmqpValue; value: AmqpValue[] }
  | { type: 'described'; descriptor: AmqpValue; value: AmqpValue };

/** The AMQP type of a message_id or correlation_id; its string form is in `id`/`correlationId`. */
export type AmqpIdType = 'ulong' | 'uuid' | 'binary' | 'string';

/** The AMQP detail kept on a Message (see `Message.amqp`). */
export interface AmqpFidelity {
  /** Type of message_id; the string form (decimal, dashed uuid, hex) is `Message.id`. */
  idType?: AmqpIdType;
  /** Type of correlation_id; the string form is `Message.correlationId`. */
  correlationIdType?: AmqpIdType;
  /** Application properties that are not plain strings, with their AMQP types, by name. */
  properties?: Record<string, AmqpValue>;
  /** The body section the sender used. */
  bodySection?: 'value' | 'sequence' | 'data';
  /** A value body (or, for `sequence`, a list of the sequence sections, each a list) with its types. */
  body?: AmqpValue;
  /** A JSON data section's own bytes (base64) when re-serialising its parsed body would differ. */
  data?: string;
  /** The sender set no content_type (Switchboard's contentType is then its guess). */
  noContentType?: true;
  durable?: boolean;
  priority?: number;
  /** Milliseconds, as sent; `Message.expiresAt` holds the expiry it gave at the first ingress. */
  ttl?: number;
  /** absolute-expiry-time as sent (ISO 8601). */
  absoluteExpiryTime?: string;
  groupId?: string;
  groupSequence?: number;
  replyToGroupId?: string;
  contentEncoding?: string;
}

/**
 * True when the message is past its expiry (`expiresAt`, from an AMQP absolute-expiry-time or ttl
 * or an HTTP `expiresAt`): it is then dead-lettered with the reason, not delivered.
 */
export function isExpired(m: Pick<Message, 'expiresAt'>, now: Date | number = Date.now()): boolean {
  if (m.expiresAt === undefined) return false;
  const at = Date.parse(m.expiresAt);
  return !Number.isNaN(at) && at <= (typeof now === 'number' ? now : now.getTime());
}

/** The dead-letter reason for an expired message (for the DLQ entry and the log). */
export function expiryReason(m: Pick<Message, 'expiresAt' | 'amqp'>): string {
  const ttl = m.amqp?.ttl !== undefined ? ` (ttl ${m.amqp.ttl} ms)` : '';
  return `expired at ${m.expiresAt}${ttl} before it was delivered`;
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
    sender: { kind: sender.kind, name: sender.name, ...(sender.alias !== undefined ? { alias: sender.alias } : {}) },
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
