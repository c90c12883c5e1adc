import { createHmac, timingSafeEqual } from 'node:crypto';

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` (DESIGN §6). */
export function sign(secret: string, timestamp: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`;
}

/** Checks a signature and that the timestamp is within `windowSec` of now. Returns why not, or undefined. */
export function verify(secret: string, timestamp: string | undefined, signature: string | undefined, body: Buffer, windowSec = 300, now = Date.now()): string | undefined {
  if (!timestamp || !/^\d{1,12}$/.test(timestamp)) return 'missing or malformed X-Switchboard-Timestamp (unix seconds)';
  if (!signature || !/^sha256=[0-9a-f]{64}$/.test(signature)) return 'missing or malformed X-Switchboard-Signature (sha256=<hex>)';
  if (Math.abs(now / 1000 - Number(timestamp)) > windowSec) return `timestamp outside the ${windowSec / 60}-minute window`;
  const want = Buffer.from(sign(secret, timestamp, body));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got) ? undefined : 'signature does not match';
}
