import type { Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import rhea, { type Connection, type Delivery, type EventContext, type Receiver } from 'rhea';
import type { Logger } from 'pino';
import type { AuditLog } from '../auth/audit.ts';
import { PermissionDenied, SwitchboardError, isRetryable } from '../core/errors.ts';
import { describe } from '../amqp/connection.ts';
import type { AmqpMessage } from '../amqp/mapping.ts';
import type { NetworkMap, Peer } from '../network/network-map.ts';
import { peerPrincipal, type PeerIntake } from './peer-intake.ts';
import { holdWhileUnavailable } from '../core/hold.ts';
import { certificateIdentity } from '../network/identity.ts';
import type { RevocationList } from '../network/revocation.ts';
import type { AttachmentStore } from '../attachments/attachment-store.ts';
import { AttachmentRestart } from '../attachments/errors.ts';
import { ATTACHMENT_LINK, PIECE_BYTES as PIECE_CHUNK, RESTART_CONDITION, readPiece } from '../network/attachment-transfer.ts';
import { principalId } from '../core/message.ts';

export { peerPrincipal } from './peer-intake.ts';

export interface PeerListenerOptions {
  host: string;
  port: number;
  /** TLS key, certificate and the network CA: PEM texts (read at the config edge), not paths. */
  key: string;
  cert: string;
  ca: string;
  map: NetworkMap;
  /** The CRL check (network.crl): a revoked peer is refused, and cut off when revoked later. */
  revocation?: RevocationList;
  /** Where accepted messages go: the router (a gateway) or the float's store. */
  intake: PeerIntake;
  credit: number;
  audit: AuditLog;
  log: Logger;
  /** Where attachments pushed by peers are stored (link `$attachments`); absent: that link is refused. */
  attachments?: AttachmentStore;
  /** The largest attachment piece a peer may push in one delivery (amqp.maxMessageBytes). @defaultValue 1 MiB */
  maxMessageBytes?: number;
}

/**
 * The inbound side of the peer network: mutual TLS only, and the client certificate must be a
 * peer in the network map (its subject is the peer's identity, and that identity becomes the
 * sender). Each message must carry that peer's Ed25519 signature over the envelope; it may go
 * only where the peer's `allow` patterns (or a rule for the peer) let it; it is deduplicated by
 * address, sender (the peer) and id (dedupKey) for the event horizon; and when the destination
 * cannot take it, no credit is given back, so the rest waits at the peer.
 */
export class PeerListener {
  private server?: Server;
  private readonly peers = new WeakMap<Connection, Peer>();
  private readonly sockets = new Set<Socket>();
  private readonly connections = new Set<Connection>();
  /** The client certificate of each open connection, checked again after every CRL refresh. */
  private readonly certificates = new WeakMap<Connection, Buffer>();
  private stopRecheck?: () => void;
  private stopping = false;

  constructor(private readonly o: PeerListenerOptions) {}

  /** Peer connections open now (accepted: a mapped, unrevoked peer). */
  get connectionCount(): number {
    return this.connections.size;
  }

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? this.o.port;
  }

  async start(): Promise<void> {
    const container = rhea.create_container({ id: 'switchboard-peer-listener' });
    container.sasl_server_mechanisms.enable_anonymous();
    container.on('connection_open', (ctx: EventContext) => {
      const socket = (ctx.connection as unknown as { socket?: TLSSocket }).socket;
      const raw = socket?.getPeerCertificate?.()?.raw;
      const identity = raw ? certificateIdentity(Buffer.from(`-----BEGIN CERTIFICATE-----\n${raw.toString('base64')}\n-----END CERTIFICATE-----\n`)) : undefined;
      const peer = identity ? this.o.map.byIdentity(identity) : undefined;
      if (!peer) {
        void this.o.audit.record({ action: 'peer.refused', actor: `peer:${identity ?? '(no certificate)'}`, ...(socket?.remoteAddress ? { ip: socket.remoteAddress } : {}), detail: 'certificate subject is not a peer in the network map' });
        ctx.connection.close({ condition: 'amqp:unauthorized-access', description: `'${identity ?? 'no certificate'}' is not a peer in this gateway's network map` });
        return;
      }
      const revoked = this.o.revocation?.check(raw);
      if (revoked !== undefined) {
        this.refuseRevoked(ctx.connection, peer, revoked, socket?.remoteAddress);
        return;
      }
      this.peers.set(ctx.connection, peer);
      if (raw) this.certificates.set(ctx.connection, raw);
      this.connections.add(ctx.connection);
      ctx.connection.once('disconnected', () => this.connections.delete(ctx.connection));
    });
    container.on('receiver_open', (ctx: EventContext) => {
      const receiver = ctx.receiver as Receiver;
      const remote = (receiver as unknown as { remote: { attach: { target?: { address?: string } } } }).remote.attach;
      receiver.set_target(remote.target as never);
      const peer = this.peers.get(ctx.connection);
      if (!peer) return void receiver.close({ condition: 'amqp:unauthorized-access', description: 'not a known peer' });
      receiver.add_credit(this.o.credit);
    });
    container.on('sender_open', (ctx: EventContext) => {
      // Peers deliver into this gateway; they do not consume from it.
      ctx.sender?.close({ condition: 'amqp:not-allowed', description: 'peers send to this gateway; receiving is not offered' });
    });
    container.on('message', (ctx: EventContext) => void this.onMessage(ctx));
    container.on('connection_error', (ctx: EventContext) => this.o.log.debug({ err: describe(ctx.connection.error) }, 'peer connection error'));
    container.on('session_error', (ctx: EventContext) => this.o.log.debug({ err: describe(ctx.session?.error) }, 'peer session error'));
    container.on('error', (err: unknown) => this.o.log.warn({ err: describe(err) }, 'peer listener error'));
    this.server = container.listen({
      port: this.o.port, host: this.o.host, transport: 'tls',
      key: this.o.key, cert: this.o.cert, ca: this.o.ca,
      requestCert: true, rejectUnauthorized: true, autoaccept: false, credit_window: 0,
    } as never) as unknown as Server;
    this.server.on('secureConnection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    this.server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('listening', () => resolve());
      this.server!.once('error', reject);
    });
    const recheck = () => this.recheckRevocation();
    this.o.revocation?.on('changed', recheck);
    this.stopRecheck = () => this.o.revocation?.off('changed', recheck);
    this.o.log.info({ port: this.port }, 'peer listener (mutual TLS) listening');
  }

  /** Closes (amqp:unauthorized-access) and audits a peer connection whose certificate may not connect. */
  private refuseRevoked(c: Connection, peer: Peer, reason: string, ip: string | undefined): void {
    void this.o.audit.record({ action: 'peer.revoked', actor: `peer:${peer.identity}`, ...(ip ? { ip } : {}), detail: `peer ${peer.alias}: ${reason}` });
    this.o.log.warn({ peer: peer.alias, identity: peer.identity, reason }, 'peer connection refused: certificate revoked or no valid CRL');
    c.close({ condition: 'amqp:unauthorized-access', description: `the certificate of '${peer.identity}' may not connect: ${reason}` });
  }

  /** After a CRL refresh: open connections of a peer revoked since are closed and audited. */
  private recheckRevocation(): void {
    for (const c of [...this.connections]) {
      const peer = this.peers.get(c);
      const reason = this.o.revocation?.check(this.certificates.get(c));
      if (!peer || reason === undefined) continue;
      this.connections.delete(c);
      this.peers.delete(c);
      const ip = (c as unknown as { socket?: TLSSocket }).socket?.remoteAddress;
      this.refuseRevoked(c, peer, reason, ip);
      // A peer that does not answer the close is cut off at the socket.
      setTimeout(() => (c as unknown as { socket?: Socket }).socket?.destroy(), 2000).unref();
    }
  }

  private async onMessage(ctx: EventContext): Promise<void> {
    const receiver = ctx.receiver as Receiver;
    const delivery = ctx.delivery as Delivery;
    const peer = this.peers.get(ctx.connection);
    try {
      if (!peer) throw new PermissionDenied('(unknown peer)', 'send', '');
      const target = (receiver.target as { address?: string } | undefined)?.address ?? '';
      const amqp = ctx.message as unknown as AmqpMessage;
      if (target === ATTACHMENT_LINK) return await this.onPiece(peer, amqp, delivery);
      // Held while the destination cannot take it: no credit back, so the peer keeps the rest.
      await this.o.intake.take(peer, target, amqp, () => this.stopping);
      delivery.accept();
    } catch (err) {
      if (isRetryable(err)) {
        delivery.release({ delivery_failed: true });
      } else {
        const e = err as Error;
        delivery.reject({ condition: err instanceof PermissionDenied || (err as SwitchboardError).code === 'bad_signature' ? 'amqp:unauthorized-access' : 'amqp:invalid-field', description: e.message });
      }
      if (!(err instanceof SwitchboardError)) this.o.log.error({ err: (err as Error).message }, 'peer message failed');
    } finally {
      if (!this.stopping) receiver.add_credit(1);
    }
  }

  /**
   * One piece of an attachment a peer pushes before the message that references it: settled
   * (accepted) only once stored in Redis, so the peer's record of what was acknowledged is
   * never ahead of what is here. The peer is the attachment's owner here.
   */
  private async onPiece(peer: Peer, amqp: AmqpMessage, delivery: Delivery): Promise<void> {
    try {
      if (!this.o.attachments) throw new SwitchboardError('not_supported', 'this gateway does not take attachments', 400);
      const { ref, offset, data } = readPiece(amqp as never, this.o.maxMessageBytes ?? 1_048_576);
      const outcome = await holdWhileUnavailable(() => this.o.attachments!.receivePiece(principalId(peerPrincipal(peer)), ref, offset, data, PIECE_CHUNK), { stopping: () => this.stopping, firstPauseMs: 200 });
      if (outcome === 'complete' && offset + data.length === ref.size) this.o.log.info({ peer: peer.alias, attachment: ref.id, size: ref.size }, 'attachment received from peer, hash checked');
      delivery.accept();
    } catch (err) {
      if (err instanceof AttachmentRestart) delivery.reject({ condition: RESTART_CONDITION, description: err.message });
      else if (isRetryable(err)) delivery.release({ delivery_failed: true });
      else {
        if ((err as SwitchboardError).code === 'hash_mismatch') {
          await this.o.audit.record({ action: 'peer.attachment-refused', actor: `peer:${peer.identity}`, target: ATTACHMENT_LINK, detail: `peer ${peer.alias}: ${(err as Error).message}` });
        }
        delivery.reject({ condition: 'amqp:invalid-field', description: (err as Error).message });
        if (!(err instanceof SwitchboardError)) this.o.log.error({ err: (err as Error).message }, 'attachment piece from peer failed');
      }
    }
  }

  async close(): Promise<void> {
    this.stopping = true;
    this.stopRecheck?.();
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    // Close the AMQP connections first: rhea does not notice a destroyed socket and would keep
    // its heartbeat timer (and the process) alive.
    // `connection:forced` is how AMQP says "going away, come back later": clients reconnect.
    for (const c of this.connections) c.close({ condition: 'amqp:connection:forced', description: 'the gateway is stopping' });
    await new Promise((r) => setTimeout(r, 100));
    for (const s of this.sockets) s.destroy();
    for (const c of this.connections) (c as unknown as { _disconnected?: () => void })._disconnected?.();
    await closed;
  }
}
