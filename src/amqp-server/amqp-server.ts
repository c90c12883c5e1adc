import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import rhea, { type Connection, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import type { Logger } from 'pino';
import type { Authenticator } from '../auth/authenticator.ts';
import type { Directory } from '../auth/directory.ts';
import type { Permissions, Verb } from '../auth/permissions.ts';
import { parseAddress } from '../core/address.ts';
import type { Subscription } from '../core/endpoint.ts';
import { DestinationUnavailable, PermissionDenied, SwitchboardError, isRetryable } from '../core/errors.ts';
import { principalId, type Principal } from '../core/message.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';
import { describe } from '../amqp/connection.ts';
import { fromAmqp, toAmqp, type AmqpMessage } from '../amqp/mapping.ts';

export interface AmqpServerOptions {
  port: number;
  host: string;
  tls?: { key: string; cert: string; ca?: string };
  /** Messages a client may have in flight per link. */
  credit: number;
  maxMessageBytes: number;
  auth: Authenticator;
  directory: Directory;
  permissions: Permissions;
  router: Router;
  metrics: Metrics;
  log: Logger;
}

/** An AMQP error condition for a typed error (sent in rejections and link refusals). */
function condition(err: unknown): { condition: string; description: string } {
  const description = err instanceof Error ? err.message : String(err);
  if (err instanceof PermissionDenied) return { condition: 'amqp:unauthorized-access', description };
  if (err instanceof SwitchboardError && err.code === 'payload_too_large') return { condition: 'amqp:link:message-size-exceeded', description };
  if (err instanceof SwitchboardError && err.code === 'malformed_message') return { condition: 'amqp:decode-error', description };
  if (err instanceof SwitchboardError && err.status === 404) return { condition: 'amqp:not-found', description };
  if (err instanceof SwitchboardError && err.status < 500) return { condition: 'amqp:invalid-field', description };
  return { condition: 'amqp:internal-error', description: err instanceof SwitchboardError ? description : 'internal error; see the gateway log' };
}

/**
 * The embedded AMQP 1.0 endpoint: clients authenticate with SASL PLAIN against the directory;
 * a link's target (client sends) or source (client receives) is a Switchboard address, checked
 * against the permissions at attach and again per message. Credit is real capacity: a sending
 * client gets one more credit per message the destination accepted; a receiving client is fed
 * only as fast as it settles.
 */
export class AmqpServer {
  private server?: Server;
  private readonly principals = new WeakMap<Connection, Principal>();
  private readonly links = new Map<Sender | Receiver, { principal: Principal; verb: Verb; address: string; sub?: Subscription }>();
  private readonly outcomes = new Map<Delivery, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly pendingLogins = new Map<string, Principal>();
  private readonly sockets = new Set<import('node:net').Socket>();
  private readonly connections = new Set<Connection>();

  constructor(private readonly o: AmqpServerOptions) {}

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? this.o.port;
  }

  async start(): Promise<void> {
    const container = rhea.create_container({ id: 'switchboard' });
    container.sasl_server_mechanisms.enable_plain(async (username: string, password: string) => {
      try {
        const p = await this.o.auth.password(username, password, { door: 'amqp' });
        this.pendingLogins.set(username, p);
        return true;
      } catch (err) {
        if (!(err instanceof SwitchboardError) || err.status === 503) this.o.log.warn({ err: (err as Error).message }, 'AMQP login could not be checked');
        return false;
      }
    });
    container.on('connection_open', (ctx: EventContext) => {
      // rhea's typings lack sasl_transport, where the authenticated name lives.
      const username = (ctx.connection as unknown as { sasl_transport?: { username?: string } }).sasl_transport?.username;
      const p = username ? this.pendingLogins.get(username) : undefined;
      if (username) this.pendingLogins.delete(username);
      if (!p) {
        ctx.connection.close({ condition: 'amqp:unauthorized-access', description: 'authenticate with SASL PLAIN as a directory user' });
        return;
      }
      this.principals.set(ctx.connection, p);
      this.connections.add(ctx.connection);
      ctx.connection.once('disconnected', () => this.connections.delete(ctx.connection));
    });
    container.on('receiver_open', (ctx: EventContext) => this.clientSends(ctx));
    container.on('sender_open', (ctx: EventContext) => this.clientReceives(ctx));
    container.on('message', (ctx: EventContext) => void this.onMessage(ctx));
    for (const ev of ['accepted', 'rejected', 'released', 'modified'] as const) {
      container.on(ev, (ctx: EventContext) => {
        const d = ctx.delivery as Delivery;
        const o = this.outcomes.get(d);
        if (!o) return;
        this.outcomes.delete(d);
        if (ev === 'accepted') o.resolve();
        else if (ev === 'rejected') o.reject(new SwitchboardError('client_rejected', `the client rejected the message: ${describe((d.remote_state as { error?: unknown } | undefined)?.error) || 'no reason given'}`));
        else o.reject(new DestinationUnavailable('amqp client', `the client ${ev} the message`));
      });
    }
    const closeLink = (ctx: EventContext) => void this.linkGone((ctx.sender ?? ctx.receiver) as Sender | Receiver);
    container.on('sender_close', closeLink);
    container.on('receiver_close', closeLink);
    container.on('disconnected', (ctx: EventContext) => {
      for (const [link] of this.links) if ((link as unknown as { connection: Connection }).connection === ctx.connection) void this.linkGone(link);
    });
    container.on('connection_error', (ctx: EventContext) => this.o.log.debug({ err: describe(ctx.connection.error) }, 'AMQP client connection error'));
    container.on('session_error', (ctx: EventContext) => this.o.log.debug({ err: describe(ctx.session?.error) }, 'AMQP client session error'));
    container.on('error', (err: unknown) => this.o.log.warn({ err: describe(err) }, 'AMQP endpoint error'));
    const t = this.o.tls;
    const options = {
      port: this.o.port,
      host: this.o.host,
      autoaccept: false,
      credit_window: 0,
      ...(t ? { transport: 'tls', key: readFileSync(t.key), cert: readFileSync(t.cert), ...(t.ca ? { ca: readFileSync(t.ca) } : {}) } : {}),
    };
    this.server = container.listen(options as never) as unknown as Server;
    this.server.on('connection', (socket: import('node:net').Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('listening', () => resolve());
      this.server!.once('error', reject);
    });
    this.o.log.info({ port: this.port, tls: Boolean(t) }, 'AMQP 1.0 endpoint listening');
  }

  private principalOf(ctx: EventContext): Principal | undefined {
    return this.principals.get(ctx.connection);
  }

  /** Checks the link address and verb; refuses the link with a clear AMQP error otherwise. */
  private admit(ctx: EventContext, link: Sender | Receiver, raw: string | undefined, verb: Verb): { principal: Principal; address: string } | undefined {
    const p = this.principalOf(ctx);
    try {
      if (!p) throw new PermissionDenied('(unauthenticated)', verb, raw ?? '');
      const address = parseAddress(raw).raw;
      this.o.permissions.require(p, verb, address);
      return { principal: p, address };
    } catch (err) {
      link.close(condition(err));
      this.o.log.info({ principal: p ? principalId(p) : undefined, verb, address: raw, err: (err as Error).message }, 'AMQP link refused');
      return undefined;
    }
  }

  private clientSends(ctx: EventContext): void {
    const receiver = ctx.receiver as Receiver;
    // Echo the client's terminus in our attach (sent on the next tick): clients check it matches.
    const remote = (receiver as unknown as { remote: { attach: { target?: unknown } } }).remote.attach;
    receiver.set_target(remote.target as never);
    const ok = this.admit(ctx, receiver, receiver.target?.address as string | undefined, 'send');
    if (!ok) return;
    this.links.set(receiver, { ...ok, verb: 'send' });
    receiver.add_credit(this.o.credit);
  }

  private async onMessage(ctx: EventContext): Promise<void> {
    const receiver = ctx.receiver as Receiver;
    const delivery = ctx.delivery as Delivery;
    const link = this.links.get(receiver);
    if (!link) {
      delivery.reject({ condition: 'amqp:unauthorized-access', description: 'this link was not admitted' });
      return;
    }
    try {
      const m = fromAmqp(ctx.message as unknown as AmqpMessage, link.address, { kind: 'user', name: link.principal.name }, { maxBytes: this.o.maxMessageBytes });
      // Checked per message too: a right revoked while the link is open stops the next message.
      this.o.permissions.require(link.principal, 'send', link.address);
      await this.o.router.send(m);
      delivery.accept();
    } catch (err) {
      if (isRetryable(err)) delivery.release({ delivery_failed: true });
      else delivery.reject(condition(err));
      if (!(err instanceof SwitchboardError)) this.o.log.error({ err: (err as Error).message }, 'AMQP message failed');
    } finally {
      // One more credit per settled message: credit follows what the destination takes.
      if (this.links.has(receiver)) receiver.add_credit(1);
    }
  }

  private clientReceives(ctx: EventContext): void {
    const sender = ctx.sender as Sender;
    const remote = (sender as unknown as { remote: { attach: { source?: unknown } } }).remote.attach;
    sender.set_source(remote.source as never);
    const ok = this.admit(ctx, sender, sender.source?.address as string | undefined, 'consume');
    if (!ok) return;
    const entry: { principal: Principal; verb: Verb; address: string; sub?: Subscription } = { ...ok, verb: 'consume' };
    this.links.set(sender, entry);
    const userId = ok.principal.name;
    this.o.router
      .consume(ok.address, async (m) => {
        if (!this.links.has(sender)) throw new DestinationUnavailable('amqp client', 'the link is gone');
        this.o.permissions.require(entry.principal, 'consume', entry.address);
        while (!sender.sendable()) {
          if (!this.links.has(sender)) throw new DestinationUnavailable('amqp client', 'the link is gone');
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise<void>((resolve, reject) => {
          const d = sender.send(toAmqp(m, { userId }) as never);
          this.outcomes.set(d, { resolve, reject });
        });
      }, { maxInFlight: Math.min(this.o.credit, 100) })
      .then((sub) => {
        if (this.links.has(sender)) entry.sub = sub;
        else void sub.close();
      })
      .catch((err) => sender.close(condition(err)));
  }

  private async linkGone(link: Sender | Receiver): Promise<void> {
    const entry = this.links.get(link);
    if (!entry) return;
    this.links.delete(link);
    // Messages handed to this link but not settled go back to their queue.
    for (const [d, o] of this.outcomes) if (d.link === link) { this.outcomes.delete(d); o.reject(new DestinationUnavailable('amqp client', 'the link closed before the client settled')); }
    await entry.sub?.close();
  }

  /** Detaches links whose principal lost the right (used when rules change). */
  recheck(): void {
    for (const [link, e] of this.links) {
      if (!this.o.permissions.check(e.principal, e.verb, e.address).allowed) {
        link.close({ condition: 'amqp:unauthorized-access', description: `${principalId(e.principal)} may no longer ${e.verb} on ${e.address}` });
        void this.linkGone(link);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.keys()].map((l) => this.linkGone(l)));
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    // Clients are told by a close; their unsettled messages are already back in their queues.
    // rhea does not notice a destroyed socket, so its connections are closed and ended first.
    // `connection:forced` is how AMQP says "going away, come back later": clients reconnect.
    for (const c of this.connections) c.close({ condition: 'amqp:connection:forced', description: 'the gateway is stopping' });
    await new Promise((r) => setTimeout(r, 100));
    for (const s of this.sockets) s.destroy();
    for (const c of this.connections) (c as unknown as { _disconnected?: () => void })._disconnected?.();
    await closed;
  }
}
