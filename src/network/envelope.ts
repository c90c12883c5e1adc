import type { KeyObject } from 'node:crypto';
import { encodeMessage, type Message } from '../core/message.ts';
import { signBytes, verifyBytes } from './identity.ts';

/** AMQP application properties that carry a peer envelope's signature and its signing gateway. */
export const SIGNATURE_PROPERTY = 'switchboard-signature';
export const ORIGIN_PROPERTY = 'switchboard-origin';

/** JSON with object keys sorted at every level: the same bytes for the same envelope, anywhere. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/**
 * What a peer signs: the message as it travels (id, destination in the peer's address space,
 * body, headers, correlation, reply address, subject, creation time, sending gateway's identity).
 * A relay that changes any of it breaks the signature.
 */
export function signedPart(m: Message, to: string, origin: string): Buffer {
  const e = encodeMessage(m);
  return Buffer.from(canonicalJson({
    id: e.id, to, origin, body: e.body, bodyBase64: e.bodyBase64, contentType: e.contentType, headers: e.headers,
    correlationId: e.correlationId, replyTo: e.replyTo, subject: e.subject, createdAt: e.createdAt, expiresAt: e.expiresAt,
  }), 'utf8');
}

export function signEnvelope(key: KeyObject, m: Message, to: string, origin: string): string {
  return signBytes(key, signedPart(m, to, origin));
}

export function verifyEnvelope(key: KeyObject, m: Message, to: string, origin: string, signature: string): boolean {
  return verifyBytes(key, signedPart(m, to, origin), signature);
}
