import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Which way a webhook request travels. `outbound`: Switchboard POSTs a message to a receiver
 * (`webhook:<name>`); `inbound`: a sender POSTs to Switchboard (`POST /hooks/<name>`). The
 * direction is part of what is signed, so a request Switchboard sent can never be replayed back
 * into an inbound hook that shares its secret.
 */
export type WebhookDirection = 'outbound' | 'inbound';

/** Everything besides the body that a webhook request delivers, and so is signed. */
export interface SignedFields {
  direction: WebhookDirection;
  /** X-Switchboard-Timestamp: unix seconds. */
  timestamp: string;
  /** X-Switchboard-Id: the message id. */
  id: string;
  /** X-Switchboard-Correlation-Id, when present. */
  correlationId?: string | undefined;
  /** X-Switchboard-Subject, when present. */
  subject?: string | undefined;
  /** X-Switchboard-Sender, when present (inbound it is kept only as a claim). */
  sender?: string | undefined;
}

/**
 * The string the HMAC covers (README "Webhooks"): lines joined by "\n", because no header value
 * can hold a line break, so no field can be shifted into its neighbour:
 * `v1`, direction, timestamp, id, correlation id, subject, sender (empty when absent), and the
 * hex SHA-256 of the raw body.
 */
export function signedString(f: SignedFields, body: Buffer | string): string {
  const bodyHash = createHash('sha256').update(body).digest('hex');
  return ['v1', f.direction, f.timestamp, f.id, f.correlationId ?? '', f.subject ?? '', f.sender ?? '', bodyHash].join('\n');
}

/** `sha256=<hex HMAC-SHA256(secret, signedString(fields, body))>`. */
export function sign(secret: string, f: SignedFields, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(signedString(f, body)).digest('hex')}`;
}

const same = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

/**
 * Checks a signature made for `f.direction` and that the timestamp is within `windowSec` of now.
 * Returns why not (a sentence for the 401 and the audit entry), or undefined when it holds.
 */
export function verify(secret: string, f: Omit<SignedFields, 'timestamp' | 'id'> & { timestamp: string | undefined; id: string | undefined }, signature: string | undefined, body: Buffer, windowSec = 300, now = Date.now()): string | undefined {
  const { timestamp, id } = f;
  if (!timestamp || !/^\d{1,12}$/.test(timestamp)) return 'missing or malformed X-Switchboard-Timestamp (unix seconds)';
  if (!signature || !/^sha256=[0-9a-f]{64}$/.test(signature)) return 'missing or malformed X-Switchboard-Signature (sha256=<hex>)';
  if (id === undefined) return 'missing X-Switchboard-Id (the message id is signed)';
  if (Math.abs(now / 1000 - Number(timestamp)) > windowSec) return `timestamp outside the ${windowSec / 60}-minute window`;
  const fields: SignedFields = { ...f, timestamp, id };
  if (same(sign(secret, fields, body), signature)) return undefined;
  const other: WebhookDirection = f.direction === 'inbound' ? 'outbound' : 'inbound';
  if (same(sign(secret, { ...fields, direction: other }, body), signature)) {
    return `the signature was made for the ${other} direction (${other === 'outbound' ? 'a request Switchboard sent to a receiver' : 'a request sent to Switchboard'}), not ${f.direction}: a replayed request`;
  }
  return 'signature does not match (it covers direction, timestamp, id, correlation id, subject, sender and body)';
}
