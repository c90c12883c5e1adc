import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { ipKeyGenerator } from 'express-rate-limit';
import rhea, { type Connection, type Delivery, type EventContext, type Receiver, type Sender, type Session } from 'rhea';
import type { Logger } from 'pino';
import type { Authenticator } from '../auth/authenticator.ts';
import type { Directory } from '../auth/directory.ts';
import { TooManyAttempts } from '../auth/login-guard.ts';
import { parseAddress } from '../core/address.ts';
import type { Subscription } from '../core/endpoint.ts';
import { DestinationUnavailable, PermissionDenied, SwitchboardError, isRetryable } from '../core/errors.ts';
import { principalId, type Principal } from '../core/message.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Action, Caller } from '../core/pipeline.ts';
import type { Router } from '../core/router.ts';
import { describe } from '../amqp/connection.ts';
import { fromAmqp, toAmqp, type AmqpMessage } from '../amqp/mapping.ts';
import { FrameGate, PlainLogin, type FrameRefusal } from './door.ts';

export interface AmqpServerOptions {
  port: number;
  host: string;
  /** TLS: key, certificate and optional client CA as PEM texts (read at the config edge), not paths. */
  tls?: { key: string; cert: string; ca?: string };
  /** Messages a client may have in flight per link. */
  credit: number;
  /**
   * Largest message body. A delivery is refused while it arrives, once its transfers pass this
   * plus {@link ENVELOPE_BYTES} for its properties, with `amqp:link:message-size-exceeded`.
   */
  maxMessageBytes: number;
  /**
   * How long a client has from accept to an authenticated AMQP open (SASL included); a TLS
   * handshake has as long again before that. Then the socket is closed and audited.
   * @defaultValue 10,000 (`amqp.handshakeTimeout`)
   */
  handshakeTimeoutMs?: number;
  /**
   * Connections open at once from one client address (IPv6: one /56, as the login limits count
   * it); one more is closed at accept and audited.
   * @defaultValue 50 (`amqp.maxConnectionsPerIp`)
   */
  maxConnectionsPerIp?: number;
  /**
   * Largest frame a client may send before SASL succeeds; a larger one closes the socket before
   * its body is read (audited). After login the limit is the max-frame-size we announce.
   * @defaultValue 4096 (`amqp.preAuthMaxFrame`)
   */
  preAuthMaxFrame?: number;
  /** Checks SASL PLAIN logins (login limits shared with HTTP) and audits refusals before login. */
  auth: Authenticator;
  directory: Directory;
  /** Decides every link and message (its guard and pipeline): this door asks, never checks rules itself. */
  router: Router;
  /** The tmp: transport's queue lifecycle, given by the wiring (a door never holds a transport). */
  temporaryQueues?: TemporaryQueues;
  /** The topic: transport's subscriptions, given by the wiring. */
  topics?: TopicSubscriptions;
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

/** What this door needs from the `tmp:` transport. Found through the router: doors never import transports. */
export interface TemporaryQueues {
  openTemporary(address: string): Promise<void>;
  deleteTemporary(address: string): Promise<void>;
}

/** What this door needs from the `topic:` transport (DESIGN §6), given by the wiring like TemporaryQueues. */
export interface TopicSubscriptions {
  createSubscription(topic: string, name: string, opts: { durable?: boolean; shared?: boolean; createdBy?: string }): Promise<{ subscription: { address: string } }>;
}

/** A source or target as rhea hands it over (its typings have no fields for them). */
interface Terminus {
  address?: string | null;
  dynamic?: boolean;
  durable?: number;
  expiry_policy?: string;
  timeout?: number;
  distribution_mode?: string;
  filter?: Record<string, unknown> | null;
  capabilities?: string | string[] | null;
  default_outcome?: unknown;
  outcomes?: string | string[] | null;
}

/** The parts of rhea's session and link this file patches (not in rhea's typings). */
type Link = Sender | Receiver;
interface RheaSession {
  links: Record<string, Link>;
  remote: { handles: Record<number, Link> };
  local: { handles: Record<number, Link> };
  create_sender(name: string): Sender;
  create_receiver(name: string): Receiver;
  on_attach(frame: { performative: { name: string; role: boolean; handle: number; target?: { descriptor?: { value?: unknown } } | null } }): void;
  on_transfer(frame: TransferFrame): void;
  incoming: { next_transfer_id: number };
  remove_link(link: Link): void;
}

interface TransferFrame {
  performative: { handle: number; more?: boolean };
  payload?: Buffer;
}

/** A delivery rhea is assembling on a receiver (`_incomplete`, not in its typings). */
interface Assembling {
  frames?: Buffer[];
  settled: boolean;
}

/** Terminus capabilities a client may ask for: the node is a queue (Qpid JMS says so on every link). */
const KNOWN_CAPABILITIES = new Set(['queue', 'temporary-queue']);
/** What Qpid JMS asks for on a topic source: the node is a topic; a JMS 2.0 shared subscription, global (no client id). */
const TOPIC_CAPABILITIES = new Set(['topic', 'shared', 'global']);
/** AMQP 1.0 transactions (the coordinator target, section 4.5). */
const COORDINATOR = new Set<unknown>([0x30, 0x30n, 'amqp:coordinator:list']);

interface ClientConnection {
  /** `<server>-<n>`: names this connection's temporary queues, `tmp:<id>/<k>`. */
  id: string;
  principal: Principal;
  /** Who acts through this connection, as the router sees it; it owns the connection's temporary queues. */
  caller: Caller;
  links: Set<Link>;
  temporary: string[];
}

interface LinkEntry {
  principal: Principal;
  verb: Extract<Action, 'send' | 'browse' | 'consume'>;
  /** Undefined on the anonymous relay: each message names its own `to`. */
  address?: string;
  conn: ClientConnection;
  sub?: Subscription;
  /** Sends handed to rhea that it has not written yet (see consume). */
  unwritten: number;
  /** Messages waiting for credit, oldest first: they go out in the order they came (see pump). */
  waiting?: { resolve: () => void; reject: (err: Error) => void }[];
  /** The retry of pump while the client gives no credit. */
  pumpTimer?: NodeJS.Timeout;
}

/** At most this many messages are copied to one browsing link (a snapshot, not a stream). */
const BROWSE_LIMIT = 1000;

const SASL_HEADER = Buffer.from([0x41, 0x4d, 0x51, 0x50, 3, 1, 0, 0]);
// sasl-mechanisms [PLAIN], then sasl-outcome code 1 (auth): for a client that skipped SASL.
const SASL_MECHANISMS_PLAIN = Buffer.from([0, 0, 0, 0x18, 2, 1, 0, 0, 0, 0x53, 0x40, 0xc0, 0x0b, 0x01, 0xe0, 0x08, 0x01, 0xa3, 0x05, 0x50, 0x4c, 0x41, 0x49, 0x4e]);
const SASL_OUTCOME_AUTH = Buffer.from([0, 0, 0, 0x10, 2, 1, 0, 0, 0, 0x53, 0x44, 0xc0, 0x03, 0x01, 0x50, 0x01]);

/** The max-frame-size announced in our open: the largest frame a logged-in client may send. */
export const MAX_FRAME_BYTES = 65_536;
/** Room for a message's header, properties and application properties around its body. */
export const ENVELOPE_BYTES = 65_536;

/** What the door knows of one client before and after its login. */
interface ClientDoor {
  ip: string;
  socket: Socket;
  gate: FrameGate;
  /** Set by a successful SASL PLAIN login. */
  principal?: Principal;
  /** Closes the socket unless SASL and open finish first. */
  timer?: NodeJS.Timeout;
}

const list = (v: string | string[] | null | undefined): string[] => (v == null ? [] : Array.isArray(v) ? v : [v]);

/**
 * The embedded AMQP 1.0 endpoint: clients authenticate with SASL PLAIN against the directory;
 * a link's target (client sends) or source (client receives) is a Switchboard address, checked
 * against the permissions at attach and again per message. Credit is real capacity: a sending
 * client gets one more credit per message the destination accepted; a receiving client is fed
 * only as fast as it settles. Dynamic receivers get a `tmp:` queue of their connection; a sender
 * without a target is the anonymous relay (each message goes to its `to`). What is not
 * supported is refused at attach with amqp:not-implemented, never accepted and then ignored.
 */
export class AmqpServer {
  private server?: Server;
  private readonly id = randomBytes(4).toString('hex');
  private nextConnection = 0;
  private readonly conns = new Map<Connection, ClientConnection>();
  private readonly links = new Map<Link, LinkEntry>();
  private readonly coordinators = new WeakSet<Link>();
  private readonly outcomes = new Map<Delivery, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly doors = new WeakMap<Connection, ClientDoor>();
  /** Open sockets per client address key (see maxConnectionsPerIp). */
  private readonly perIp = new Map<string, number>();
  /** Receivers detached for an oversized delivery: their remaining transfers are dropped unread. */
  private readonly oversized = new WeakSet<Link>();
  private readonly sockets = new Set<Socket>();
  private readonly openConnections = new Set<Connection>();
  private readonly handshakeTimeoutMs: number;
  private readonly maxConnectionsPerIp: number;
  private readonly preAuthMaxFrame: number;
  /** Transfers of one delivery may add up to this many bytes; one more and it is refused. */
  private readonly maxDeliveryBytes: number;

  constructor(private readonly o: AmqpServerOptions) {
    this.handshakeTimeoutMs = o.handshakeTimeoutMs ?? 10_000;
    this.maxConnectionsPerIp = o.maxConnectionsPerIp ?? 50;
    this.preAuthMaxFrame = o.preAuthMaxFrame ?? 4096;
    this.maxDeliveryBytes = o.maxMessageBytes + ENVELOPE_BYTES;
  }

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? this.o.port;
  }

  async start(): Promise<void> {
    const container = rhea.create_container({ id: 'switchboard' });
    // Announces PLAIN and makes rhea require SASL; each connection then gets its own PLAIN (see
    // accept), which knows the client's address. This container-wide one is never asked.
    container.sasl_server_mechanisms.enable_plain(() => false);
    // Every handler is on the container, none on a connection: rhea hands a connection's events to
    // the container only while the connection has no listener of its own for them.
    container.on('connection_open', (ctx: EventContext) => this.opened(ctx.connection));
    container.on('receiver_open', (ctx: EventContext) => this.clientSends(ctx.connection, ctx.receiver as Receiver));
    container.on('sender_open', (ctx: EventContext) => this.clientReceives(ctx.connection, ctx.sender as Sender));
    container.on('message', (ctx: EventContext) => void this.onMessage(ctx));
    for (const ev of ['accepted', 'rejected', 'released', 'modified'] as const) {
      container.on(ev, (ctx: EventContext) => {
        const d = ctx.delivery as Delivery;
        const o = this.outcomes.get(d);
        if (!o) return;
        this.outcomes.delete(d);
        settle(o, ev, d);
      });
    }
    const closeLink = (ctx: EventContext) => void this.linkGone((ctx.sender ?? ctx.receiver) as Link);
    container.on('sender_close', closeLink);
    container.on('receiver_close', closeLink);
    // A session ended without detaching its links takes them with it.
    const endSession = (ctx: EventContext) => { for (const [link] of this.links) if (link.session === ctx.session) void this.linkGone(link); };
    container.on('session_close', endSession);
    container.on('session_error', (ctx: EventContext) => { this.o.log.debug({ err: describe(ctx.session?.error) }, 'AMQP client session error'); endSession(ctx); });
    // A client's close without detaching fires only connection_close; a killed client, disconnected.
    container.on('connection_close', (ctx: EventContext) => void this.connectionGone(ctx.connection));
    container.on('connection_error', (ctx: EventContext) => { this.o.log.debug({ err: describe(ctx.connection.error) }, 'AMQP client connection error'); void this.connectionGone(ctx.connection); });
    container.on('disconnected', (ctx: EventContext) => void this.connectionGone(ctx.connection));
    container.on('protocol_error', (err: unknown) => this.o.log.info({ err: describe(err) }, 'AMQP client protocol error'));
    container.on('error', (err: unknown) => this.o.log.warn({ err: describe(err) }, 'AMQP endpoint error'));
    const t = this.o.tls;
    const options = {
      port: this.o.port,
      host: this.o.host,
      autoaccept: false,
      credit_window: 0,
      max_frame_size: MAX_FRAME_BYTES,
      offered_capabilities: ['ANONYMOUS-RELAY'],
      ...(t ? { transport: 'tls', key: t.key, cert: t.cert, ...(t.ca ? { ca: t.ca } : {}) } : {}),
    };
    // Our own listener in place of rhea's container.listen, which hands each socket to a new
    // connection before anyone can look: here the address is checked first, and the connection
    // is known with its socket.
    this.server = t ? createTlsServer({ ...(options as object), handshakeTimeout: this.handshakeTimeoutMs }) : createServer();
    this.server.on('connection', (socket: Socket) => this.admit(socket));
    this.server.on(t ? 'secureConnection' : 'connection', (socket: Socket) => {
      if (!socket.destroyed) this.accept(container.create_connection(options as never), socket);
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('listening', () => resolve());
      this.server!.once('error', reject);
      this.server!.listen({ port: this.o.port, host: this.o.host });
    });
    this.o.log.info({ port: this.port, tls: Boolean(t) }, 'AMQP 1.0 endpoint listening');
  }

  /**
   * A new TCP connection, before TLS and before any AMQP: it counts against its address's
   * connections, and one over `maxConnectionsPerIp` is closed at once.
   */
  private admit(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const ip = socket.remoteAddress ?? '(unknown)';
    const key = ipKeyGenerator(ip);
    const open = this.perIp.get(key) ?? 0;
    if (open >= this.maxConnectionsPerIp) {
      socket.destroy();
      this.refused(ip, `AMQP connection refused: ${open} connections from this address are open already (amqp.maxConnectionsPerIp is ${this.maxConnectionsPerIp})`);
      return;
    }
    this.perIp.set(key, open + 1);
    socket.once('close', () => {
      const n = (this.perIp.get(key) ?? 1) - 1;
      if (n > 0) this.perIp.set(key, n);
      else this.perIp.delete(key);
    });
  }

  /** Audits and logs a client refused before its login. */
  private refused(ip: string, detail: string): void {
    this.o.log.info({ ip }, detail);
    this.o.auth.refused({ ip, door: 'amqp' }, detail).catch((err) => this.o.log.warn({ err: (err as Error).message }, 'could not audit an AMQP refusal'));
  }

  /**
   * Hands the socket to rhea with the door in between. Every incoming chunk's framing is checked
   * before rhea reads it: small frames until SASL succeeds, then the max-frame-size we announce
   * (rhea would buffer any size a client declares). SASL PLAIN goes through the Authenticator
   * with the client's address, so failed logins count and are audited as over HTTP. SASL and
   * open must finish within the handshake timeout. And two things rhea does not do as a broker
   * should: a client that skips SASL gets the SASL header, PLAIN as the only mechanism and the
   * outcome "auth" (rhea ends the socket without a word); and whatever way the socket ends, its
   * connection's links and temporary queues are cleaned up (rhea reports a close after our own
   * close with no event at all).
   */
  private accept(connection: Connection, socket: Socket): void {
    const ip = socket.remoteAddress ?? '(unknown)';
    const door: ClientDoor = { ip, socket, gate: new FrameGate(this.preAuthMaxFrame, MAX_FRAME_BYTES) };
    this.doors.set(connection, door);
    const c = connection as unknown as { accept(s: Socket): void; input(chunk: Buffer): void; sasl_transport?: { mechanisms: Record<string, () => PlainLogin> } };
    c.accept(socket);
    if (c.sasl_transport) c.sasl_transport.mechanisms = { PLAIN: () => new PlainLogin((user, password) => this.login(door, user, password)) };
    door.timer = setTimeout(() => {
      this.refused(ip, `AMQP client did not finish SASL and open within ${this.handshakeTimeoutMs} ms (amqp.handshakeTimeout); connection closed`);
      socket.destroy();
    }, this.handshakeTimeoutMs);
    socket.removeAllListeners('data');
    let first = true;
    socket.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        if (chunk.length >= 5 && chunk.subarray(0, 4).toString('latin1') === 'AMQP' && chunk[4] === 0) {
          this.o.log.info({ ip }, 'AMQP client without SASL refused: authenticate with SASL PLAIN');
          socket.end(Buffer.concat([SASL_HEADER, SASL_MECHANISMS_PLAIN, SASL_OUTCOME_AUTH]));
          return;
        }
      }
      const refusal = door.gate.read(chunk);
      if (refusal) return this.frameRefused(connection, door, refusal);
      c.input.call(connection, chunk);
    });
    socket.once('close', () => {
      clearTimeout(door.timer);
      if (this.conns.has(connection)) void this.connectionGone(connection);
    });
  }

  /** A frame over the limit: the socket closes before the frame's body is read. */
  private frameRefused(connection: Connection, door: ClientDoor, r: FrameRefusal): void {
    door.socket.removeAllListeners('data');
    if (r.beforeLogin) {
      const what = r.size < 8 ? `a frame declared ${r.size} bytes, less than a frame header,` : `a frame of ${r.size} bytes`;
      this.refused(door.ip, `AMQP client sent ${what} before logging in (at most ${r.limit} bytes until SASL succeeds, amqp.preAuthMaxFrame); connection closed`);
      door.socket.destroy();
      return;
    }
    const conn = this.conns.get(connection);
    const description = r.size < 8 ? `a frame declared ${r.size} bytes, less than a frame header` : `a frame of ${r.size} bytes is over the max-frame-size of ${r.limit} announced in our open`;
    this.o.log.info({ ip: door.ip, principal: conn ? principalId(conn.principal) : undefined }, `AMQP connection closed: ${description}`);
    connection.close({ condition: 'amqp:connection:framing-error', description });
    // The close is written on rhea's next tick; the socket ends just after it.
    setTimeout(() => door.socket.destroy(), 100);
  }

  /** SASL PLAIN for one connection: the same Authenticator, limits and audit as HTTP logins. */
  private async login(door: ClientDoor, username: string, password: string): Promise<boolean> {
    try {
      door.principal = await this.o.auth.password(username, password, { door: 'amqp', ip: door.ip });
      door.gate.loggedIn = true;
      return true;
    } catch (err) {
      if (err instanceof TooManyAttempts) this.o.log.info({ ip: door.ip }, `AMQP login refused: ${err.message}`);
      else if (!(err instanceof SwitchboardError) || err.status === 503) this.o.log.warn({ err: (err as Error).message }, 'AMQP login could not be checked');
      // One try per connection: the socket ends once rhea has written the outcome.
      setImmediate(() => door.socket.end());
      return false;
    }
  }

  private opened(connection: Connection): void {
    const door = this.doors.get(connection);
    const p = door?.principal;
    if (!p) {
      connection.close({ condition: 'amqp:unauthorized-access', description: 'authenticate with SASL PLAIN as a directory user' });
      return;
    }
    clearTimeout(door.timer);
    const temporary: string[] = [];
    const caller: Caller = { principal: p, door: 'amqp', ip: door.ip, owns: temporary };
    this.conns.set(connection, { id: `${this.id}-${++this.nextConnection}`, principal: p, caller, links: new Set(), temporary });
    this.openConnections.add(connection);
    // Sessions begin after the open: each one is made to tell links apart by name *and* direction.
    const c = connection as unknown as { create_session: (...a: unknown[]) => Session };
    const create = c.create_session.bind(connection);
    c.create_session = (...a: unknown[]) => {
      const s = create(...a);
      this.patchSession(s as unknown as RheaSession);
      return s;
    };
  }

  /**
   * AMQP names a link by its name and its direction (2.6.1): helloworld.py attaches a sender and a
   * receiver of the same name. rhea keys a session's links by name only and would hand the second
   * attach to the first link (and drop the connection); here the direction is part of the key.
   * The coordinator of a transaction is noted before rhea drops it as an unknown target.
   * Transfers are counted per delivery as they arrive (rhea would assemble any size), so one that
   * passes `maxMessageBytes` (plus its envelope) is refused before it is whole.
   */
  private patchSession(session: RheaSession): void {
    const coordinators = this.coordinators;
    const transfer = session.on_transfer;
    const assembled = new WeakMap<Link, number>();
    session.on_transfer = (frame: TransferFrame) => {
      const link = session.remote.handles[frame.performative.handle];
      // Transfers the client sent before it read our detach: counted for the session's window, dropped.
      if (link && this.oversized.has(link)) {
        session.incoming.next_transfer_id++;
        return;
      }
      const bytes = (link ? assembled.get(link) ?? 0 : 0) + (frame.payload?.length ?? 0);
      if (!link || bytes <= this.maxDeliveryBytes) {
        if (link && frame.performative.more) assembled.set(link, bytes);
        else if (link) assembled.delete(link);
        transfer.call(session, frame);
        return;
      }
      assembled.delete(link);
      const partial = (link as unknown as { _incomplete?: Assembling })._incomplete;
      if (partial) session.incoming.next_transfer_id++;
      // A first transfer over the limit (only when maxFrame > the limit) starts its delivery in rhea.
      else transfer.call(session, { ...frame, performative: { ...frame.performative, more: true } });
      this.oversize(link, bytes);
    };
    session.on_attach = function (this: RheaSession, frame) {
      const p = frame.performative;
      const weSend = Boolean(p.role);
      let link = Object.values(this.links).find((l) => l.name === p.name && l.is_sender() === weSend);
      const coordinator = !weSend && p.target?.descriptor !== undefined && COORDINATOR.has(p.target.descriptor.value);
      if (!link) {
        const other = this.links[p.name];
        link = weSend ? this.create_sender(p.name) : this.create_receiver(p.name);
        if (other && other !== link) {
          this.links[p.name] = other;
          this.links[`${p.name}\u0000${weSend ? 'sender' : 'receiver'}`] = link;
        }
      }
      if (coordinator) {
        coordinators.add(link);
        p.target = null;
      }
      this.remote.handles[p.handle] = link;
      (link as unknown as { on_attach(f: unknown): void }).on_attach(frame);
      (link as unknown as { remote: { attach: unknown } }).remote.attach = p;
    };
    session.remove_link = function (this: RheaSession, link: Link) {
      const l = link as unknown as { remote: { handle: number }; local: { handle: number } };
      delete this.remote.handles[l.remote.handle];
      delete this.local.handles[l.local.handle];
      for (const [k, v] of Object.entries(this.links)) if (v === link) delete this.links[k];
    };
  }

  /**
   * A delivery on `link` passed the size limit while it arrived: what rhea holds of it is dropped
   * and settled, and the link is detached with amqp:link:message-size-exceeded. Nothing of it
   * reaches the router.
   */
  private oversize(link: Link, bytes: number): void {
    const l = link as unknown as { _incomplete?: Assembling };
    if (l._incomplete) {
      l._incomplete.frames = [];
      // Settled here so rhea frees its place in the session's window.
      l._incomplete.settled = true;
      l._incomplete = undefined;
    }
    this.oversized.add(link);
    const entry = this.links.get(link);
    this.refuse(link, entry?.conn, {
      condition: 'amqp:link:message-size-exceeded',
      description: `a message on this link passed ${this.maxDeliveryBytes} bytes (maxMessageBytes ${this.o.maxMessageBytes} plus ${ENVELOPE_BYTES} for its properties) after ${bytes} bytes had arrived; it was refused before it was whole and nothing of it was delivered`,
    }, entry?.address);
    void this.linkGone(link);
  }

  /** Refuses a link with an AMQP error; the connection stays up. */
  private refuse(link: Link, conn: ClientConnection | undefined, error: { condition: string; description: string }, address?: string): void {
    link.close(error);
    this.o.log.info({ principal: conn ? principalId(conn.principal) : undefined, address, err: error.description }, 'AMQP link refused');
  }

  private notImplemented(description: string): { condition: string; description: string } {
    return { condition: 'amqp:not-implemented', description };
  }

  /** Why a terminus cannot be served, or undefined. */
  private unsupported(t: Terminus | null | undefined, role: 'source' | 'target'): string | undefined {
    if (!t) return undefined;
    const filters = t.filter ? Object.keys(t.filter) : [];
    if (role === 'source' && filters.length > 0) return `filters are not supported (${filters.join(', ')}); a JMS selector or other filter would be ignored, so the link is refused`;
    if (role === 'source' && t.distribution_mode !== undefined && t.distribution_mode !== null && t.distribution_mode !== 'move' && t.distribution_mode !== 'copy') return `distribution mode '${t.distribution_mode}' is not supported`;
    const topic = role === 'source' && typeof t.address === 'string' && t.address.startsWith('topic:');
    const unknown = list(t.capabilities).filter((c) => !KNOWN_CAPABILITIES.has(String(c)) && !(topic && TOPIC_CAPABILITIES.has(String(c))));
    if (unknown.length > 0) return `${role} capabilities not supported: ${unknown.join(', ')} (supported: ${[...KNOWN_CAPABILITIES].join(', ')})`;
    return undefined;
  }

  /** The tmp: transport, when the gateway has one. */
  private temporaryQueues(): TemporaryQueues | undefined {
    return this.o.temporaryQueues;
  }

  /**
   * A new temporary queue of this connection (a dynamic terminus). Its address is known at once:
   * rhea sends the attach reply on the next tick, and it must carry the address. The queue is
   * created by commands queued on the shared Redis connection before anything that could use it.
   */
  private temporary(conn: ClientConnection): string {
    const tmp = this.temporaryQueues();
    if (!tmp) throw new SwitchboardError('not_implemented', 'temporary queues (dynamic: true) are not available in this gateway', 501);
    const address = `tmp:${conn.id}/${conn.temporary.length + 1}`;
    conn.temporary.push(address);
    tmp.openTemporary(address).catch((err) => this.o.log.warn({ address, err: (err as Error).message }, 'could not create a temporary queue'));
    return address;
  }

  /**
   * Asks the router whether this connection may attach there (audited when refused), then
   * admits the link or refuses it with the reason. Rhea has answered the attach by then; a link
   * is refused by closing it with the condition, as brokers do.
   */
  private authorizeLink(link: Link, conn: ClientConnection, action: Action, address: string, admit: () => void): void {
    this.o.router.authorize(action, address, conn.caller).then(() => {
      if (!link.is_closed()) admit();
    }, (err) => this.refuse(link, conn, condition(err), address));
  }

  private remoteAttach(link: Link): { source?: Terminus | null; target?: Terminus | null } {
    return (link as unknown as { remote: { attach?: { source?: Terminus | null; target?: Terminus | null } } }).remote.attach ?? {};
  }

  /** The client sends on this link: we are its receiver. */
  private clientSends(connection: Connection, receiver: Receiver): void {
    const conn = this.conns.get(connection);
    const { source, target } = this.remoteAttach(receiver);
    // Attach replies carry both termini (uamqp waits for them); ours echo what the client asked.
    receiver.set_source((source ?? {}) as never);
    if (this.coordinators.has(receiver)) {
      this.refuse(receiver, conn, this.notImplemented('transactions are not supported: send without a transaction (each message is settled on its own)'));
      return;
    }
    receiver.set_target((target ?? {}) as never);
    if (!conn) return this.refuse(receiver, conn, { condition: 'amqp:unauthorized-access', description: 'authenticate with SASL PLAIN as a directory user' });
    const why = this.unsupported(target, 'target');
    if (why) return this.refuse(receiver, conn, this.notImplemented(why), target?.address ?? undefined);
    const admitted = (address: string | undefined) => {
      if (!this.conns.has(connection)) return;
      this.links.set(receiver, { principal: conn.principal, verb: 'send', conn, unwritten: 0, ...(address !== undefined ? { address } : {}) });
      conn.links.add(receiver);
      receiver.add_credit(this.o.credit);
    };
    // Announced in the attach, so a client that honours it can refuse an oversized send itself.
    (receiver as unknown as { local: { attach: { max_message_size?: number } } }).local.attach.max_message_size = this.maxDeliveryBytes;
    if (target?.dynamic) {
      try {
        const address = this.temporary(conn);
        receiver.set_target({ address, dynamic: true, expiry_policy: target.expiry_policy, capabilities: target.capabilities } as never);
        return admitted(address);
      } catch (err) {
        return this.refuse(receiver, conn, condition(err));
      }
    }
    // No target address: the anonymous relay, each message to its own `to`, checked per message.
    if (target?.address === undefined || target?.address === null) return admitted(undefined);
    let address: string;
    try {
      address = parseAddress(target.address).raw;
    } catch (err) {
      return this.refuse(receiver, conn, condition(err), target.address);
    }
    // The sending right, asked at attach so a client without it learns at once (each message is
    // still decided by the pipeline: a right revoked meanwhile stops the next one).
    this.authorizeLink(receiver, conn, 'send', address, () => admitted(address));
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
      const raw = ctx.message as unknown as AmqpMessage;
      const to = link.address ?? parseAddress(raw.to ?? undefined).raw;
      const m = fromAmqp(raw, to, { kind: 'user', name: link.principal.name }, { maxBytes: this.o.maxMessageBytes });
      // Authorized per message by the router's pipeline: a right revoked while the link is open
      // stops the next message, and the anonymous relay's `to` is checked like any other.
      await this.o.router.send(m, { principal: link.principal, door: 'amqp' });
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

  /** The client receives on this link: we are its sender. */
  private clientReceives(connection: Connection, sender: Sender): void {
    const conn = this.conns.get(connection);
    const { source, target } = this.remoteAttach(sender);
    sender.set_target((target ?? {}) as never);
    sender.set_source((source ?? {}) as never);
    if (!conn) return this.refuse(sender, conn, { condition: 'amqp:unauthorized-access', description: 'authenticate with SASL PLAIN as a directory user' });
    const why = this.unsupported(source, 'source');
    if (why) return this.refuse(sender, conn, this.notImplemented(why), source?.address ?? undefined);
    if (source?.dynamic) {
      try {
        const address = this.temporary(conn);
        sender.set_source({ address, dynamic: true, expiry_policy: source.expiry_policy, capabilities: source.capabilities } as never);
        return this.consume(connection, conn, sender, address);
      } catch (err) {
        return this.refuse(sender, conn, condition(err));
      }
    }
    let address: string;
    try {
      if (source?.address === undefined || source?.address === null) throw new SwitchboardError('bad_address', 'a receiver needs a source address (a Switchboard address such as queue:orders) or dynamic: true', 400);
      address = parseAddress(source.address).raw;
    } catch (err) {
      return this.refuse(sender, conn, condition(err), source?.address ?? undefined);
    }
    // router.browse and router.consume ask the guard themselves (a refusal comes back to this link);
    // a topic subscription is asked for first, so a refused client makes no subscription.
    if (source.distribution_mode === 'copy') return this.browseLink(conn, sender, address);
    if (address.startsWith('topic:') && !address.includes('?')) return this.authorizeLink(sender, conn, 'consume', address, () => this.subscribe(connection, conn, sender, address, source));
    this.consume(connection, conn, sender, address);
  }

  /**
   * A receiver with distribution mode `copy` browses (Proton's queue_browser, a JMS QueueBrowser):
   * it gets a copy of what the address holds now, oldest first, as far as its credit goes, and
   * nothing is taken from the queue (whatever the client answers: the deliveries are copies).
   * Once the copy is sent, a drain is answered by using up the credit, so the browser can tell the
   * end. Needs `browse`, not `consume`.
   */
  private browseLink(conn: ClientConnection, sender: Sender, address: string): void {
    this.links.set(sender, { principal: conn.principal, verb: 'browse', address, conn, unwritten: 0 });
    conn.links.add(sender);
    this.o.router.browse(address, BROWSE_LIMIT, conn.caller).then((snapshot) => {
      const pending = [...snapshot.messages];
      const pump = () => {
        while (pending.length > 0 && this.links.has(sender) && !sender.is_closed() && sender.sendable()) {
          const m = pending.shift()!;
          sender.send(toAmqp(m, { userId: m.sender.name }) as never);
        }
        if (pending.length === 0) sender.set_drained(true);
      };
      sender.on('sendable', pump);
      sender.on('sender_draining', pump);
      // Proton pipelines attach and flow: nothing goes out before rhea has answered the attach.
      setImmediate(pump);
    }, (err) => {
      this.refuse(sender, conn, condition(err), address);
      void this.linkGone(sender);
    });
  }

  /**
   * A receiver on a topic (DESIGN §6), by the Artemis/Qpid JMS convention: with a durable source
   * (durable ≥ 1 or expiry-policy never) the link name is a durable subscription's name, and the
   * `shared` capability makes it shared (Qpid JMS names further links of a shared subscription
   * `<name>|2`, `<name>|global`…: the name is what comes before the first `|`). A shared
   * non-durable subscription lives while its links do; any other receiver gets a subscription of
   * its own that is deleted when the link detaches (the topic transport does that on close).
   */
  private subscribe(connection: Connection, conn: ClientConnection, sender: Sender, address: string, source: Terminus): void {
    const shared = list(source.capabilities).map(String).includes('shared');
    const durable = (source.durable ?? 0) >= 1 || source.expiry_policy === 'never';
    if (!durable && !shared) return this.consume(connection, conn, sender, address);
    const ep = this.o.topics;
    if (!ep) return this.refuse(sender, conn, this.notImplemented('named subscriptions are not available on this gateway'), address);
    const name = sender.name.split('|')[0] ?? '';
    ep.createSubscription(address.slice('topic:'.length), name, { durable, shared, createdBy: principalId(conn.principal) })
      .then(({ subscription }) => {
        // rhea answered the attach already; the link may have gone while the subscription was made.
        if (!sender.is_closed()) this.consume(connection, conn, sender, subscription.address);
      })
      .catch((err) => this.refuse(sender, conn, condition(err), address));
  }

  private consume(connection: Connection, conn: ClientConnection, sender: Sender, address: string): void {
    if (!this.conns.has(connection)) return;
    const entry: LinkEntry = { principal: conn.principal, verb: 'consume', address, conn, unwritten: 0 };
    this.links.set(sender, entry);
    conn.links.add(sender);
    this.o.router
      .consume(address, async (m) => {
        if (!this.links.has(sender)) throw new DestinationUnavailable('amqp client', 'the link is gone');
        // A right revoked while the link is open stops the next message (recheck closes the link).
        if (!this.o.router.allows('consume', address, conn.caller)) throw new PermissionDenied(principalId(conn.principal), 'consume', address);
        // rhea takes a send without credit and queues it in the session, where it blocks every
        // later transfer and, once its link is gone, goes out on a reused handle. So a send waits
        // for credit not already promised to a send that rhea has not written yet — in line, so
        // messages leave in the order the queue handed them out (a client that numbers its
        // messages, like Proton's simple_recv, must not see 7 before 6).
        await new Promise<void>((resolve, reject) => {
          (entry.waiting ??= []).push({ resolve, reject });
          this.pump(sender, entry);
        });
        await new Promise<void>((resolve, reject) => {
          // The credit was reserved by pump (entry.unwritten) when this message's turn came.
          if (!this.links.has(sender) || sender.is_closed()) {
            entry.unwritten--;
            reject(new DestinationUnavailable('amqp client', 'the link is gone'));
            return;
          }
          // user_id names who sent the message (DESIGN §6), never the consumer it goes to.
          const d = sender.send(toAmqp(m, { userId: m.sender.name }) as never);
          // rhea writes on its next tick (and takes the credit then); this runs just after.
          process.nextTick(() => entry.unwritten--);
          this.outcomes.set(d, { resolve, reject });
        });
      }, { maxInFlight: Math.min(this.o.credit, 100) }, conn.caller)
      .then((sub) => {
        if (this.links.has(sender)) entry.sub = sub;
        else void sub.close();
      })
      .catch((err) => {
        this.refuse(sender, conn, condition(err), address);
        void this.linkGone(sender);
      });
  }

  /**
   * Lets the waiting sends of one consumer link go, oldest first, while the client has credit
   * not promised to a send rhea has not written yet; looks again shortly when it has none. A
   * link that is gone fails every waiting send, which hands its message back to the queue.
   */
  private pump(sender: Sender, entry: LinkEntry): void {
    const waiting = entry.waiting ?? [];
    while (waiting.length > 0) {
      // rhea still calls a detached link sendable (its credit stays): never send on one.
      if (!this.links.has(sender) || sender.is_closed()) {
        for (const w of waiting.splice(0)) w.reject(new DestinationUnavailable('amqp client', 'the link is gone'));
        return;
      }
      if (!(sender.sendable() && (sender as unknown as { credit: number }).credit > entry.unwritten)) {
        entry.pumpTimer ??= setTimeout(() => {
          entry.pumpTimer = undefined;
          this.pump(sender, entry);
        }, 50);
        return;
      }
      entry.unwritten++;
      waiting.shift()!.resolve();
    }
  }

  /**
   * A link ended (detached, its session or connection gone). Messages it held go back to their
   * queue unless the client settled them: rhea delivers a detach or close before the dispositions
   * that arrived just ahead of it, so the outcome the client sent is read from the delivery.
   */
  private async linkGone(link: Link): Promise<void> {
    const entry = this.links.get(link);
    if (!entry) return;
    this.links.delete(link);
    entry.conn.links.delete(link);
    if (entry.pumpTimer) clearTimeout(entry.pumpTimer);
    if (link.is_sender()) this.pump(link as Sender, entry);
    for (const [d, o] of this.outcomes) {
      if (d.link !== link) continue;
      this.outcomes.delete(d);
      const state = (d.remote_state as { constructor?: { composite_type?: string } } | undefined)?.constructor?.composite_type;
      if (state === 'accepted' || state === 'rejected') settle(o, state, d);
      else o.reject(new DestinationUnavailable('amqp client', 'the link closed before the client settled'));
    }
    await entry.sub?.close();
  }

  /** A connection ended however it ended: its links go, then its temporary queues with their messages. */
  private async connectionGone(connection: Connection): Promise<void> {
    const conn = this.conns.get(connection);
    this.openConnections.delete(connection);
    if (!conn) return;
    this.conns.delete(connection);
    await Promise.all([...conn.links].map((l) => this.linkGone(l)));
    const tmp = this.temporaryQueues();
    for (const address of conn.temporary) await tmp?.deleteTemporary(address).catch((err) => this.o.log.warn({ address, err: (err as Error).message }, 'could not delete a temporary queue'));
  }

  /** Detaches links whose principal lost the right (used when rules change). */
  recheck(): void {
    for (const [link, e] of this.links) {
      if (e.address === undefined) continue;
      if (!this.o.router.allows(e.verb, e.address, e.conn.caller)) {
        link.close({ condition: 'amqp:unauthorized-access', description: `${principalId(e.principal)} may no longer ${e.verb} on ${e.address}` });
        void this.linkGone(link);
      }
    }
  }

  async close(): Promise<void> {
    const open = [...this.openConnections];
    await Promise.all([...this.conns.keys()].map((c) => this.connectionGone(c)));
    const closed = new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    // Clients are told by a close; their unsettled messages are already back in their queues.
    // rhea does not notice a destroyed socket, so its connections are closed and ended first.
    // `connection:forced` is how AMQP says "going away, come back later": clients reconnect.
    for (const c of open) c.close({ condition: 'amqp:connection:forced', description: 'the gateway is stopping' });
    await new Promise((r) => setTimeout(r, 100));
    for (const s of this.sockets) s.destroy();
    for (const c of open) (c as unknown as { _disconnected?: () => void })._disconnected?.();
    await closed;
  }
}

/** Resolves or rejects a delivery's waiter by the client's outcome. */
function settle(o: { resolve: () => void; reject: (e: Error) => void }, outcome: string, d: Delivery): void {
  if (outcome === 'accepted') o.resolve();
  else if (outcome === 'rejected') o.reject(new SwitchboardError('client_rejected', `the client rejected the message: ${describe((d.remote_state as { error?: unknown } | undefined)?.error) || 'no reason given'}`));
  else o.reject(new DestinationUnavailable('amqp client', `the client ${outcome} the message`));
}
