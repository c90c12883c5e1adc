import { createHash } from 'node:crypto';
import type { LifecycleEvent } from '../core/lifecycle.ts';
import type { Message } from '../core/message.ts';
import { systemMessage } from '../core/system-message.ts';

/** A CloudEvents 1.0 event in its JSON form (structured content mode). */
export interface CloudEvent {
  specversion: '1.0';
  /** Unique per source and change; also the message id, so the usual dedup applies. */
  id: string;
  /** The gateway: its network identity, else its http.baseUrl. */
  source: string;
  type: string;
  subject: string;
  /** RFC 3339. */
  time: string;
  datacontenttype: 'application/json';
  data: Record<string, unknown>;
}

/** The media type of the JSON event format (structured mode). */
export const CLOUDEVENTS_JSON = 'application/cloudevents+json';

/**
 * How an event travels. `structured`: the whole event as the JSON body (content type
 * application/cloudevents+json). `binary`: the body is `data` (application/json) and every other
 * attribute an AMQP application property `cloudEvents:<name>` (the CloudEvents AMQP binding,
 * §3.1.3.1), which is what a broker's consumer filters and reads without parsing the body.
 */
export type ContentMode = 'structured' | 'binary';

/** Prefix of CloudEvents attributes among AMQP application properties (AMQP binding §3.1.3.1). */
export const AMQP_ATTRIBUTE_PREFIX = 'cloudEvents:';

/** Names that hold credentials; such a field is dropped from `data`, however deep. */
const SECRET_NAME = /(token|password|passwd|secret|nonce|signature|credential|authorization|apikey|api-key|api_key|private|cookie|session)/i;

/**
 * `data` without anything that could be a credential: fields named like one are dropped at any
 * depth, and strings that are flow reply tokens (`<instance>:<step>:…:<nonce>`) are dropped too.
 * The reporters already send only plain facts; this is the second line, so a field added later
 * cannot leak a secret into every event consumer's queue.
 */
export function withoutSecrets(value: unknown, depth = 0): unknown {
  if (depth > 8) return undefined;
  if (Array.isArray(value)) return value.map((v) => withoutSecrets(v, depth + 1)).filter((v) => v !== undefined);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (SECRET_NAME.test(k) || k === 'correlationId' || k === 'replyTo') continue;
      const clean = withoutSecrets(v, depth + 1);
      if (clean !== undefined) out[k] = clean;
    }
    return out;
  }
  if (typeof value === 'string') {
    if (/^[A-Za-z0-9_-]{16,}:\d+(:r\d+)?:[A-Za-z0-9_-]{8,}$/.test(value)) return undefined;
    // An error text may quote a URL: its user:password@ and query string (tokens live there) go.
    return value.replace(/:\/\/[^/@\s]*@/g, '://').replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s?#]*)\?[^\s#]*/gi, '$1');
  }
  return value;
}

/**
 * The event id for a change: a digest of its type and key, so the same change reported twice
 * (a retry, a second process) has the same id, while ids reveal nothing of the key.
 */
export function eventId(type: string, key: string): string {
  return `ev-${createHash('sha256').update(`${type}\0${key}`).digest('base64url').slice(0, 32)}`;
}

/** True for an id `eventId` makes (the message id of a lifecycle event). */
export function isEventId(id: unknown): boolean {
  return typeof id === 'string' && /^ev-[A-Za-z0-9_-]{32}$/.test(id);
}

/** Builds the CloudEvent for a reported lifecycle event. */
export function buildCloudEvent(e: LifecycleEvent, source: string, now = new Date()): CloudEvent {
  return {
    specversion: '1.0',
    id: eventId(e.type, e.key),
    source,
    type: e.type,
    subject: e.subject,
    time: now.toISOString(),
    datacontenttype: 'application/json',
    data: withoutSecrets(e.data) as Record<string, unknown>,
  };
}

/**
 * The message that carries an event to `to`, sent by the gateway itself; its id is the event
 * id, so a second copy to the same address is deduplicated like any message.
 */
export function eventMessage(event: CloudEvent, to: string, mode: ContentMode): Message {
  if (mode === 'structured') {
    return { ...systemMessage({ id: event.id, to, body: event, createdAt: event.time }), contentType: CLOUDEVENTS_JSON };
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(event)) {
    // datacontenttype is the AMQP content-type and data the body (binding §3.1.1, §3.1.2).
    if (k === 'data' || k === 'datacontenttype') continue;
    headers[AMQP_ATTRIBUTE_PREFIX + k] = String(v);
  }
  return systemMessage({ id: event.id, to, body: event.data, headers, createdAt: event.time });
}

/** Binary mode for addresses whose consumers are AMQP brokers' clients; structured elsewhere. */
export function defaultMode(to: string): ContentMode {
  return to.startsWith('mq:') ? 'binary' : 'structured';
}
