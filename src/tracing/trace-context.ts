/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` and `tracestate`
 * values every door accepts and every hop carries. A message carries them as the headers
 * `traceparent` and `tracestate` — on AMQP these are application properties, on HTTP and
 * webhooks HTTP headers, on a peer envelope part of what the signature covers.
 *
 * A value that breaks the spec is ignored, never an error: the caller's request goes on and a
 * new trace starts (W3C §3.2.2.5/§3.3.1.5 — a vendor that cannot parse the header starts over
 * and does not pass the broken value on).
 */

/** Header (AMQP application property) names, lowercase as W3C writes them. */
export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

/** A valid trace context as it travels: a traceparent in version-00 form and its tracestate. */
export interface TraceContext {
  readonly traceparent: string;
  readonly tracestate?: string;
}

/** The fields of a traceparent. */
export interface Traceparent {
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** The caller's span: 16 lowercase hex digits, not all zero. */
  readonly spanId: string;
  /** Trace flags; bit 0 is `sampled`. */
  readonly flags: number;
}

const HEADER = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * Parses a traceparent; undefined for anything the spec says to ignore: not a string, upper-case
 * hex, version `ff`, an all-zero trace or span id, a version-00 value with anything after the
 * flags. A later version is read for its first four fields (W3C §3.2.4: forward compatibility).
 */
export function parseTraceparent(value: unknown): Traceparent | undefined {
  if (typeof value !== 'string' || value.length > 512) return undefined;
  const m = HEADER.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff') return undefined;
  if (version === '00' && rest !== undefined) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, flags: parseInt(flags, 16) };
}

/** The version-00 traceparent of these fields (only the `sampled` flag is defined in 00). */
export function formatTraceparent(t: Traceparent): string {
  return `00-${t.traceId}-${t.spanId}-${(t.flags & 0xff).toString(16).padStart(2, '0')}`;
}

const SIMPLE_KEY = '[a-z][_0-9a-z\\-*/]{0,255}';
const TENANT_KEY = '[a-z0-9][_0-9a-z\\-*/]{0,240}@[a-z][_0-9a-z\\-*/]{0,13}';
const VALUE = '[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,255}[\\x21-\\x2b\\x2d-\\x3c\\x3e-\\x7e]';
const MEMBER = new RegExp(`^(${SIMPLE_KEY}|${TENANT_KEY})=(${VALUE})$`);
const MAX_MEMBERS = 32;

/**
 * Checks a tracestate and gives it back with empty members and optional white space removed;
 * undefined when it breaks the spec (bad key or value, a key twice, more than 32 members), since
 * a vendor that cannot parse it must not pass it on (W3C §3.3.1.5).
 */
export function parseTracestate(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > 8192) return undefined;
  const members = value.split(',').map((m) => m.trim()).filter((m) => m !== '');
  if (members.length === 0 || members.length > MAX_MEMBERS) return undefined;
  const keys = new Set<string>();
  for (const member of members) {
    const m = MEMBER.exec(member);
    if (!m || keys.has(m[1]!)) return undefined;
    keys.add(m[1]!);
  }
  return members.join(',');
}

/** The trace context a message's headers carry, if it is valid; a tracestate only beside a valid traceparent. */
export function readTraceContext(headers: Readonly<Record<string, string>> | undefined): TraceContext | undefined {
  const parent = parseTraceparent(headers?.[TRACEPARENT]);
  if (!parent) return undefined;
  const state = parseTracestate(headers?.[TRACESTATE]);
  return { traceparent: formatTraceparent(parent), ...(state !== undefined ? { tracestate: state } : {}) };
}

/** The valid trace context kept beside a record (a flow instance, a task), if any. */
export function storedTraceContext(record: { traceparent?: string | undefined; tracestate?: string | undefined }): TraceContext | undefined {
  if (!record.traceparent) return undefined; // without one a tracestate alone means nothing
  const headers: Record<string, string> = { [TRACEPARENT]: record.traceparent };
  if (record.tracestate) headers[TRACESTATE] = record.tracestate;
  return readTraceContext(headers);
}

/**
 * The headers with `traceparent`/`tracestate` set to `context` (both removed when it is
 * undefined). The same object when nothing changes, so a hop that adds nothing copies nothing.
 */
export function withTraceContext(headers: Record<string, string>, context: TraceContext | undefined): Record<string, string> {
  const same = headers[TRACEPARENT] === context?.traceparent && headers[TRACESTATE] === context?.tracestate;
  if (same) return headers;
  // Copied key by key, not by object rest, which V8 runs ~3× slower: every flow send passes here.
  const out: Record<string, string> = {};
  for (const k of Object.keys(headers)) if (k !== TRACEPARENT && k !== TRACESTATE) out[k] = headers[k]!;
  if (!context) return out;
  out[TRACEPARENT] = context.traceparent;
  if (context.tracestate !== undefined) out[TRACESTATE] = context.tracestate;
  return out;
}

/**
 * The headers an outgoing HTTP request or e-mail carries for a message: its valid trace
 * context, nothing otherwise (a webhook receiver or mail client never sees a broken value).
 */
export function traceHeaders(headers: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const context = readTraceContext(headers);
  if (!context) return {};
  return { [TRACEPARENT]: context.traceparent, ...(context.tracestate !== undefined ? { [TRACESTATE]: context.tracestate } : {}) };
}
