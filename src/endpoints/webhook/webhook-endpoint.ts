import { createHash } from 'node:crypto';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { BrowseResult, Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import { UnknownScheme } from '../../core/errors.ts';
import { decodeMessage, encodeMessage, principalId, type Message, type StoredMessage } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import { sign } from '../../network/webhook-signature.ts';

export interface WebhookTarget {
  name: string;
  url: string;
  secret: string;
  timeoutMs: number;
}

export interface WebhookOptions {
  redis: Redis;
  prefix: string;
  targets: WebhookTarget[];
  maxAttempts: number;
  backoffMs: number;
  dedupTtlMs: number;
  metrics: Metrics;
  log: Logger;
}

/** A 4xx means the receiver will never take this request as it is; 408 and 429 mean "later". */
const permanent = (status: number) => status >= 400 && status < 500 && status !== 408 && status !== 429;

/**
 * `webhook:<name>` — a durable outbox that POSTs each message's body as JSON to the configured
 * URL, signed (X-Switchboard-Signature over timestamp and body) and carrying the message id.
 * 2xx is delivered; 5xx, timeouts and network errors retry with backoff; other 4xx dead-letter
 * at once (dlq:webhook:<name>).
 */
export class WebhookEndpoint implements Endpoint {
  readonly scheme = 'webhook';
  readonly dedupsOnIngress = true;
  private readonly targets: Map<string, WebhookTarget>;
  private readonly queue: Queue<StoredMessage>;
  private readonly worker: Worker<StoredMessage>;

  constructor(private readonly o: WebhookOptions) {
    this.targets = new Map(o.targets.map((t) => [t.name, t]));
    this.queue = new Queue<StoredMessage>('{webhook-outbox}', { connection: o.redis, prefix: o.prefix });
    this.queue.on('error', (err) => o.log.error({ err: err.message }, 'webhook outbox error'));
    this.worker = new Worker<StoredMessage>('{webhook-outbox}', async (job) => this.deliver(decodeMessage(job.data)), { connection: o.redis, prefix: o.prefix, concurrency: 10 });
    this.worker.on('error', (err) => o.log.error({ err: err.message }, 'webhook worker error'));
    this.worker.on('failed', (job, err) => {
      const final = job && (job.attemptsMade >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError || err.name === 'UnrecoverableError');
      o.log[final ? 'error' : 'warn']({ msgId: job?.data.id, to: job?.data.to, err: err.message, attempt: job?.attemptsMade }, final ? 'webhook call dead-lettered' : 'webhook call failed; will retry');
      if (final) o.metrics.deadLettered.inc({ endpoint: 'webhook' });
    });
  }

  private target(address: string): WebhookTarget {
    const name = address.slice('webhook:'.length);
    const t = this.targets.get(name);
    if (!t) throw new UnknownScheme(`webhook:${name}`, [...this.targets.keys()].map((n) => `webhook:${n}`));
    return t;
  }

  private async deliver(m: Message): Promise<void> {
    const t = this.target(m.to);
    const body = Buffer.isBuffer(m.body) ? (m.body as Buffer) : Buffer.from(JSON.stringify(m.body ?? null));
    const ts = String(Math.floor(Date.now() / 1000));
    let res: Response;
    try {
      res = await fetch(t.url, {
        method: 'POST',
        body: new Uint8Array(body),
        signal: AbortSignal.timeout(t.timeoutMs),
        headers: {
          'content-type': Buffer.isBuffer(m.body) ? m.contentType : 'application/json',
          'x-switchboard-id': m.id,
          'x-switchboard-timestamp': ts,
          'x-switchboard-signature': sign(t.secret, ts, body),
          'x-switchboard-sender': principalId(m.sender),
          ...(m.correlationId ? { 'x-switchboard-correlation-id': m.correlationId } : {}),
          ...(m.subject ? { 'x-switchboard-subject': m.subject } : {}),
        },
      });
    } catch (err) {
      throw new Error(`POST ${t.url} failed: ${(err as Error).name === 'TimeoutError' ? `no answer within ${t.timeoutMs} ms` : (err as Error).message}`);
    }
    await res.arrayBuffer().catch(() => undefined);
    if (res.ok) {
      this.o.metrics.messagesOut.inc({ endpoint: 'webhook' });
      return;
    }
    if (permanent(res.status)) throw new UnrecoverableError(`POST ${t.url} answered ${res.status}: the receiver refuses this message`);
    throw new Error(`POST ${t.url} answered ${res.status}`);
  }

  async send(message: Message): Promise<SendResult> {
    this.target(message.to);
    const jobId = `w${createHash('sha256').update(`${message.id}\0${process.hrtime.bigint()}\0${Math.random()}`).digest('base64url').slice(0, 16)}`;
    const job = await this.queue.add('call', encodeMessage(message), {
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
    const c = await this.queue.getJobCounts('wait', 'delayed', 'failed');
    return { ok: true, detail: `outbox: ${(c.wait ?? 0) + (c.delayed ?? 0)} waiting, ${c.failed ?? 0} dead-lettered` };
  }

  async close(): Promise<void> {
    await this.worker.close();
    await this.queue.close();
  }
}
