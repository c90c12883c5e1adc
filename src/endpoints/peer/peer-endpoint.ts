import type { KeyObject } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { BeforeReplay, BrowseResult, Endpoint, HealthReport, ReplayResult, SendResult } from '../../core/endpoint.ts';
import { SwitchboardError, UnknownTarget } from '../../core/errors.ts';
import type { Message } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { RecordLifecycle } from '../../core/lifecycle.ts';
import { type OutboxStatus, Outbox, Undeliverable } from '../../core/outbox.ts';
import { systemCaller, systemMessage } from '../../core/system-message.ts';
import type { Router } from '../../core/router.ts';
import { ORIGIN_PROPERTY, SIGNATURE_PROPERTY, signEnvelope } from '../../network/envelope.ts';
import { certificateIdentity, identityKey } from '../../network/identity.ts';
import { Broker, BrokerRejected, type BrokerConfig } from '../../amqp/connection.ts';
import { toAmqp } from '../../amqp/mapping.ts';
import type { NetworkMap } from '../../network/network-map.ts';
import { proxiedTlsDial, type ProxyConfig } from '../../network/proxy-dialer.ts';
import type { RevocationList } from '../../network/revocation.ts';
import { Lease, leaseKey } from '../../store/lease.ts';
import type { AttachmentStore } from '../../attachments/attachment-store.ts';
import { ATTACHMENTS_HEADER, parseAttachmentRefs, type AttachmentRef } from '../../attachments/reference.ts';
import type { AmqpMessage } from '../../amqp/mapping.ts';
import { pushAttachments } from './attachment-push.ts';
import { NOTICE_ADDRESS, type PeerNotices, type RefusalNotice } from '../../network/peer-notices.ts';

/** `peer:<alias>/$notices` is Switchboard's own: nobody may send there by hand. */
export class ReservedPeerAddress extends SwitchboardError {
  constructor(address: string) {
    super('reserved_address', `${address} is reserved for the notices Switchboard itself sends to a peer; send to an address in the peer's own address space`, 403);
  }
}

export interface PeerEndpointOptions {
  redis: Redis;
  prefix: string;
  /** Hash tags the outbox is spread over (redis.shards). @defaultValue 1 */
  shards?: number;
  map: NetworkMap;
  /** This gateway's identity, TLS material and signing key. */
  identity: string;
  key: string;
  cert: string;
  ca: string;
  /** Absent on a float, which only forwards envelopes the gateway signed (sendSigned). */
  signingKey?: KeyObject;
  /** The CRL check (network.crl): a revoked peer's server certificate is refused, and an open bridge to it closed. */
  revocation?: RevocationList;
  /** network.proxy: bridges connect through this HTTP CONNECT or SOCKS5 proxy. @defaultValue direct */
  proxy?: ProxyConfig;
  /**
   * Lock and stalled check of the outbox deliveries (queues.lockTimeout, queues.stalledCheck): when
   * the process holding a bridge or the float tunnel dies mid-delivery, the next holder takes that
   * message over after at most their sum. @defaultValue BullMQ's (30 s each)
   */
  lockMs?: number;
  stalledCheckMs?: number;
  /** A message not delivered within this long goes to dlq:peer:<alias>/… with a notice. */
  eventHorizonMs: number;
  /** Where notices of undeliverable peer messages go when the sender was not a flow. */
  noticesTo?: string;
  /** Where notices go (a gateway); absent on a float, which passes them on through `notify`. */
  router?: Router;
  /** Replaces the notice through the router (the float hands it to its gateway). */
  notify?: (m: Message, reason: string) => Promise<void>;
  /** Hands outbound envelopes to a float instead of dialing the peers (network.float). */
  relay?: PeerRelay;
  /**
   * Stores the events of each dead letter, `switchboard.message.dead-lettered` and
   * `switchboard.peer.undeliverable`, read back from the outbox's failed set (see Outbox).
   * @defaultValue undefined (no such event mapped)
   */
  deadLetterEvents?: RecordLifecycle;
  metrics: Metrics;
  log: Logger;
  /** Where attachments referenced by messages are kept; they are pushed to the peer before their message. */
  attachments?: AttachmentStore;
  /** Where outbound revocation refusals are recorded (`peer.revoked`, once per refusal, not per retry): the gateway's audit trail. */
  audit?: { record(entry: { action: string; actor: string; target?: string; detail?: string }): Promise<void> };
  /** Told once a message that references attachments reached the peer (the float then drops its copies). */
  delivered?: (alias: string, m: Message, refs: readonly AttachmentRef[]) => Promise<void>;
}

/**
 * Computed at send time and stored with the message: the signature covers the remote address.
 * `origin` is the signing gateway when it is not this process (on a float).
 */
export type Envelope = { remote: string; signature: string; origin?: string };

/** Carries signed envelopes to the peers on this gateway's behalf: the float tunnel. */
export interface PeerRelay {
  /** Resolves once the relay durably holds the envelope; throws retryable while it cannot. */
  relay(peerIdentity: string, m: Message, envelope: Envelope & { origin: string }): Promise<void>;
  readonly status: { state: string; lastError?: string };
  /** Calls `listener` with true whenever the relay opens in this process, false when it closes. */
  onOpenChange(listener: (open: boolean) => void): void;
  /** One attachment piece for the peer's message, resolved once the relay stored it (before the message). */
  pushPiece(peerIdentity: string, messageId: string, piece: Record<string, unknown>): Promise<void>;
}

/** Exponential, capped at 5 minutes, with jitter so many gateways do not retry an offline peer in step. */
const peerBackoff = (attempt: number) => Math.min(300_000, 500 * 2 ** Math.min(attempt, 20)) * (0.5 + Math.random() / 2);

/**
 * `peer:<alias>/<address>` — a durable outbox per peer, drained by a bridge that connects with
 * mutual TLS to wherever the network map says the peer is, accepts the connection only if the
 * server certificate's subject is the peer's identity, and sends with settlement. Offline peers
 * are retried with capped, jittered exponential backoff until the event horizon.
 *
 * Every process stores into a peer's outbox; one process of the fleet drains it and holds the
 * bridge — the holder of the lease `<prefix>:lease:peer-bridge:<alias>`. When it dies another
 * takes the lease within seconds and connects; a process that loses it stops delivering and
 * closes its bridge, so a peer never sees two bridges of one gateway fleet.
 */
export class PeerEndpoint implements Endpoint, PeerNotices {
  readonly scheme = 'peer';
  readonly dedupsOnIngress = true;
  private readonly outboxes = new Map<string, Outbox<Envelope>>();
  private readonly bridges = new Map<string, Broker>();
  private readonly leases = new Map<string, Lease>();
  /** The server certificate each open bridge was accepted with, checked again after every CRL refresh. */
  private readonly serverCerts = new Map<string, Buffer>();
  /** Peers whose certificate is refused now: audited once when refused, again only after a good connect. */
  private readonly refusedRevoked = new Set<string>();

  private tlsKey: string;
  private tlsCert: string;

  constructor(private readonly o: PeerEndpointOptions) {
    this.tlsKey = o.key;
    this.tlsCert = o.cert;
    o.map.on('peer-changed', (alias: string) => void this.reconnect(alias));
    o.revocation?.on('changed', () => this.recheckRevocation());
  }

  /** After a CRL refresh: a bridge to a peer revoked since is closed; its next connect is refused. */
  private recheckRevocation(): void {
    for (const [alias, raw] of this.serverCerts) {
      const reason = this.o.revocation?.check(raw);
      if (reason === undefined) continue;
      this.serverCerts.delete(alias);
      this.o.log.error({ peer: alias, reason }, 'bridge to peer closed: its certificate may not be used');
      this.auditRevoked(alias, `outbound bridge to ${alias} closed: ${reason}`);
      void this.reconnect(alias, false);
    }
  }

  /** One audit entry per refusal period of a peer (a bridge retries with backoff; the trail need not). */
  private auditRevoked(alias: string, detail: string): void {
    if (this.refusedRevoked.has(alias)) return;
    this.refusedRevoked.add(alias);
    const identity = this.o.map.get(alias)?.identity ?? alias;
    void this.o.audit?.record({ action: 'peer.revoked', actor: `peer:${identity}`, target: `peer:${alias}`, detail }).catch((err: Error) => this.o.log.error({ peer: alias, err: err.message }, 'revocation refusal not audited'));
  }

  private split(address: string): { alias: string; remote: string } {
    const rest = address.slice('peer:'.length);
    const slash = rest.indexOf('/');
    const alias = rest.slice(0, slash);
    if (!this.o.map.get(alias)) throw new UnknownTarget(address, `peer with the alias '${alias}' in the network map`, this.o.map.aliases.map((a) => `peer:${a}`));
    return { alias, remote: rest.slice(slash + 1) };
  }

  checkTarget(address: string): void {
    this.split(address);
  }

  private outbox(alias: string): Outbox<Envelope> {
    let q = this.outboxes.get(alias);
    if (!q) {
      q = new Outbox<Envelope>({
        name: `peer-out.${alias}`, redis: this.o.redis, prefix: this.o.prefix, shards: this.o.shards ?? 1, label: 'peer', metrics: this.o.metrics, log: this.o.log,
        // Offline peers are retried until the event horizon, which deliver() enforces.
        maxAttempts: 1_000_000, backoffStrategy: peerBackoff, dedupTtlMs: this.o.eventHorizonMs, concurrency: 20,
        ...(this.o.lockMs ? { lockMs: this.o.lockMs } : {}), ...(this.o.stalledCheckMs ? { stalledCheckMs: this.o.stalledCheckMs } : {}),
        deliver: (m, envelope) => this.deliver(alias, m, envelope),
        ...(this.o.deadLetterEvents ? {
          deadLetterEvents: {
            record: this.o.deadLetterEvents,
            alsoReport: (d) => [{ type: 'switchboard.peer.undeliverable', subject: d.address, key: d.key, data: { alias, address: d.address, messageId: d.messageId, reason: d.reason } }],
          },
        } : {}),
        onDeadLetter: (m, reason) => this.notice(m, reason),
        deliverHere: false,
      });
      this.outboxes.set(alias, q);
      const outbox = q;
      const relay = this.o.relay;
      if (relay) {
        // Through a float, the process that holds the tunnel delivers every peer's outbox; the
        // others only store. A tunnel that is down leaves the messages waiting here.
        relay.onOpenChange((open) => (open ? outbox.startDelivering() : void outbox.stopDelivering()));
        if (relay.status.state === 'open') outbox.startDelivering();
        return q;
      }
      const lease = new Lease({ redis: this.o.redis, key: leaseKey(this.o.prefix, `peer-bridge:${alias}`), log: this.o.log });
      this.leases.set(alias, lease);
      lease.start({
        acquired: () => outbox.startDelivering(),
        lost: async () => {
          await outbox.stopDelivering();
          const b = this.bridges.get(alias);
          this.bridges.delete(alias);
          if (b) await b.close().catch(() => {});
        },
      });
    }
    return q;
  }

  private bridge(alias: string): Broker {
    let b = this.bridges.get(alias);
    if (!b) {
      const peer = this.o.map.get(alias);
      if (!peer) throw new UnknownTarget(`peer:${alias}`, `peer with the alias '${alias}' in the network map`, this.o.map.aliases.map((a) => `peer:${a}`));
      const expected = identityKey(peer.identity);
      b = new Broker({
        name: `peer:${alias}`, url: `amqps://${peer.host}:${peer.port}`, sasl: 'ANONYMOUS', addressFormat: 'plain', sendTimeoutMs: 15_000,
        containerId: `switchboard ${this.o.identity}`,
        // A peer that refuses us now (it sees our certificate revoked, its map lacks us yet) may
        // take us later: keep trying with backoff, as for a peer that is down.
        retryRefused: true,
        // Through the proxy, TLS runs inside the tunnel: the peer's certificate is checked as when direct.
        ...(this.o.proxy ? { dial: proxiedTlsDial(this.o.proxy) as BrokerConfig['dial'] } : {}),
        tls: { key: this.tlsKey, cert: this.tlsCert, ca: this.o.ca, rejectUnauthorized: true },
        // Any certificate from the network CA is not enough: it must name this peer's identity.
        tlsExtra: {
          checkServerIdentity: (_host: string, cert: PeerCertificate) => {
            const got = certificateIdentity(Buffer.from(`-----BEGIN CERTIFICATE-----\n${cert.raw.toString('base64')}\n-----END CERTIFICATE-----\n`));
            if (got !== expected) return new Error(`peer '${alias}' presented a certificate for '${got}', expected '${expected}'`);
            const revoked = this.o.revocation?.check(cert.raw);
            if (revoked !== undefined) {
              this.auditRevoked(alias, `outbound bridge to ${alias} refused: ${revoked}`);
              return new Error(`peer '${alias}' (${peer.identity}): ${revoked}`);
            }
            this.refusedRevoked.delete(alias);
            this.serverCerts.set(alias, cert.raw);
            return undefined;
          },
        },
      }, this.o.log);
      b.start();
      this.bridges.set(alias, b);
    }
    return b;
  }

  private async reconnect(alias: string, moved = true): Promise<void> {
    const b = this.bridges.get(alias);
    this.bridges.delete(alias);
    this.serverCerts.delete(alias);
    if (b) await b.close().catch(() => {});
    if (moved) this.o.log.info({ peer: alias }, 'peer moved or changed in the network map; reconnecting');
  }

  private async deliver(alias: string, m: Message, envelope: Envelope): Promise<void> {
    if (Date.now() - Date.parse(m.createdAt) > this.o.eventHorizonMs) {
      throw new Undeliverable(`not delivered to peer ${alias} within the event horizon (${Math.round(this.o.eventHorizonMs / 60_000)} min)`);
    }
    const refs = parseAttachmentRefs(m.headers[ATTACHMENTS_HEADER]);
    if (refs.length > 0 && this.o.attachments) {
      const relay = this.o.relay;
      const identity = this.o.map.get(alias)?.identity ?? alias;
      // Through a float, the acknowledged offset is kept per message: the float drops its copy once
      // that message is delivered, so another message's push must not count on it.
      const send = relay
        ? (_address: string, piece: Record<string, unknown>) => relay.pushPiece(identity, m.id, piece)
        : (address: string, piece: Record<string, unknown>) => this.bridge(alias).send(address, piece as AmqpMessage);
      try {
        await pushAttachments(this.o.attachments, relay ? `float:${alias}/${m.id}` : alias, refs, send);
      } catch (err) {
        if (err instanceof BrokerRejected) throw new Undeliverable(err.message);
        throw err;
      }
    }
    const origin = envelope.origin ?? this.o.identity;
    if (this.o.relay) {
      const peer = this.o.map.get(alias);
      if (!peer) throw new Undeliverable(`peer ${alias} is no longer in the network map`);
      return this.o.relay.relay(peer.identity, m, { ...envelope, origin });
    }
    const amqp = toAmqp(m);
    (amqp.application_properties as Record<string, string>)[SIGNATURE_PROPERTY] = envelope.signature;
    (amqp.application_properties as Record<string, string>)[ORIGIN_PROPERTY] = origin;
    try {
      await this.bridge(alias).send(envelope.remote, amqp);
    } catch (err) {
      // The peer refused this message (rights, signature): trying again would not change that.
      if (err instanceof BrokerRejected) throw new Undeliverable(err.message);
      throw err;
    }
    if (refs.length > 0) await this.o.delivered?.(alias, m, refs).catch((err) => this.o.log.warn({ err: (err as Error).message, msgId: m.id }, 'attachments of a delivered message not released (they expire instead)'));
  }

  /** Tells the sending flow (or the admins' address) that a message could not be delivered (it is in the dead-letter queue here). */
  async notice(m: Message, reason: string): Promise<void> {
    if (this.o.notify) return this.o.notify(m, reason).catch((err) => this.o.log.error({ err: (err as Error).message, msgId: m.id }, 'notice of an undeliverable peer message not passed on'));
    await this.sendNotice(m, reason, true).catch((err) => this.o.log.error({ err: (err as Error).message, msgId: m.id }, 'notice of an undeliverable peer message not sent'));
  }

  /** The undeliverable notice, to the sending flow instance or else network.noticesTo; nothing when neither. */
  private async sendNotice(m: Pick<Message, 'id' | 'to' | 'from' | 'correlationId'>, reason: string, deadLettered: boolean): Promise<void> {
    const to = m.from?.startsWith('flow:') && m.from.includes('/') ? m.from : this.o.noticesTo;
    if (!to || !this.o.router) return;
    await this.o.router.send(systemMessage({
      id: `undeliverable:${m.id}`, to, from: m.to, headers: { 'switchboard-notice': 'undeliverable' },
      body: { notice: 'undeliverable', id: m.id, to: m.to, reason, ...(deadLettered ? { deadLetter: `dlq:${m.to}` } : {}) },
      ...(m.correlationId ? { correlationId: m.correlationId } : {}),
    }), systemCaller());
  }

  async send(message: Message): Promise<SendResult> {
    const { alias, remote } = this.split(message.to);
    if (remote === NOTICE_ADDRESS && message.sender.kind !== 'system') throw new ReservedPeerAddress(message.to);
    if (!this.o.signingKey) throw new Error('this peer endpoint has no signing key (a float forwards with sendSigned)');
    const signature = signEnvelope(this.o.signingKey, message, remote, this.o.identity);
    // A flow waits for its notices: kept for the event horizon, so a refusal the peer reports later
    // (through its float) reaches the flow that sent, and only that flow. Written first: a resend
    // after a failure here writes the same again, and a record without its message is harmless.
    if (message.from?.startsWith('flow:') && message.from.includes('/')) {
      await this.o.redis.set(this.sentKey(alias, message.id), JSON.stringify({ from: message.from, to: message.to, ...(message.correlationId ? { correlationId: message.correlationId } : {}) }), 'PX', this.o.eventHorizonMs);
    }
    return this.outbox(alias).send(message, { remote, signature });
  }

  private sentKey(alias: string, id: string): string {
    return `${this.o.prefix}:peer-sent:${alias}:${id}`;
  }

  /** PeerNotices: the inside refused a message the peer sent through our float; the notice goes back signed, through the outbox. */
  async tellRefused(alias: string, messageId: string, target: string, reason: string): Promise<void> {
    const body: RefusalNotice = { notice: 'undeliverable', id: messageId, to: target, reason };
    await this.send(systemMessage({ id: `refused:${messageId}`, to: `peer:${alias}/${NOTICE_ADDRESS}`, headers: { 'switchboard-notice': 'refused' }, body }));
  }

  /**
   * PeerNotices: the peer refused our message after its float accepted it. The notice goes where
   * our own outbox would send it: to the flow that sent the message (only when we recorded that it
   * did send that id to this peer), else to network.noticesTo. Nothing was dead-lettered here: the
   * message had left the outbox.
   */
  async refusedByPeer(alias: string, notice: RefusalNotice): Promise<void> {
    const to = `peer:${alias}/${notice.to}`;
    const raw = await this.o.redis.get(this.sentKey(alias, notice.id));
    const sent = raw ? JSON.parse(raw) as { from: string; to: string; correlationId?: string } : undefined;
    const mine = sent && sent.to === to ? sent : undefined;
    const reason = `refused by peer ${alias} after its float accepted it: ${notice.reason}`;
    this.o.log.warn({ peer: alias, msgId: notice.id, to, reason: notice.reason }, 'a peer refused one of our messages after its float accepted it');
    // Stored (awaited) before the notice is taken: a crash here leaves the peer's notice unacknowledged,
    // offered again, and the same key makes the second event a duplicate.
    await this.o.deadLetterEvents?.({ type: 'switchboard.peer.undeliverable', subject: to, key: `${to}\0${notice.id}\0refused`, data: { alias, address: to, messageId: notice.id, reason } });
    // Not swallowed: a notice that cannot be stored now leaves the peer's message unacknowledged, offered again.
    await this.sendNotice({ id: notice.id, to, ...(mine ? { from: mine.from, ...(mine.correlationId ? { correlationId: mine.correlationId } : {}) } : {}) }, reason, false);
  }

  /** Stores an envelope another process signed (the float, for its gateway) for delivery to `alias`. */
  async sendSigned(alias: string, message: Message, envelope: Envelope): Promise<SendResult> {
    if (!this.o.map.get(alias)) throw new UnknownTarget(`peer:${alias}`, `peer with the alias '${alias}' in the network map`, this.o.map.aliases.map((a) => `peer:${a}`));
    return this.outbox(alias).send(message, envelope);
  }

  /** A new TLS key and certificate (a float gets them from its gateway): open bridges reconnect with them. */
  async setTls(key: string, cert: string): Promise<void> {
    if (key === this.tlsKey && cert === this.tlsCert) return;
    this.tlsKey = key;
    this.tlsCert = cert;
    for (const alias of [...this.bridges.keys()]) await this.reconnect(alias, false);
  }

  /** Outbox depth per peer (for /metrics and the admin page). */
  async depths(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const alias of this.o.map.aliases) out[alias] = await this.outbox(alias).depth();
    return out;
  }

  /** The outbox of one peer as the console shows it. */
  outboxStatus(alias: string): Promise<OutboxStatus> {
    return this.outbox(alias).status();
  }

  states(): { alias: string; state: string; lastError?: string }[] {
    const relay = this.o.relay?.status;
    return this.o.map.aliases.map((alias) => ({ alias, ...(relay ? { ...relay, state: `via float: ${relay.state}` } : this.bridges.get(alias)?.status ?? { state: 'idle' }) }));
  }

  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    return this.outbox(this.split(address).alias).deadLetters(address, limit);
  }

  async replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    return this.outbox(this.split(address).alias).replayDeadLetters(address, ids, before);
  }

  async health(): Promise<HealthReport> {
    const depths = await this.depths();
    return { ok: true, detail: this.states().map((s) => `${s.alias}: ${s.state}, outbox ${depths[s.alias] ?? 0}${s.lastError ? ` (${s.lastError})` : ''}`).join('; ') || 'no peers' };
  }

  async start(): Promise<void> {
    for (const alias of this.o.map.aliases) this.outbox(alias);
  }

  /** True while this process holds the bridge to `alias` (the lease on its duty). */
  holdsBridge(alias: string): boolean {
    return this.leases.get(alias)?.held ?? false;
  }

  async close(): Promise<void> {
    await Promise.all([...this.leases.values()].map((l) => l.stop()));
    await Promise.all([...this.outboxes.values()].map((q) => q.close()));
    await Promise.all([...this.bridges.values()].map((b) => b.close()));
  }
}
