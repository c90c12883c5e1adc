import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { BeforeReplay, BrowseResult, Endpoint, HealthReport, ReplayResult, SendResult } from '../../core/endpoint.ts';
import { UnknownTarget } from '../../core/errors.ts';
import { principalId, type Message } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { RecordLifecycle } from '../../core/lifecycle.ts';
import { Outbox, Undeliverable, type OutboxStatus } from '../../core/outbox.ts';
import { traceHeaders } from '../../tracing/trace-context.ts';
import { sign } from '../../network/webhook-signature.ts';

export interface WebhookTarget {
  /** The name in `webhook:<name>`. */
  name: string;
  /** Where messages are POSTed. */
  url: string;
  /** HMAC key of the X-Switchboard-Signature header. */
  secret: string;
  /** A call without an answer within this long failed (and is retried). */
  timeoutMs: number;
}

export interface WebhookOptions {
  /** Shared connection for the outbox. */
  redis: Redis;
  /** Key prefix for every BullMQ key. */
  prefix: string;
  /** Hash tags the outbox is spread over (redis.shards). @defaultValue 1 */
  shards?: number;
  /** The configured outbound webhooks. */
  targets: WebhookTarget[];
  /** Calls before a message is dead-lettered (a 4xx other than 408/429 dead-letters at once). */
  maxAttempts: number;
  /** First retry delay; doubles each attempt. */
  backoffMs: number;
  /** How long a webhook and message id are remembered, so a resend is not POSTed twice. */
  dedupTtlMs: number;
  /**
   * Stores the `switchboard.message.dead-lettered` event of each dead letter (see Outbox).
   * @defaultValue undefined (no such event mapped)
   */
  deadLetterEvents?: RecordLifecycle;
  metrics: Metrics;
  log: Logger;
}

/** A 4xx means the receiver will never take this request as it is; 408 and 429 mean "later". */
const permanent = (status: number) => status >= 400 && status < 500 && status !== 408 && status !== 429;

/**
 * `webhook:<name>` — a durable outbox that POSTs each message's body as JSON to the configured
 * URL, signed for the outbound direction (X-Switchboard-Signature over the direction, timestamp,
 * id, correlation id, subject, sender and body: `signedString` in network/webhook-signature.ts).
 * 2xx is delivered; 5xx, timeouts and network errors retry with backoff; other 4xx dead-letter
 * at once (dlq:webhook:<name>).
 */
export class WebhookEndpoint implements Endpoint {
  readonly scheme = 'webhook';
  readonly dedupsOnIngress = true;
  private readonly targets: Map<string, WebhookTarget>;
  private readonly outbox: Outbox;

  constructor(o: WebhookOptions) {
    this.targets = new Map(o.targets.map((t) => [t.name, t]));
    this.outbox = new Outbox({
      name: 'webhook-outbox', redis: o.redis, prefix: o.prefix, shards: o.shards ?? 1, label: 'webhook', metrics: o.metrics, log: o.log, ...(o.deadLetterEvents ? { deadLetterEvents: { record: o.deadLetterEvents } } : {}),
      maxAttempts: o.maxAttempts, backoffMs: o.backoffMs, dedupTtlMs: o.dedupTtlMs, concurrency: 10,
      deliver: (m) => this.post(m),
    });
  }

  /** The configured webhooks, and the (shared) outbox with the last failure of each. */
  async states(): Promise<{ name: string; outbox: OutboxStatus }[]> {
    return Promise.all([...this.targets.keys()].map(async (name) => ({ name, outbox: await this.outbox.status(`webhook:${name}`) })));
  }

  private target(address: string): WebhookTarget {
    const name = address.slice('webhook:'.length);
    const t = this.targets.get(name);
    if (!t) throw new UnknownTarget(address, `webhook named '${name}'`, [...this.targets.keys()].map((n) => `webhook:${n}`));
    return t;
  }

  checkTarget(address: string): void {
    this.target(address);
  }

  private async post(m: Message): Promise<void> {
    const t = this.target(m.to);
    const body = Buffer.isBuffer(m.body) ? (m.body as Buffer) : Buffer.from(JSON.stringify(m.body ?? null));
    const ts = String(Math.floor(Date.now() / 1000));
    const sender = principalId(m.sender);
    const signature = sign(t.secret, { direction: 'outbound', timestamp: ts, id: m.id, correlationId: m.correlationId, subject: m.subject, sender }, body);
    let res: Response;
    try {
      res = await fetch(t.url, {
        method: 'POST',
        body: new Uint8Array(body),
        signal: AbortSignal.timeout(t.timeoutMs),
        headers: {
          // A JSON body keeps its own JSON media type (application/cloudevents+json for a structured event).
          'content-type': Buffer.isBuffer(m.body) ? m.contentType : /^application\/([a-z.+-]*\+)?json\b/i.test(m.contentType) ? m.contentType : 'application/json',
          'x-switchboard-id': m.id,
          'x-switchboard-timestamp': ts,
          'x-switchboard-signature': signature,
          'x-switchboard-sender': sender,
          ...(m.correlationId ? { 'x-switchboard-correlation-id': m.correlationId } : {}),
          ...(m.subject ? { 'x-switchboard-subject': m.subject } : {}),
          ...traceHeaders(m.headers), // W3C traceparent/tracestate: the receiver continues the trace
        },
      });
    } catch (err) {
      throw new Error(`POST ${t.url} failed: ${(err as Error).name === 'TimeoutError' ? `no answer within ${t.timeoutMs} ms` : (err as Error).message}`);
    }
    await res.arrayBuffer().catch(() => undefined);
    if (res.ok) return;
    if (permanent(res.status)) throw new Undeliverable(`POST ${t.url} answered ${res.status}: the receiver refuses this message`);
    throw new Error(`POST ${t.url} answered ${res.status}`);
  }

  async send(message: Message): Promise<SendResult> {
    this.target(message.to);
    return this.outbox.send(message);
  }

  deadLetters(address: string, limit: number): Promise<BrowseResult> {
    return this.outbox.deadLetters(address, limit);
  }

  replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    return this.outbox.replayDeadLetters(address, ids, before);
  }

  health(): Promise<HealthReport> {
    return this.outbox.health();
  }

  close(): Promise<void> {
    return this.outbox.close();
  }
}
