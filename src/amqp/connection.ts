import { EventEmitter } from 'node:events';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import type { Logger } from 'pino';
import { DestinationUnavailable, SwitchboardError } from '../core/errors.ts';
import type { AmqpMessage } from './mapping.ts';

export interface BrokerConfig {
  name: string;
  url: string;
  username?: string;
  password?: string;
  /** SASL mechanism: PLAIN with username/password, ANONYMOUS, or EXTERNAL with a client certificate. */
  sasl: 'PLAIN' | 'ANONYMOUS' | 'EXTERNAL';
  /** TLS for amqps:// URLs; ca, cert and key are PEM texts (read at the config edge), not paths. */
  tls?: { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean; servername?: string };
  containerId?: string;
  /** rabbitmq: mq:b/x is the queue x (/queue/x, durable terminus). plain: the path is the AMQP address. */
  addressFormat: 'rabbitmq' | 'plain';
  /** How long a send waits for the broker's settlement before it counts as failed. */
  sendTimeoutMs: number;
  /** Extra TLS options (e.g. checkServerIdentity for a peer whose certificate must name an identity). */
  tlsExtra?: Record<string, unknown>;
  /**
   * Opens the connection's socket instead of rhea (its `connect` hook), e.g. through a proxy:
   * called with the port, host and the TLS options above on every connect and reconnect, it
   * returns the socket at once and calls `connected` when it is ready. @defaultValue rhea's own
   */
  dial?: (port: number, host: string, options: Record<string, unknown>, connected: () => void) => unknown;
  /**
   * Reconnect (with the same backoff) after the remote closed the connection with any error, not
   * only `amqp:connection:forced`: rhea otherwise takes an error close as final and the connection
   * stays down for good. For a peer, a refusal can end (a certificate no longer revoked, a map
   * updated on the other side). @defaultValue false
   */
  retryRefused?: boolean;
}

/** The broker said no to a message (rejected): not worth repeating as it is. */
export class BrokerRejected extends SwitchboardError {
  constructor(broker: string, address: string, reason: string) {
    super('broker_rejected', `broker '${broker}' rejected the message for ${address}: ${reason}`, 502);
  }
}

/** A send waiting for the broker's settlement, until `deadline` (epoch ms). */
type Outcome = { resolve: () => void; reject: (err: Error) => void; deadline: number; address: string };

/** The fields of the broker's AMQP open frame that a qualification looks at. */
export interface RemoteOpen {
  container_id?: string;
  max_frame_size?: number;
  offered_capabilities?: unknown;
  properties?: Record<string, unknown>;
}

/** What a Broker tells the links that live on its connection (typed, one listener list each). */
export interface BrokerEvents {
  /** The connection is open (first time, or again after a reconnect). */
  open: [];
  /** The broker ended a session: every link in it is gone for good and must be attached anew. */
  session_end: [session: unknown];
}

/**
 * One AMQP 1.0 connection to an in-house broker (rhea): reconnects with backoff and jitter,
 * re-attaches its links, and keeps a sender per address. A send resolves only when the broker
 * accepted the message (settlement); released, modified, a timeout or a lost connection is
 * "unavailable, try again", a rejection is final.
 */
export class Broker {
  private connection?: Connection;
  private readonly senders = new Map<string, Sender>();
  private readonly pending = new Map<Sender, Map<number, Outcome>>();
  private state: 'connecting' | 'open' | 'down' = 'connecting';
  private lastError = '';
  private readonly openWaiters = new Set<() => void>();
  /** One wait for credit per sender, shared by every send waiting on it (one `sendable` listener). */
  private readonly creditWaits = new Map<Sender, Promise<void>>();
  private readonly events = new EventEmitter();
  private closing = false;
  /**
   * Fails sends the broker has not settled by their deadline. One interval per connection instead
   * of a timer per send: a bridge sends thousands a second, and a timer each (made, then cleared
   * at the settlement) was ~2 µs of its CPU a message. A send fails at most a quarter of its
   * timeout (at most 1 s) after its deadline.
   */
  private settlementSweep?: NodeJS.Timeout;

  constructor(readonly config: BrokerConfig, private readonly log: Logger) {}

  /**
   * Listen to the connection's life: links that must outlive a broker restart re-attach on
   * `open` and `session_end`. (Listening on a rhea session or connection directly would stop rhea
   * from passing those events on to this class, which then misses sessions the broker ended.)
   */
  on<K extends keyof BrokerEvents>(event: K, listener: (...args: BrokerEvents[K]) => void): () => void {
    this.events.on(event, listener as (...args: unknown[]) => void);
    return () => this.events.off(event, listener as (...args: unknown[]) => void);
  }

  /** The open connection's offered capabilities and properties as the broker sent them (for checks). */
  get remoteOpen(): RemoteOpen | undefined {
    return (this.connection as unknown as { remote?: { open?: RemoteOpen } } | undefined)?.remote?.open;
  }

  get status(): { state: string; lastError?: string } {
    return { state: this.state, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  /** The AMQP address for a Switchboard path (`mq:<broker>/<path>`). */
  address(path: string): string {
    return this.config.addressFormat === 'rabbitmq' ? `/queue/${path}` : path;
  }

  start(): void {
    this.settlementSweep = setInterval(() => this.failUnsettled(), Math.max(25, Math.min(1000, this.config.sendTimeoutMs / 4))).unref();
    const u = new URL(this.config.url);
    const tls = u.protocol === 'amqps:';
    const t = this.config.tls;
    const options: Record<string, unknown> = {
      host: u.hostname,
      port: Number(u.port || (tls ? 5671 : 5672)),
      container_id: this.config.containerId ?? `switchboard-${this.config.name}`,
      reconnect: true,
      initial_reconnect_delay: 200,
      max_reconnect_delay: 10_000,
      idle_time_out: 30_000,
      ...(this.config.sasl === 'PLAIN' ? { username: this.config.username ?? decodeURIComponent(u.username), password: this.config.password ?? decodeURIComponent(u.password) } : {}),
      // rhea picks ANONYMOUS for a user name without a password, and EXTERNAL (the TLS client
      // certificate) when asked to.
      ...(this.config.sasl === 'ANONYMOUS' ? { username: 'anonymous' } : {}),
      ...(this.config.sasl === 'EXTERNAL' ? { enable_sasl_external: true } : {}),
      ...(this.config.dial ? { connect: this.config.dial } : {}),
      ...(this.config.retryRefused ? { all_errors_non_fatal: true } : {}),
      ...(tls ? { transport: 'tls', rejectUnauthorized: t?.rejectUnauthorized ?? true, ...(t?.ca ? { ca: t.ca } : {}), ...(t?.cert ? { cert: t.cert } : {}), ...(t?.key ? { key: t.key } : {}), ...(t?.servername ? { servername: t.servername } : /^[\d.]+$|:/.test(u.hostname) ? {} : { servername: u.hostname }), ...(this.config.tlsExtra ?? {}) } : {}),
    };
    // rhea adds jitter to reconnect delays; each attempt is logged once as state, not per retry.
    const container = rhea.create_container({ id: options.container_id as string });
    const c = container.connect(options as unknown as ConnectionOptions);
    this.connection = c;
    c.on('connection_open', () => {
      this.state = 'open';
      this.lastError = '';
      this.log.info({ broker: this.config.name }, 'broker connected');
      for (const w of this.openWaiters) w();
      this.openWaiters.clear();
      this.events.emit('open');
    });
    c.on('disconnected', (ctx: EventContext) => {
      const reason = (ctx as { error?: Error }).error?.message ?? 'disconnected';
      if (this.state === 'open' && !this.closing) this.log.warn({ broker: this.config.name, err: reason }, 'broker disconnected; reconnecting with backoff');
      this.state = 'down';
      this.lastError = reason;
      this.failPending(new DestinationUnavailable(`mq:${this.config.name}`, 'the broker connection was lost before it confirmed the message'));
    });
    // A bad address or a refused attach ends the session; without these listeners rhea would
    // re-raise the error on the container and take the process down.
    c.on('connection_error', (ctx: EventContext) => { this.lastError = describe(ctx.connection.error); this.log.warn({ broker: this.config.name, err: this.lastError }, 'broker connection error'); });
    c.on('session_error', (ctx: EventContext) => { this.lastError = describe(ctx.session?.error); this.log.warn({ broker: this.config.name, err: this.lastError }, 'broker session error'); this.dropSession(ctx); });
    c.on('session_close', (ctx: EventContext) => this.dropSession(ctx));
    c.on('error', (err: unknown) => { this.lastError = describe(err); this.log.warn({ broker: this.config.name, err: this.lastError }, 'broker error'); });
    c.on('sender_error', (ctx: EventContext) => this.linkError(ctx));
    c.on('receiver_error', (ctx: EventContext) => this.linkError(ctx));
    c.on('settled', () => {});
    c.on('accepted', (ctx: EventContext) => this.settle(ctx, undefined));
    c.on('rejected', (ctx: EventContext) => this.settle(ctx, new BrokerRejected(this.config.name, ctx.sender?.target?.address ?? '?', describe((ctx.delivery?.remote_state as { error?: unknown } | undefined)?.error) || 'rejected')));
    c.on('released', (ctx: EventContext) => this.settle(ctx, new DestinationUnavailable(`mq:${this.config.name}`, 'the broker released the message (not taken now)')));
    c.on('modified', (ctx: EventContext) => this.settle(ctx, new DestinationUnavailable(`mq:${this.config.name}`, 'the broker did not take the message (modified)')));
  }

  /** Senders of a session the broker ended are dead: the next send opens a new one (new session). */
  private dropSession(ctx: EventContext): void {
    this.events.emit('session_end', ctx.session);
    for (const [address, s] of this.senders) {
      if ((s as unknown as { session: unknown }).session === ctx.session) {
        this.senders.delete(address);
        this.creditWaits.delete(s);
        const waiting = this.pending.get(s);
        if (waiting) for (const [, o] of waiting) o.reject(new DestinationUnavailable(`mq:${this.config.name}`, 'the broker ended the session before it confirmed the message'));
        this.pending.delete(s);
      }
    }
  }

  private linkError(ctx: EventContext): void {
    const link = (ctx.sender ?? ctx.receiver) as Sender | Receiver | undefined;
    const err = describe(link?.error);
    this.lastError = err;
    this.log.warn({ broker: this.config.name, err }, 'broker refused a link');
    if (ctx.sender) {
      for (const [address, s] of this.senders) if (s === ctx.sender) this.senders.delete(address);
      const waiting = this.pending.get(ctx.sender);
      if (waiting) for (const [, o] of waiting) o.reject(new BrokerRejected(this.config.name, ctx.sender.target?.address ?? '?', err));
      this.pending.delete(ctx.sender);
    }
  }

  private settle(ctx: EventContext, err: Error | undefined): void {
    const d = ctx.delivery as Delivery | undefined;
    if (!d || !ctx.sender) return;
    const o = this.pending.get(ctx.sender)?.get(d.id);
    if (!o) return;
    this.pending.get(ctx.sender)!.delete(d.id);
    if (err) o.reject(err);
    else o.resolve();
  }

  private failPending(err: Error): void {
    for (const [, m] of this.pending) for (const [, o] of m) o.reject(err);
    this.pending.clear();
    this.senders.clear();
    this.creditWaits.clear();
  }

  /** Resolves at the sender's next `sendable`; every send waiting on the sender shares it. */
  private creditFor(s: Sender): Promise<void> {
    let wait = this.creditWaits.get(s);
    if (!wait) {
      wait = new Promise<void>((resolve) => s.once('sendable', () => { this.creditWaits.delete(s); resolve(); }));
      this.creditWaits.set(s, wait);
    }
    return wait;
  }

  /** Resolves when the connection is open, or fails as unavailable after `ms`. */
  async ready(ms: number): Promise<void> {
    if (this.state === 'open' && this.connection?.is_open()) return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => { this.openWaiters.delete(done); reject(new DestinationUnavailable(`mq:${this.config.name}`, `not connected to the broker (${this.lastError || 'connecting'})`)); }, ms);
      const done = () => { clearTimeout(t); resolve(); };
      this.openWaiters.add(done);
    });
  }

  private sender(address: string): Sender {
    let s = this.senders.get(address);
    if (!s || s.is_closed()) {
      s = this.connection!.open_sender({ target: { address, durable: 2 }, autosettle: true });
      this.senders.set(address, s);
      this.pending.set(s, new Map());
    }
    return s;
  }

  /** Sends and resolves once the broker accepted it. */
  async send(address: string, message: AmqpMessage): Promise<void> {
    if (this.state !== 'open' || !this.connection?.is_open()) await this.ready(this.config.sendTimeoutMs);
    const s = this.sender(address);
    if (!s.sendable()) {
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DestinationUnavailable(`mq:${this.config.name}/${address}`, 'the broker gave no credit in time')), this.config.sendTimeoutMs);
      });
      try {
        // Many sends can wake on one `sendable`; each takes credit only if some is left.
        while (!s.sendable()) await Promise.race([this.creditFor(s), expired]);
      } finally {
        clearTimeout(timer);
      }
    }
    await new Promise<void>((resolve, reject) => {
      const d = s.send(message as unknown as Parameters<Sender['send']>[0]);
      // No timer of its own: the sweep (settlementSweep) fails it once past its deadline.
      this.pending.get(s)!.set(d.id, { resolve, reject, deadline: Date.now() + this.config.sendTimeoutMs, address });
    });
  }

  /** A receiver link that gives credit only when asked (manual credit, manual settlement). */
  receiver(address: string): Receiver {
    return this.connection!.open_receiver({ source: { address, durable: 2 }, autoaccept: false, credit_window: 0 });
  }

  /** Fails every send past its deadline with "no settlement", as unavailable (the caller retries). */
  private failUnsettled(): void {
    const now = Date.now();
    for (const waiting of this.pending.values()) {
      for (const [id, o] of waiting) {
        if (o.deadline > now) continue;
        waiting.delete(id);
        o.reject(new DestinationUnavailable(`mq:${this.config.name}/${o.address}`, `no settlement from the broker within ${this.config.sendTimeoutMs} ms`));
      }
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.settlementSweep);
    const c = this.connection;
    if (!c) return;
    // A connection waiting to reconnect would otherwise try again after close, and keep the
    // process alive: stop reconnecting first.
    const internal = c as unknown as { options: { reconnect?: unknown }; scheduled_reconnect?: NodeJS.Timeout };
    internal.options.reconnect = false;
    if (internal.scheduled_reconnect) {
      clearTimeout(internal.scheduled_reconnect);
      internal.scheduled_reconnect = undefined;
    }
    if (!c.is_open()) {
      this.failPending(new DestinationUnavailable(`mq:${this.config.name}`, 'the gateway is stopping'));
      c.close();
      return;
    }
    await new Promise<void>((r) => {
      const t = setTimeout(r, 3000);
      c.once('connection_close', () => { clearTimeout(t); r(); });
      c.once('disconnected', () => { clearTimeout(t); r(); });
      c.close();
    });
    this.failPending(new DestinationUnavailable(`mq:${this.config.name}`, 'the gateway is stopping'));
  }
}

export function describe(err: unknown): string {
  if (!err) return '';
  if (err instanceof Error) return err.message;
  const e = err as { condition?: string; description?: string };
  if (e.condition || e.description) return [e.condition, e.description].filter(Boolean).join(': ');
  return String(err);
}
