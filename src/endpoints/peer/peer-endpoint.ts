import { createHash, type KeyObject } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { BrowseResult, Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import { UnknownScheme } from '../../core/errors.ts';
import { decodeMessage, encodeMessage, type Message, type StoredMessage } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { Router } from '../../core/router.ts';
import { ORIGIN_PROPERTY, SIGNATURE_PROPERTY, signEnvelope } from '../../network/envelope.ts';
import { certificateIdentity, identityKey } from '../../network/identity.ts';
import { Broker, BrokerRejected } from '../../amqp/connection.ts';
import { toAmqp } from '../../amqp/mapping.ts';
import type { NetworkMap } from '../../network/network-map.ts';


export interface PeerEndpointOptions {
  redis: Redis;
  prefix: string;
  map: NetworkMap;
  /** This gateway's identity, TLS material and signing key. */
  identity: string;
  key: string;
  cert: string;
  ca: string;
  signingKey: KeyObject;
  /** A message not delivered within this long goes to dlq:peer:<alias>/… with a notice. */
  eventHorizonMs: number;
  /** Where notices of undeliverable peer messages go when the sender was not a flow. */
  noticesTo?: string;
  router: Router;
  metrics: Metrics;
  log: Logger;
}

type Job = { message: StoredMessage; remote: string; signature: string };

/**
 * `peer:<alias>/<address>` — a durable outbox per peer, drained by a bridge that connects with
 * mutual TLS to wherever the network map says the peer is, accepts the connection only if the
 * server certificate's subject is the peer's identity, and sends with settlement. Offline peers
 * are retried with capped, jittered exponential backoff until the event horizon.
 */
export class PeerEndpoint implements Endpoint {
  readonly scheme = 'peer';
  readonly dedupsOnIngress = true;
  private readonly queues = new Map<string, Queue<Job>>();
  private readonly workers = new Map<string, Worker<Job>>();
  private readonly bridges = new Map<string, Broker>();

  constructor(private readonly o: PeerEndpointOptions) {
    o.map.on('peer-changed', (alias: string) => void this.reconnect(alias));
  }

  private split(address: string): { alias: string; remote: string } {
    const rest = address.slice('peer:'.length);
    const slash = rest.indexOf('/');
    const alias = rest.slice(0, slash);
    if (!this.o.map.get(alias)) throw new UnknownScheme(`peer:${alias}`, this.o.map.aliases.map((a) => `peer:${a}`));
    return { alias, remote: rest.slice(slash + 1) };
  }

  private queue(alias: string): Queue<Job> {
    let q = this.queues.get(alias);
    if (!q) {
      q = new Queue<Job>(`{peer-out.${alias}}`, { connection: this.o.redis, prefix: this.o.prefix });
      q.on('error', (err) => this.o.log.error({ err: err.message, peer: alias }, 'peer outbox error'));
      this.queues.set(alias, q);
      this.worker(alias);
    }
    return q;
  }

  private bridge(alias: string): Broker {
    let b = this.bridges.get(alias);
    if (!b) {
      const peer = this.o.map.get(alias);
      if (!peer) throw new UnknownScheme(`peer:${alias}`, this.o.map.aliases.map((a) => `peer:${a}`));
      const expected = identityKey(peer.identity);
      b = new Broker({
        name: `peer:${alias}`, url: `amqps://${peer.host}:${peer.port}`, sasl: 'ANONYMOUS', addressFormat: 'plain', sendTimeoutMs: 15_000,
        containerId: `switchboard ${this.o.identity}`,
        tls: { key: this.o.key, cert: this.o.cert, ca: this.o.ca, rejectUnauthorized: true },
        // Any certificate from the network CA is not enough: it must name this peer's identity.
        tlsExtra: {
          checkServerIdentity: (_host: string, cert: PeerCertificate) => {
            const got = certificateIdentity(Buffer.from(`-----BEGIN CERTIFICATE-----\n${cert.raw.toString('base64')}\n-----END CERTIFICATE-----\n`));
            return got === expected ? undefined : new Error(`peer '${alias}' presented a certificate for '${got}', expected '${expected}'`);
          },
        },
      }, this.o.log);
      b.start();
      this.bridges.set(alias, b);
    }
    return b;
  }

  private async reconnect(alias: string): Promise<void> {
    const b = this.bridges.get(alias);
    this.bridges.delete(alias);
    if (b) await b.close().catch(() => {});
    this.o.log.info({ peer: alias }, 'peer moved or changed in the network map; reconnecting');
  }

  private worker(alias: string): void {
    const w = new Worker<Job>(`{peer-out.${alias}}`, async (job) => {
      const m = decodeMessage(job.data.message);
      if (Date.now() - Date.parse(m.createdAt) > this.o.eventHorizonMs) {
        throw new UnrecoverableError(`not delivered to peer ${alias} within the event horizon (${Math.round(this.o.eventHorizonMs / 60_000)} min)`);
      }
      const amqp = toAmqp(m);
      (amqp.application_properties as Record<string, string>)[SIGNATURE_PROPERTY] = job.data.signature;
      (amqp.application_properties as Record<string, string>)[ORIGIN_PROPERTY] = this.o.identity;
      try {
        await this.bridge(alias).send(job.data.remote, amqp);
      } catch (err) {
        // The peer refused this message (rights, signature): trying again would not change that.
        if (err instanceof BrokerRejected) throw new UnrecoverableError(err.message);
        throw err;
      }
      this.o.metrics.messagesOut.inc({ endpoint: 'peer' });
    }, {
      connection: this.o.redis,
      prefix: this.o.prefix,
      concurrency: 20,
      settings: {
        // Exponential, capped at 5 minutes, with jitter so many gateways do not retry in step.
        backoffStrategy: (attempts: number) => Math.min(300_000, 500 * 2 ** Math.min(attempts, 20)) * (0.5 + Math.random() / 2),
      },
    });
    w.on('error', (err) => this.o.log.error({ err: err.message, peer: alias }, 'peer bridge error'));
    w.on('failed', (job, err) => {
      if (!job) return;
      const final = err instanceof UnrecoverableError || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      if (!final) return;
      this.o.metrics.deadLettered.inc({ endpoint: 'peer' });
      this.o.log.error({ peer: alias, msgId: job.data.message.id, err: err.message }, 'peer message dead-lettered');
      void this.notice(decodeMessage(job.data.message), err.message);
    });
    this.workers.set(alias, w);
  }

  /** Tells the sending flow (or the admins' address) that a message could not be delivered. */
  private async notice(m: Message, reason: string): Promise<void> {
    const to = m.from?.startsWith('flow:') && m.from.includes('/') ? m.from : this.o.noticesTo;
    if (!to) return;
    await this.o.router.send({
      id: `undeliverable:${m.id}`, to, from: m.to, sender: { kind: 'system', name: 'switchboard' }, headers: { 'switchboard-notice': 'undeliverable' },
      contentType: 'application/json', body: { notice: 'undeliverable', id: m.id, to: m.to, reason, deadLetter: `dlq:${m.to}` }, createdAt: new Date().toISOString(),
      ...(m.correlationId ? { correlationId: m.correlationId } : {}),
    }).catch((err) => this.o.log.error({ err: (err as Error).message, msgId: m.id }, 'notice of an undeliverable peer message not sent'));
  }

  async send(message: Message): Promise<SendResult> {
    const { alias, remote } = this.split(message.to);
    const signature = signEnvelope(this.o.signingKey, message, remote, this.o.identity);
    const jobId = `p${createHash('sha256').update(`${message.id}\0${process.hrtime.bigint()}`).digest('base64url').slice(0, 16)}`;
    const job = await this.queue(alias).add('out', { message: encodeMessage(message), remote, signature }, {
      jobId,
      attempts: 1_000_000,
      backoff: { type: 'custom' },
      removeOnComplete: true,
      removeOnFail: false,
      deduplication: { id: createHash('sha256').update(`${message.to}\0${message.id}`).digest('hex'), ttl: this.o.eventHorizonMs },
    });
    return { id: message.id, duplicate: job.id !== jobId };
  }

  /** Outbox depth per peer (for /metrics and the admin page). */
  async depths(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const alias of this.o.map.aliases) {
      const c = await this.queue(alias).getJobCounts('wait', 'delayed', 'active');
      out[alias] = (c.wait ?? 0) + (c.delayed ?? 0) + (c.active ?? 0);
    }
    return out;
  }

  states(): { alias: string; state: string; lastError?: string }[] {
    return this.o.map.aliases.map((alias) => ({ alias, ...(this.bridges.get(alias)?.status ?? { state: 'idle' }) }));
  }

  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    const { alias } = this.split(address);
    const failed = (await this.queue(alias).getFailed(0, 1000)).filter((j) => j && j.data.message.to === address);
    return { address: `dlq:${address}`, depth: failed.length, messages: failed.slice(0, limit).map((j) => ({ ...decodeMessage(j.data.message), deadLetter: { reason: j.failedReason, attempts: j.attemptsMade } })) };
  }

  async replayDeadLetters(address: string, ids?: string[]): Promise<{ replayed: number }> {
    const { alias } = this.split(address);
    let replayed = 0;
    for (const j of await this.queue(alias).getFailed(0, 1000)) {
      if (j && j.data.message.to === address && (!ids || ids.includes(j.data.message.id))) {
        await j.retry('failed', { resetAttemptsMade: true });
        replayed++;
      }
    }
    return { replayed };
  }

  async health(): Promise<HealthReport> {
    const depths = await this.depths();
    return { ok: true, detail: this.states().map((s) => `${s.alias}: ${s.state}, outbox ${depths[s.alias] ?? 0}${s.lastError ? ` (${s.lastError})` : ''}`).join('; ') || 'no peers' };
  }

  async start(): Promise<void> {
    for (const alias of this.o.map.aliases) this.queue(alias);
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.close()));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    await Promise.all([...this.bridges.values()].map((b) => b.close()));
  }
}
