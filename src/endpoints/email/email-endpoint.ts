import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { BeforeReplay, BrowseResult, Endpoint, HealthReport, ReplayResult, SendResult } from '../../core/endpoint.ts';
import { principalId, type Message } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import { traceHeaders } from '../../tracing/trace-context.ts';
import type { RecordLifecycle } from '../../core/lifecycle.ts';
import { Outbox } from '../../core/outbox.ts';

export interface EmailOptions {
  /** Shared connection for the outbox. */
  redis: Redis;
  /** Key prefix for every BullMQ key. */
  prefix: string;
  /** Hash tags the outbox is spread over (redis.shards). @defaultValue 1 */
  shards?: number;
  /** smtp:// or smtps:// URL of the relay, with credentials if it needs them. */
  smtp: string;
  /** The From address of every mail. */
  from: string;
  /** Sends that fail are retried with exponential backoff this many times, then dead-lettered. */
  maxAttempts: number;
  /** First retry delay; doubles each attempt. */
  backoffMs: number;
  /** How long an address and message id are remembered, so a resend is not mailed twice. */
  dedupTtlMs: number;
  /**
   * Stores the `switchboard.message.dead-lettered` event of each dead letter (see Outbox).
   * @defaultValue undefined (no such event mapped)
   */
  deadLetterEvents?: RecordLifecycle;
  metrics: Metrics;
  log: Logger;
}

/** What an e-mail says, from a message: `{subject, text, html}` bodies, or any body as text. */
export function renderEmail(m: Message): { subject: string; text: string; html?: string } {
  const b = m.body as { subject?: unknown; text?: unknown; html?: unknown } | string | null;
  const subject = m.subject ?? (b && typeof b === 'object' && typeof b.subject === 'string' ? b.subject : `Message from ${principalId(m.sender)}`);
  if (typeof b === 'string') return { subject, text: b };
  if (b && typeof b === 'object' && typeof b.text === 'string') return { subject, text: b.text, ...(typeof b.html === 'string' ? { html: b.html } : {}) };
  return { subject, text: Buffer.isBuffer(b) ? `(binary body, ${b.length} bytes)` : JSON.stringify(b, null, 2) };
}

/**
 * `email:<address>` — a durable outbox in front of SMTP: a send is accepted once it is stored;
 * delivery to the relay retries with backoff while SMTP is down and dead-letters after
 * maxAttempts, so a down mail server never loses a notice nor blocks the sender.
 */
export class EmailEndpoint implements Endpoint {
  readonly scheme = 'email';
  readonly dedupsOnIngress = true;
  private readonly outbox: Outbox;
  private readonly transport: Transporter;

  constructor(o: EmailOptions) {
    this.transport = nodemailer.createTransport(o.smtp);
    this.outbox = new Outbox({
      name: 'email-outbox', redis: o.redis, prefix: o.prefix, shards: o.shards ?? 1, label: 'email', metrics: o.metrics, log: o.log, ...(o.deadLetterEvents ? { deadLetterEvents: { record: o.deadLetterEvents } } : {}),
      maxAttempts: o.maxAttempts, backoffMs: o.backoffMs, dedupTtlMs: o.dedupTtlMs, concurrency: 5,
      deliver: async (m) => {
        const mail = renderEmail(m);
        await this.transport.sendMail({
          from: o.from, to: m.to.slice('email:'.length), subject: mail.subject, text: mail.text, ...(mail.html ? { html: mail.html } : {}),
          // Derived from the message id, so a resend after a crash threads as the same mail.
          messageId: `<${createHash('sha256').update(m.id).digest('hex').slice(0, 32)}@switchboard>`, headers: { 'X-Switchboard-Id': m.id, ...traceHeaders(m.headers) },
        });
      },
    });
  }

  send(message: Message): Promise<SendResult> {
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

  async close(): Promise<void> {
    await this.outbox.close();
    this.transport.close();
  }
}
