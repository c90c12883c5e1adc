import type { PeerCertificate } from 'node:tls';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import rhea, { type Connection, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import { DestinationUnavailable, SwitchboardError, isRetryable } from '../core/errors.ts';
import { decodeMessage, encodeMessage, type Message } from '../core/message.ts';
import { describe } from '../amqp/connection.ts';
import { decodeAmqp, type AmqpMessage } from '../amqp/mapping.ts';
import { Lease, leaseKey } from '../store/lease.ts';
import { TUNNEL_ADDRESS, TUNNEL_PROPERTY, bodyBytes, type FloatNotice, type IdentityHandover, type OutboundEnvelope } from './float-tunnel.ts';
import { certificateIdentity, identityKey } from './identity.ts';
import type { NetworkMap, Peer } from './network-map.ts';
import type { AttachmentStore } from '../attachments/attachment-store.ts';
import type { AuditLog } from '../auth/audit.ts';
import { principalId } from '../core/message.ts';
import { BrokerRejected } from '../amqp/connection.ts';
import { pullAttachment, referencedAttachments } from './float-attachment-pull.ts';
import { holdWhileUnavailable } from '../core/hold.ts';

/** Where the messages pulled from the float go: the gateway's peer intake (verify, dedup, router). */
export interface TunnelIntake {
  take(peer: Peer, target: string, amqp: AmqpMessage, stopping: () => boolean): Promise<void>;
}

/** The outbound envelope was refused by the float for good (malformed, unknown peer). */
export class FloatRefused extends SwitchboardError {
  constructor(reason: string) {
    super('float_refused', `the float refused the message: ${reason}`, 502);
  }
}

export interface FloatTunnelOptions {
  /** amqps://host:port of the float's tunnel listener. */
  url: string;
  /** The tunnel's own TLS material (PEM texts) and the subject the float's certificate must have. */
  key: string;
  cert: string;
  ca: string;
  floatSubject: string;
  /** The gateway's peer TLS key and certificate, handed to the float at every connect. */
  peerKey: string;
  peerCert: string;
  /** Messages the float may hand over before the gateway settled the first. */
  credit: number;
  map: NetworkMap;
  /** The tunnel is a singleton duty of the gateway fleet: one lease in this Redis. */
  redis: Redis;
  prefix: string;
  /** How long the lease lasts without renewal (network.float.lease). @defaultValue 6000 */
  leaseTtlMs?: number;
  /** Undeliverable outbound messages the float reports (the peer endpoint's notice). */
  onNotice: (m: Message, reason: string) => Promise<void>;
  /** Where attachments pulled from the float are stored inside (before the message that references them). */
  attachments?: AttachmentStore;
  /** Records an attachment the float altered (its hash does not match the signed reference). */
  audit?: AuditLog;
  log: Logger;
}

type Outcome = { resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout };

const SEND_TIMEOUT_MS = 15_000;

/**
 * The gateway's end of the float tunnel (docs/float.md): dials out to the float with mutual TLS,
 * accepts only a server certificate with the configured float subject, hands over the peer TLS
 * key, pulls what peers sent (credit only as fast as the inside takes it; each acknowledged only
 * after its destination durably accepted it) and pushes signed envelopes for the peers. One
 * process of the fleet holds it (lease `float-tunnel`); it reconnects with backoff.
 */
export class FloatTunnelClient {
  private connection?: Connection;
  private outbound?: Sender;
  private pieces?: Sender;
  private inbound?: Receiver;
  private ready = false;
  private lastError = 'not connected yet';
  private closing = false;
  private reconnectTimer?: NodeJS.Timeout;
  private attempt = 0;
  private readonly pending = new Map<Delivery, Outcome>();
  private lease?: Lease;
  private intake?: TunnelIntake;
  private readonly expected: string;
  /** Why the float refused this connection's key handover, kept past the close that follows. */
  private refusal?: string;
  private readonly openListeners: ((open: boolean) => void)[] = [];

  constructor(private readonly o: FloatTunnelOptions) {
    this.expected = identityKey(o.floatSubject);
  }

  /** PeerRelay: the peer outboxes deliver from this process while the tunnel is open here. */
  onOpenChange(listener: (open: boolean) => void): void {
    this.openListeners.push(listener);
  }

  private setReady(open: boolean): void {
    if (this.ready === open) return;
    this.ready = open;
    for (const l of this.openListeners) l(open);
  }

  get status(): { state: string; lastError?: string } {
    return this.ready ? { state: 'open' } : { state: 'down', lastError: this.lastError };
  }

  /** Takes the lease; while held, keeps the tunnel open and feeds pulled messages to `intake`. */
  start(intake: TunnelIntake): void {
    this.intake = intake;
    const ttlMs = this.o.leaseTtlMs ?? 6000;
    // Renewed three times per lease: one slow round does not lose it.
    this.lease = new Lease({ redis: this.o.redis, key: leaseKey(this.o.prefix, 'float-tunnel'), ttlMs, everyMs: Math.min(1000, Math.floor(ttlMs / 3)), log: this.o.log });
    this.lease.start({ acquired: () => { this.closing = false; this.connect(); }, lost: () => this.disconnect() });
  }

  private connect(): void {
    const u = new URL(this.o.url);
    const container = rhea.create_container({ id: `switchboard-gateway-tunnel-${process.pid}` });
    const c = container.connect({
      host: u.hostname, port: Number(u.port), transport: 'tls', key: this.o.key, cert: this.o.cert, ca: this.o.ca, rejectUnauthorized: true,
      ...(/^[\d.]+$|:/.test(u.hostname) ? {} : { servername: u.hostname }),
      // The network CA is not enough: the certificate must name this gateway's float.
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const got = certificateIdentity(Buffer.from(`-----BEGIN CERTIFICATE-----\n${cert.raw.toString('base64')}\n-----END CERTIFICATE-----\n`));
        return got === this.expected ? undefined : new Error(`the float presented a certificate for '${got}', expected '${this.expected}'`);
      },
      reconnect: false, idle_time_out: 10_000, username: 'anonymous',
    } as never);
    this.connection = c;
    c.on('connection_open', () => void this.handOver(c));
    c.on('disconnected', (ctx: EventContext) => this.down(c, (ctx as { error?: Error }).error?.message ?? 'disconnected'));
    c.on('connection_close', () => this.down(c, 'the float closed the tunnel'));
    c.on('connection_error', (ctx: EventContext) => { this.refusal = describe(ctx.connection.error); this.lastError = this.refusal; this.o.log.warn({ err: this.lastError }, 'float tunnel refused'); });
    c.on('sender_error', (ctx: EventContext) => { this.lastError = describe(ctx.sender?.error); });
    c.on('receiver_error', (ctx: EventContext) => { this.lastError = describe(ctx.receiver?.error); });
    c.on('error', (err: unknown) => { this.lastError = describe(err); });
    c.on('accepted', (ctx: EventContext) => this.settle(ctx.delivery, undefined));
    c.on('rejected', (ctx: EventContext) => this.settle(ctx.delivery, new FloatRefused(describe((ctx.delivery?.remote_state as { error?: unknown } | undefined)?.error) || 'rejected')));
    c.on('released', (ctx: EventContext) => this.settle(ctx.delivery, new DestinationUnavailable('float', 'the float did not take the message now')));
    c.on('modified', (ctx: EventContext) => this.settle(ctx.delivery, new DestinationUnavailable('float', 'the float did not take the message now')));
    c.on('message', (ctx: EventContext) => void this.onMessage(ctx));
  }

  /** First on every connect: the peer TLS key, then the links. */
  private async handOver(c: Connection): Promise<void> {
    try {
      const identity = c.open_sender({ target: { address: TUNNEL_ADDRESS.identity }, autosettle: true });
      const handover: IdentityHandover = { key: this.o.peerKey, cert: this.o.peerCert };
      await this.sendOn(identity, { body: JSON.stringify(handover), content_type: 'application/json' });
      identity.close();
      this.outbound = c.open_sender({ target: { address: TUNNEL_ADDRESS.outbound, durable: 2 }, autosettle: true });
      this.pieces = c.open_sender({ target: { address: TUNNEL_ADDRESS.attachments, durable: 2 }, autosettle: true });
      this.inbound = c.open_receiver({ source: { address: TUNNEL_ADDRESS.inbound, durable: 2 }, autoaccept: false, credit_window: 0 });
      this.inbound.add_credit(this.o.credit);
      this.setReady(true);
      this.attempt = 0;
      this.lastError = '';
      this.o.log.info({ float: this.o.url }, 'float tunnel open: peer key handed over, pulling inbound messages');
    } catch (err) {
      this.refusal = (err as Error).message;
      this.lastError = this.refusal;
      this.o.log.error({ err: this.lastError }, 'float tunnel: the float did not take the peer key');
      c.close();
    }
  }

  private down(c: Connection, reason: string): void {
    if (c !== this.connection) return;
    if (this.ready) this.o.log.warn({ err: reason }, 'float tunnel down; reconnecting with backoff');
    this.setReady(false);
    // A refused handover is the reason worth showing, not the close that followed it.
    this.lastError = this.refusal ?? reason;
    this.refusal = undefined;
    this.connection = undefined;
    this.outbound = undefined;
    this.pieces = undefined;
    this.inbound = undefined;
    for (const [, o] of this.pending) { clearTimeout(o.timer); o.reject(new DestinationUnavailable('float', `the tunnel went down before the float confirmed (${reason})`)); }
    this.pending.clear();
    if (this.closing) return;
    const delay = Math.min(10_000, 200 * 2 ** Math.min(this.attempt++, 6)) * (0.75 + Math.random() / 2);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => { if (!this.closing && !this.connection) this.connect(); }, delay);
    this.reconnectTimer.unref();
  }

  private settle(d: Delivery | undefined, err: Error | undefined): void {
    const o = d ? this.pending.get(d) : undefined;
    if (!o) return;
    this.pending.delete(d!);
    clearTimeout(o.timer);
    if (err) o.reject(err);
    else o.resolve();
  }

  private sendOn(s: Sender, message: Record<string, unknown>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const d = s.send(message as never);
      const timer = setTimeout(() => { this.pending.delete(d); reject(new DestinationUnavailable('float', `no settlement within ${SEND_TIMEOUT_MS} ms`)); }, SEND_TIMEOUT_MS);
      this.pending.set(d, { resolve, reject, timer });
    });
  }

  /** PeerRelay: resolves once the float stored the envelope in its outbox for the peer. */
  async relay(peerIdentity: string, m: Message, envelope: { remote: string; signature: string; origin: string }): Promise<void> {
    const s = this.outbound;
    if (!this.ready || !s) throw new DestinationUnavailable('float', `the tunnel is not open (${this.lastError || 'connecting'})`);
    if (!s.sendable()) throw new DestinationUnavailable('float', 'the float gives no credit now (its storage may be nearly full)');
    const body: OutboundEnvelope = { peer: peerIdentity, remote: envelope.remote, signature: envelope.signature, origin: envelope.origin, message: encodeMessage(m) };
    await this.sendOn(s, { body: JSON.stringify(body), content_type: 'application/json', application_properties: { [TUNNEL_PROPERTY.kind]: 'envelope' } });
  }

  /**
   * PeerRelay: one attachment piece for `peerIdentity`'s message `messageId`, resolved once stored
   * on the float. A refusal is a BrokerRejected, as from a peer, so the push handles it alike.
   */
  async pushPiece(peerIdentity: string, messageId: string, piece: Record<string, unknown>): Promise<void> {
    const s = this.pieces;
    if (!this.ready || !s) throw new DestinationUnavailable('float', `the tunnel is not open (${this.lastError || 'connecting'})`);
    const props = { ...(piece.application_properties as Record<string, unknown>), [TUNNEL_PROPERTY.hold]: `${peerIdentity}/${messageId}` };
    try {
      await this.sendOn(s, { ...piece, application_properties: props });
    } catch (err) {
      if (err instanceof FloatRefused) throw new BrokerRejected('float', TUNNEL_ADDRESS.attachments, err.message);
      throw err;
    }
  }

  /** Pulls what a peer's message references from the float into the store inside; a float that altered one is audited. */
  private async pullAttachments(c: Connection, peer: Peer, amqp: AmqpMessage): Promise<void> {
    const store = this.o.attachments;
    if (!store) return;
    for (const ref of referencedAttachments(amqp)) {
      try {
        await pullAttachment(c, store, principalId({ kind: 'peer', name: peer.identity }), ref, 1_048_576);
      } catch (err) {
        const code = (err as SwitchboardError).code;
        if (code === 'hash_mismatch' || code === 'bad_attachment_piece' || code === 'payload_too_large') {
          await this.o.audit?.record({ action: 'float.attachment-refused', actor: `peer:${peer.identity}`, target: ref.id, detail: `attachment ${ref.id} pulled from the float for a message of ${peer.alias}: ${(err as Error).message}` });
          this.o.log.error({ peer: peer.alias, attachment: ref.id, err: (err as Error).message }, 'attachment from the float refused: it does not match the signed reference');
        }
        throw err;
      }
    }
  }

  private async onMessage(ctx: EventContext): Promise<void> {
    const receiver = ctx.receiver as Receiver;
    const delivery = ctx.delivery as Delivery;
    const msg = ctx.message as unknown as { body?: unknown; application_properties?: Record<string, unknown> };
    const props = msg.application_properties ?? {};
    const stopping = () => this.closing || receiver !== this.inbound;
    try {
      const kind = props[TUNNEL_PROPERTY.kind];
      const bytes = bodyBytes(msg.body);
      if (!bytes) throw new SwitchboardError('malformed_tunnel_message', 'a tunnel message without a data section', 400);
      if (kind === 'notice') {
        const n = JSON.parse(bytes.toString('utf8')) as FloatNotice;
        await this.o.onNotice(decodeMessage(n.message), n.reason);
      } else if (kind === 'peer-message') {
        const identity = String(props[TUNNEL_PROPERTY.peer] ?? '');
        const peer = this.o.map.byIdentity(identity);
        if (!peer) throw new SwitchboardError('unknown_peer', `'${identity}' is not a peer in this gateway's network map`, 403);
        const amqp = decodeAmqp(bytes);
        // The bytes before the claim: the intake's claim check then finds them inside, hash checked.
        // Held (no credit back) while the inside cannot store them; a dropped tunnel hands the message back.
        await holdWhileUnavailable(() => this.pullAttachments(ctx.connection, peer, amqp), { stopping, firstPauseMs: 200 });
        await this.intake!.take(peer, String(props[TUNNEL_PROPERTY.target] ?? ''), amqp, stopping);
      } else {
        throw new SwitchboardError('malformed_tunnel_message', `unknown tunnel message kind '${String(kind)}'`, 400);
      }
      delivery.accept();
    } catch (err) {
      if (isRetryable(err)) delivery.release({ delivery_failed: true });
      else delivery.reject({ condition: 'amqp:not-allowed', description: (err as Error).message });
      if (!(err instanceof SwitchboardError)) this.o.log.error({ err: (err as Error).message }, 'message from the float failed');
    } finally {
      // Credit back only after the inside settled this one: a destination that holds stops the pull.
      if (!stopping()) receiver.add_credit(1);
    }
  }

  private disconnect(): void {
    this.closing = true;
    clearTimeout(this.reconnectTimer);
    const c = this.connection;
    this.setReady(false);
    if (c?.is_open()) c.close();
    else if (c) this.down(c, 'stopping');
  }

  async close(): Promise<void> {
    await this.lease?.stop();
    this.disconnect();
    const c = this.connection;
    if (c) await new Promise<void>((r) => { const t = setTimeout(r, 2000); c.once('disconnected', () => { clearTimeout(t); r(); }); c.once('connection_close', () => { clearTimeout(t); r(); }); });
    (c as unknown as { socket?: { destroy(): void } } | undefined)?.socket?.destroy();
  }
}
