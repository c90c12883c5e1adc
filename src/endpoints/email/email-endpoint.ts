import { createHash } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { BrowseResult, Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import { decodeMessage, encodeMessage, principalId, type Message, type StoredMessage } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';

export interface EmailOptions {
  redis: Redis;
  prefix: string;
  /** smtp:// or smtps:// URL of the relay, with credentials if it needs them. */
  smtp: string;
  from: string;
  /** Sends that fail are retried with exponential backoff this many times, then dead-lettered. */
  maxAttempts: number;
  backoffMs: number;
  dedupTtlMs: number;
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
 * `email:<address>` — a durable outbox (BullMQ) in front of SMTP: a send is accepted once it is
 * stored; delivery to the relay retries with backoff while SMTP is down and dead-letters after
 * maxAttempts, so a down mail server never loses a notice nor blocks the sender.
 */
export class EmailEndpoint implements Endpoint {
  readonly scheme = 'email';
  readonly dedupsOnIngress = true;
  private readonly queue: Queue<StoredMessage>;
  private readonly worker: Worker<StoredMessage>;
  private readonly transport: Transporter;

  constructor(private readonly o: EmailOptions) {
    this.transport = nodemailer.createTransport(o.smtp);
    this.queue = new Queue<StoredMessage>('{email-outbox}', { connection: o.redis, prefix: o.prefix });
    this.queue.on('error', (err) => o.log.error({ err: err.message }, 'email outbox error'));
    this.worker = new Worker<StoredMessage>('{email-outbox}', async (job) => {
      const m = decodeMessage(job.data);
      const mail = renderEmail(m);
      await this.transport.sendMail({ from: o.from, to: m.to.slice('email:'.length), subject: mail.subject, text: mail.text, ...(mail.html ? { html: mail.html } : {}), messageId: `<${createHash('sha256').update(m.id).digest('hex').slice(0, 32)}@switchboard>`, headers: { 'X-Switchboard-Id': m.id } });
      o.metrics.messagesOut.inc({ endpoint: 'email' });
    }, { connection: o.redis, prefix: o.prefix, concurrency: 5 });
    this.worker.on('error', (err) => o.log.error({ err: err.message }, 'email worker error'));
    this.worker.on('failed', (job, err) => {
      const final = job && job.attemptsMade >= (job.opts.attempts ?? 1);
      o.log[final ? 'error' : 'warn']({ msgId: job?.data.id, to: job?.data.to, err: err.message, attempt: job?.attemptsMade }, final ? 'e-mail dead-lettered' : 'e-mail not sent yet; will retry');
      if (final) o.metrics.deadLettered.inc({ endpoint: 'email' });
    });
  }

  async send(message: Message): Promise<SendResult> {
    const jobId = `m${createHash('sha256').update(`${message.id}\0${Date.now()}\0${Math.random()}`).digest('base64url').slice(0, 16)}`;
    const job = await this.queue.add('mail', encodeMessage(message), {
      jobId,
      attempts: this.o.maxAttempts,
      backoff: { type: 'exponential', delay: this.o.backoffMs },
      removeOnComplete: true,
      removeOnFail: false,
      deduplication: { id: createHash('sha256').update(`${message.to}\0${message.id}`).digest('hex'), ttl: this.o.dedupTtlMs },
    });
    return { id: message.id, duplicate: job.id !== jobId };
  }

  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    const failed = (await this.queue.getFailed(0, 1000)).filter((j) => j && j.data.to === address);
    return { address: `dlq:${address}`, depth: failed.length, messages: failed.slice(0, limit).map((j) => ({ ...decodeMessage(j.data), deadLetter: { reason: j.failedReason, attempts: j.attemptsMade } })) };
  }

  async replayDeadLetters(address: string, ids?: string[]): Promise<{ replayed: number }> {
    let replayed = 0;
    for (const j of await this.queue.getFailed(0, 1000)) {
      if (j && j.data.to === address && (!ids || ids.includes(j.data.id))) {
        await j.retry('failed', { resetAttemptsMade: true });
        replayed++;
      }
    }
    return { replayed };
  }

  async health(): Promise<HealthReport> {
    const counts = await this.queue.getJobCounts('wait', 'delayed', 'failed');
    return { ok: true, detail: `outbox: ${(counts.wait ?? 0) + (counts.delayed ?? 0)} waiting, ${counts.failed ?? 0} dead-lettered` };
  }

  async close(): Promise<void> {
    await this.worker.close();
    await this.queue.close();
    this.transport.close();
  }
}
