import type { Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import rhea, { type Connection, type Delivery, type EventContext, type Sender } from 'rhea';
import type { AuditLog } from '../auth/audit.ts';
import { SwitchboardError, isRetryable } from '../core/errors.ts';
import { describe } from '../amqp/connection.ts';
import { TUNNEL_ADDRESS, TUNNEL_PROPERTY, bodyBytes, parseAttachmentSource, type IdentityHandover, type OutboundEnvelope } from '../network/float-tunnel.ts';
import { certificateIdentity, identityKey } from '../network/identity.ts';
import type { FloatInbox } from './float-inbox.ts';
import type { FloatAttachments } from './float-attachments.ts';
import { AttachmentRestart } from '../attachments/errors.ts';
import { RESTART_CONDITION } from '../network/attachment-transfer.ts';

export interface TunnelServerOptions {
  host: string;
  port: number;
  /** The float's tunnel key, certificate and the CA of the gateway's tunnel certificate (PEM texts). */
  key: string;
  cert: string;
  ca: string;
  /** The only client subject accepted: the gateway's tunnel certificate. */
  gatewaySubject: string;
  inbox: FloatInbox;
  /** The gateway handed over its peer TLS key: resolves once the peer listener runs with it. */
  onIdentity: (h: IdentityHandover) => Promise<void>;
  /** A signed envelope for a peer: resolves once stored in the float's outbox. */
  onOutbound: (e: OutboundEnvelope) => Promise<void>;
  /** Attachments through the float: pieces the gateway pushes, pieces it pulls. */
  attachments: FloatAttachments;
  audit: AuditLog;
  log: Logger;
}

/**
 * The float's end of the tunnel: listens (mutual TLS) for its one gateway, whose certificate must
 * carry the configured subject; everything else is refused and audited. The float never dials
 * anything inside. A newer tunnel connection replaces an older one (the gateway restarted or its
 * lease moved); what the older one had not acknowledged goes back to the front of the store.
 */
export class TunnelServer {
  private server?: Server;
  private current?: Connection;
  private readonly identified = new WeakSet<Connection>();
  private readonly entries = new WeakMap<Delivery, string>();
  private readonly inFlight = new Map<Connection, Set<string>>();
  private readonly sockets = new Set<Socket>();
  /** The attachments a peer pushed for each entry out with the gateway: deleted here once it took the entry. */
  private readonly attachmentsOf = new Map<string, string[]>();
  private readonly pullers = new Set<Sender>();
  private readonly pumping = new WeakSet<Sender>();
  private timer?: NodeJS.Timeout;
  private readonly expected: string;

  constructor(private readonly o: TunnelServerOptions) {
    this.expected = identityKey(o.gatewaySubject);
  }

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? this.o.port;
  }

  /** True while the tunnel listener accepts connections. */
  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  /** True while a gateway is connected and has handed over its key. */
  get gatewayConnected(): boolean {
    return this.current !== undefined && this.identified.has(this.current);
  }

  async start(): Promise<void> {
    const container = rhea.create_container({ id: 'switchboard-float-tunnel' });
    container.sasl_server_mechanisms.enable_anonymous();
    container.on('connection_open', (ctx: EventContext) => this.onOpen(ctx.connection));
    container.on('receiver_open', (ctx: EventContext) => {
      const r = ctx.receiver!;
      const address = (r as unknown as { remote: { attach: { target?: { address?: string } } } }).remote.attach.target?.address;
      r.set_target({ address } as never);
      if (ctx.connection !== this.current) return void r.close({ condition: 'amqp:unauthorized-access', description: 'not the current gateway tunnel' });
      if (address === TUNNEL_ADDRESS.identity) r.add_credit(1);
      else if (address === TUNNEL_ADDRESS.outbound) r.add_credit(20);
      else if (address === TUNNEL_ADDRESS.attachments) r.add_credit(1);
      else r.close({ condition: 'amqp:not-found', description: `the float takes only ${TUNNEL_ADDRESS.identity}, ${TUNNEL_ADDRESS.outbound} and ${TUNNEL_ADDRESS.attachments}` });
    });
    container.on('sender_open', (ctx: EventContext) => {
      const s = ctx.sender!;
      const address = (s as unknown as { remote: { attach: { source?: { address?: string } } } }).remote.attach.source?.address;
      s.set_source({ address } as never);
      const pull = parseAttachmentSource(address);
      if (address !== TUNNEL_ADDRESS.inbound && !pull) return void s.close({ condition: 'amqp:not-found', description: `the float offers only ${TUNNEL_ADDRESS.inbound} and switchboard-float/attachment/<id>/<from>` });
      if (!this.identified.has(ctx.connection) || ctx.connection !== this.current) return void s.close({ condition: 'amqp:precondition-failed', description: `hand over the peer key on ${TUNNEL_ADDRESS.identity} first` });
      if (pull) {
        return void this.o.attachments.serve(s, pull.id, pull.from).catch((err) => {
          this.o.log.error({ err: (err as Error).message, attachment: pull.id }, 'attachment pull failed: the gateway tries again');
          if (!s.is_closed()) s.close({ condition: 'amqp:internal-error', description: 'the float could not read the attachment now' });
        });
      }
      this.pullers.add(s);
      void this.pump(s);
    });
    container.on('sendable', (ctx: EventContext) => { if (this.pullers.has(ctx.sender!)) void this.pump(ctx.sender!); });
    container.on('sender_close', (ctx: EventContext) => this.pullers.delete(ctx.sender!));
    container.on('message', (ctx: EventContext) => void this.onMessage(ctx));
    container.on('accepted', (ctx: EventContext) => void this.settled(ctx, 'accepted'));
    container.on('rejected', (ctx: EventContext) => void this.settled(ctx, 'rejected'));
    container.on('released', (ctx: EventContext) => void this.settled(ctx, 'released'));
    container.on('modified', (ctx: EventContext) => void this.settled(ctx, 'released'));
    // A clean close and a lost socket alike hand back what the gateway had not acknowledged.
    container.on('connection_close', (ctx: EventContext) => void this.onGone(ctx.connection));
    container.on('disconnected', (ctx: EventContext) => void this.onGone(ctx.connection));
    container.on('connection_error', (ctx: EventContext) => this.o.log.debug({ err: describe(ctx.connection.error) }, 'tunnel connection error'));
    container.on('error', (err: unknown) => this.o.log.warn({ err: describe(err) }, 'tunnel error'));
    this.server = container.listen({
      port: this.o.port, host: this.o.host, transport: 'tls', key: this.o.key, cert: this.o.cert, ca: this.o.ca,
      requestCert: true, rejectUnauthorized: true, autoaccept: false, credit_window: 0,
    } as never) as unknown as Server;
    this.server.on('secureConnection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('listening', () => resolve());
      this.server!.once('error', reject);
    });
    this.o.inbox.on('stored', () => { for (const s of this.pullers) void this.pump(s); });
    // A release by Redis timing or a missed event is picked up within a second.
    this.timer = setInterval(() => { for (const s of this.pullers) void this.pump(s); }, 1000);
    this.timer.unref();
    this.o.log.info({ port: this.port }, 'float tunnel listening for the gateway (mutual TLS)');
  }

  private onOpen(c: Connection): void {
    const socket = (c as unknown as { socket?: TLSSocket }).socket;
    const raw = socket?.getPeerCertificate?.()?.raw;
    const subject = raw ? certificateIdentity(Buffer.from(`-----BEGIN CERTIFICATE-----\n${raw.toString('base64')}\n-----END CERTIFICATE-----\n`)) : '(no certificate)';
    if (subject !== this.expected) {
      void this.o.audit.record({ action: 'float.refused', actor: `tunnel:${subject}`, ...(socket?.remoteAddress ? { ip: socket.remoteAddress } : {}), detail: `tunnel certificate subject is not the configured gateway (${this.expected})` });
      c.close({ condition: 'amqp:unauthorized-access', description: `'${subject}' is not this float's gateway` });
      return;
    }
    const old = this.current;
    this.current = c;
    this.inFlight.set(c, new Set());
    if (old) {
      this.o.log.warn('a new gateway tunnel replaces the open one');
      old.close({ condition: 'amqp:connection:forced', description: 'replaced by a newer tunnel from the gateway' });
      void this.onGone(old);
    }
    this.o.log.info({ ip: socket?.remoteAddress }, 'gateway tunnel connected');
  }

  /** A tunnel that ends hands back what it had not acknowledged. */
  private async onGone(c: Connection): Promise<void> {
    const taken = this.inFlight.get(c);
    this.inFlight.delete(c);
    for (const s of [...this.pullers]) if ((s as unknown as { connection: Connection }).connection === c) this.pullers.delete(s);
    if (c === this.current) {
      this.current = undefined;
      this.o.log.warn('gateway tunnel disconnected: inbound messages wait on the float, outbound wait inside');
    }
    for (const id of taken ?? []) await this.o.inbox.release(id).catch((err) => this.o.log.error({ err: (err as Error).message }, 'could not put an entry back'));
  }

  private async onMessage(ctx: EventContext): Promise<void> {
    const c = ctx.connection;
    const delivery = ctx.delivery as Delivery;
    const receiver = ctx.receiver!;
    const address = (receiver.target as { address?: string } | undefined)?.address;
    try {
      const bytes = bodyBytes((ctx.message as { body?: unknown }).body) ?? Buffer.from(String((ctx.message as { body?: unknown }).body ?? ''), 'utf8');
      // Pieces are bytes; everything else on the tunnel is JSON.
      const json = address === TUNNEL_ADDRESS.attachments ? undefined : JSON.parse(bytes.toString('utf8')) as unknown;
      if (address === TUNNEL_ADDRESS.identity) {
        const h = json as IdentityHandover;
        if (typeof h.key !== 'string' || typeof h.cert !== 'string') throw new SwitchboardError('malformed_tunnel_message', 'the identity handover needs {key, cert}', 400);
        await this.o.onIdentity(h);
        this.identified.add(c);
        receiver.add_credit(1);
      } else if (address === TUNNEL_ADDRESS.attachments) {
        if (!this.identified.has(c)) throw new SwitchboardError('no_identity', `hand over the peer key on ${TUNNEL_ADDRESS.identity} first`, 409);
        await this.o.attachments.storePiece(ctx.message as never);
        receiver.add_credit(1);
      } else {
        if (!this.identified.has(c)) throw new SwitchboardError('no_identity', `hand over the peer key on ${TUNNEL_ADDRESS.identity} first`, 409);
        await this.o.onOutbound(json as OutboundEnvelope);
        receiver.add_credit(1);
      }
      delivery.accept();
    } catch (err) {
      if (err instanceof AttachmentRestart) {
        delivery.reject({ condition: RESTART_CONDITION, description: err.message });
        receiver.add_credit(1);
      } else if (isRetryable(err)) {
        delivery.release({ delivery_failed: true });
        // Retried by the gateway's outbox with backoff; credit again in a moment.
        setTimeout(() => receiver.add_credit(1), 1000).unref();
      } else {
        delivery.reject({ condition: 'amqp:not-allowed', description: (err as Error).message });
        receiver.add_credit(1);
        if (address === TUNNEL_ADDRESS.attachments) void this.o.audit.record({ action: 'float.piece-refused', actor: `tunnel:${this.o.gatewaySubject}`, target: address, detail: (err as Error).message });
      }
      if (!(err instanceof SwitchboardError)) this.o.log.error({ err: (err as Error).message, address }, 'tunnel message failed');
    }
  }

  /** Sends waiting entries while the gateway gives credit. */
  private async pump(s: Sender): Promise<void> {
    if (!this.pullers.has(s) || this.pumping.has(s)) return;
    this.pumping.add(s);
    try {
      const c = (s as unknown as { connection: Connection }).connection;
      while (this.pullers.has(s) && c.is_open() && !s.is_closed() && s.sendable()) {
        const next = await this.o.inbox.take();
        if (!next) break;
        const taken = this.inFlight.get(c);
        if (!taken || !this.pullers.has(s) || !c.is_open()) {
          await this.o.inbox.release(next.entryId);
          break;
        }
        taken.add(next.entryId);
        const e = next.entry;
        if (e.kind === 'peer-message' && e.attachments?.length) this.attachmentsOf.set(next.entryId, e.attachments);
        const props: Record<string, string> = { [TUNNEL_PROPERTY.kind]: e.kind };
        if (e.kind === 'peer-message') { props[TUNNEL_PROPERTY.peer] = e.peer; props[TUNNEL_PROPERTY.target] = e.target; }
        const body = e.kind === 'peer-message' ? Buffer.from(e.bytes, 'base64') : Buffer.from(e.notice, 'utf8');
        const d = s.send({ message_id: next.entryId, application_properties: props, body: rhea.message.data_section(body) } as never);
        this.entries.set(d, next.entryId);
      }
    } catch (err) {
      this.o.log.error({ err: (err as Error).message }, 'float store unavailable: pulling paused');
    } finally {
      this.pumping.delete(s);
    }
  }

  private async settled(ctx: EventContext, outcome: 'accepted' | 'rejected' | 'released'): Promise<void> {
    const d = ctx.delivery as Delivery | undefined;
    const entryId = d ? this.entries.get(d) : undefined;
    if (!entryId) return;
    this.entries.delete(d!);
    this.inFlight.get(ctx.connection)?.delete(entryId);
    const attachments = this.attachmentsOf.get(entryId) ?? [];
    this.attachmentsOf.delete(entryId);
    try {
      // Handed over (taken inside, or refused for good there): the float's copy of its attachments goes.
      if (outcome !== 'released') await this.o.attachments.drop(attachments);
      if (outcome === 'accepted') await this.o.inbox.ack(entryId);
      else if (outcome === 'released') await this.o.inbox.release(entryId);
      else {
        const reason = describe((d!.remote_state as { error?: unknown } | undefined)?.error) || 'rejected';
        this.o.log.warn({ entry: entryId, reason }, 'the gateway refused a message from a peer: kept on the float as refused');
        await this.o.inbox.refuse(entryId, reason);
      }
    } catch (err) {
      this.o.log.error({ err: (err as Error).message, entry: entryId }, 'could not record the gateway\'s settlement (the entry will be offered again; the gateway deduplicates it)');
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.current?.close({ condition: 'amqp:connection:forced', description: 'the float is stopping' });
    await new Promise((r) => setTimeout(r, 100));
    for (const s of this.sockets) s.destroy();
    if (this.current) await this.onGone(this.current);
    await closed;
  }
}
