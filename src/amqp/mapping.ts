import { randomUUID } from 'node:crypto';
import rhea from 'rhea';
import { ValidationError } from '../core/errors.ts';
import { principalId, type Message } from '../core/message.ts';

/** The application property that carries the sender across AMQP hops (DESIGN §6). */
export const SENDER_PROPERTY = 'switchboard-sender';
/** Where a sender claimed by an outside party is kept; it is never trusted as the sender. */
export const CLAIMED_SENDER_HEADER = 'switchboard-claimed-sender';

const MAX_ID = 256;

/** An AMQP message (rhea's shape) as a plain object. */
export type AmqpMessage = Record<string, unknown> & { body?: unknown };

function idText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (Buffer.isBuffer(v)) return v.toString('hex');
  const s = String(v);
  return s.length > 0 ? s : undefined;
}

/**
 * Message → AMQP: message_id, correlation_id, reply_to, subject, application properties = headers
 * plus switchboard-sender, JSON bodies as an application/json data section, binary bodies as a
 * data section, durable. `userId` is set only where the peer expects it (the embedded endpoint).
 */
export function toAmqp(m: Message, o: { userId?: string; replyTo?: string } = {}): AmqpMessage {
  const binary = Buffer.isBuffer(m.body) || m.body instanceof Uint8Array;
  const bytes = binary ? Buffer.from(m.body as Uint8Array) : Buffer.from(JSON.stringify(m.body ?? null), 'utf8');
  return {
    message_id: m.id,
    durable: true,
    ...(m.correlationId !== undefined ? { correlation_id: m.correlationId } : {}),
    ...(o.replyTo ?? m.replyTo ? { reply_to: o.replyTo ?? m.replyTo } : {}),
    ...(m.subject !== undefined ? { subject: m.subject } : {}),
    ...(o.userId ? { user_id: Buffer.from(o.userId, 'utf8') } : {}),
    creation_time: new Date(m.createdAt),
    ...(m.expiresAt ? { absolute_expiry_time: new Date(m.expiresAt) } : {}),
    content_type: binary ? (m.contentType === 'application/json' ? 'application/octet-stream' : m.contentType) : 'application/json',
    application_properties: { ...m.headers, [SENDER_PROPERTY]: principalId(m.sender) },
    body: rhea.message.data_section(bytes),
  };
}

/** The bytes of a data section, or undefined for an AMQP value body. */
function dataBytes(body: unknown): Buffer | undefined {
  if (Buffer.isBuffer(body)) return body;
  const section = body as { typecode?: number; content?: unknown } | undefined;
  if (section && typeof section === 'object' && section.typecode === 0x75 && Buffer.isBuffer(section.content)) return section.content;
  if (section && typeof section === 'object' && section.typecode === 0x75 && Array.isArray(section.content)) return Buffer.concat(section.content as Buffer[]);
  return undefined;
}

/**
 * AMQP → Message for `to`, with the sender stamped by the door (never the message's own claim,
 * which is kept as a header). A JSON data section that is not JSON is refused with the reason.
 */
export function fromAmqp(a: AmqpMessage, to: string, sender: { kind: Message['sender']['kind']; name: string }, o: { maxBytes?: number; mapReplyTo?: (replyTo: string) => string | undefined } = {}): Message {
  const maxBytes = o.maxBytes ?? 1_048_576;
  const props = (a.application_properties ?? {}) as Record<string, unknown>;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(props)) {
    if (k === SENDER_PROPERTY) continue;
    headers[k] = v instanceof Date ? v.toISOString() : Buffer.isBuffer(v) ? v.toString('base64') : String(v);
  }
  const claimed = props[SENDER_PROPERTY];
  if (claimed !== undefined && String(claimed) !== `${sender.kind}:${sender.name}`) headers[CLAIMED_SENDER_HEADER] = String(claimed);
  const contentType = typeof a.content_type === 'string' && a.content_type ? a.content_type : undefined;
  let body: unknown;
  let type = 'application/json';
  const bytes = dataBytes(a.body);
  if (bytes) {
    if (bytes.length > maxBytes) throw new ValidationError(`message body of ${bytes.length} bytes is over the limit of ${maxBytes}`, 'payload_too_large');
    if (contentType === undefined || /^application\/([a-z.+-]*\+)?json\b/i.test(contentType)) {
      const text = bytes.toString('utf8');
      try {
        body = JSON.parse(text);
      } catch (err) {
        if (contentType !== undefined) throw new ValidationError(`message body is declared ${contentType} but is not valid JSON: ${(err as Error).message}`, 'malformed_message');
        body = bytes;
        type = 'application/octet-stream';
      }
    } else if (/^text\//i.test(contentType)) {
      body = bytes.toString('utf8');
      type = contentType;
    } else {
      body = bytes;
      type = contentType;
    }
  } else {
    // An AMQP value section (string, number, map, list) is already structured data.
    const size = JSON.stringify(a.body ?? null)?.length ?? 0;
    if (size > maxBytes) throw new ValidationError(`message body of about ${size} bytes is over the limit of ${maxBytes}`, 'payload_too_large');
    body = a.body ?? null;
  }
  const id = idText(a.message_id) ?? randomUUID();
  if (id.length > MAX_ID || !/^[\x21-\x7e]+$/.test(id)) throw new ValidationError(`message_id must be 1 to ${MAX_ID} visible ASCII characters`, 'malformed_message');
  const created = a.creation_time instanceof Date ? a.creation_time : undefined;
  const expires = a.absolute_expiry_time instanceof Date && a.absolute_expiry_time.getTime() > 0 ? a.absolute_expiry_time : undefined;
  return {
    id,
    to,
    sender,
    headers,
    contentType: type,
    body,
    createdAt: (created ?? new Date()).toISOString(),
    ...(idText(a.correlation_id) !== undefined ? { correlationId: idText(a.correlation_id)! } : {}),
    ...(typeof a.reply_to === 'string' && a.reply_to && (o.mapReplyTo ? o.mapReplyTo(a.reply_to) : a.reply_to) ? { replyTo: o.mapReplyTo ? o.mapReplyTo(a.reply_to)! : a.reply_to } : {}),
    ...(typeof a.subject === 'string' ? { subject: a.subject } : {}),
    ...(expires ? { expiresAt: expires.toISOString() } : {}),
  };
}
