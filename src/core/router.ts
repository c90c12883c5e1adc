import type { Logger } from 'pino';
import { parseAddress, type Address } from './address.ts';
import { dedupKey, type DedupStore } from './dedup.ts';
import type { AckResult, BrowseResult, QueueStats, ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, LeasedMessage, SendResult, Subscription } from './endpoint.ts';
import { PermissionDenied, UnknownScheme, ValidationError, isRetryable } from './errors.ts';
import { principalId, type Message } from './message.ts';
import type { Metrics } from './metrics.ts';
import type { ReplayIntent, ReplayIntents } from './replay-intents.ts';
import { ACTION_VERBS, CLIENT_DOORS, compose, type Action, type ActionGuard, type Caller, type SendInterceptor, type SendNext } from './pipeline.ts';

/**
 * Dispatches by scheme to the registered endpoints. Every message passes one chain of
 * interceptors first (authorization, header hygiene, audit, metrics: DESIGN §5), and the router
 * is the single place where dedup, metrics and logging wrap every send and delivery, so no door
 * or transport re-implements them. Every other act (browse, receive, ack, consume, dead letters,
 * replay, discard) names its caller and is decided by one guard here too. Doors hold the router,
 * never an endpoint.
 */
export class Router {
  private readonly endpoints = new Map<string, Endpoint>();
  /** One metrics label object per endpoint, made at registration: a send used to build one for every message. */
  private readonly labels = new Map<string, { readonly endpoint: string }>();
  private readonly chain: SendNext;
  private replays?: ReplayIntents;

  constructor(
    private readonly dedup: DedupStore,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    /** The pipeline, in order; the endpoint comes after the last one. */
    readonly interceptors: readonly SendInterceptor[] = [],
    /** Decides the acts besides sending; without one, only the gateway's own doors may act (default deny). */
    private readonly guard?: ActionGuard,
  ) {
    this.chain = compose(interceptors, ({ message }) => this.dispatch(message));
  }

  /**
   * Where replays of dead letters are recorded (`switchboard.message.replayed`), through a
   * durable intent; without it replays make no event (no mapping wants them).
   */
  recordReplaysIn(intents: ReplayIntents): void {
    this.replays = intents;
  }

  register(endpoint: Endpoint): void {
    this.endpoints.set(endpoint.scheme, endpoint);
    this.labels.set(endpoint.scheme, Object.freeze({ endpoint: endpoint.scheme }));
  }

  get schemes(): string[] {
    return [...this.endpoints.keys()];
  }

  /**
   * Checks that an address is served here (a scheme some transport registered, a target the
   * transport knows); throws the clear error otherwise. Doors and routes get no more than this:
   * the endpoints stay inside the router, so nothing can send around the pipeline.
   */
  check(raw: string): void {
    this.resolve(raw);
  }

  /** Resolves an address to its endpoint; `dlq:X` resolves to X's endpoint. */
  private resolve(raw: string): { address: Address; endpoint: Endpoint } {
    const address = parseAddress(raw);
    const target = address.scheme === 'dlq' ? parseAddress(address.path) : address;
    const endpoint = this.endpoints.get(target.scheme);
    if (!endpoint) throw new UnknownScheme(target.scheme, this.schemes);
    endpoint.checkTarget?.(target.raw);
    return { address: target, endpoint };
  }

  /**
   * Resolves when the destination has durably accepted the message (or had it already). The
   * caller is who hands it over and through which door; the pipeline decides whether it may.
   */
  send(message: Message, caller: Caller): Promise<SendResult> {
    return this.chain({ message, caller }); // compose never throws: a refusal is a rejection
  }

  /** Whether the caller may do this there; records nothing (a page's buttons, an open link's next message). */
  allows(action: Action, address: string, caller: Caller): boolean {
    if (this.guard) return this.guard.allows(action, address, caller);
    return !CLIENT_DOORS.has(caller.door);
  }

  /** Resolves when the caller may do this there; otherwise the refusal is audited and thrown. */
  authorize(action: Action, address: string, caller: Caller): Promise<void> {
    if (this.guard) return this.guard.authorize(action, address, caller);
    if (!CLIENT_DOORS.has(caller.door)) return Promise.resolve();
    return Promise.reject(new PermissionDenied(principalId(caller.principal), ACTION_VERBS[action], address));
  }

  private async dispatch(message: Message): Promise<SendResult> {
    const to = parseAddress(message.to);
    if (to.scheme === 'dlq') throw new ValidationError(`'${to.raw}': dead-letter queues are written by Switchboard only; send to the original address instead`);
    const endpoint = this.endpoints.get(to.scheme);
    if (!endpoint) throw new UnknownScheme(to.scheme, this.schemes);
    endpoint.checkTarget?.(to.raw);
    const label = this.labels.get(endpoint.scheme)!;
    const started = performance.now();
    try {
      let result: SendResult;
      // Same address, same original sender, same id: the one dedup rule (dedupKey). An endpoint
      // that dedups on ingress (atomically with storing) makes its key itself: not hashed twice.
      if (endpoint.dedupsOnIngress) {
        result = await endpoint.send(message);
      } else {
        const entry = this.dedup.entry(to.raw, dedupKey(message));
        if (await this.dedup.seenEntry(entry)) result = { id: message.id, duplicate: true };
        else {
          result = await endpoint.send(message);
          await this.dedup.rememberEntry(entry);
        }
      }
      // The debug lines' fields are built only when they are written: this runs for every message.
      const debug = this.log.isLevelEnabled('debug');
      if (result.duplicate) {
        this.metrics.duplicates.inc(label);
        if (debug) this.log.debug({ msgId: message.id, to: to.raw }, 'duplicate message id: accepted, not delivered again');
      } else {
        this.metrics.messagesIn.inc(label);
        if (debug) this.log.debug({ msgId: message.id, to: to.raw, sender: `${message.sender.kind}:${message.sender.name}` }, 'message accepted');
      }
      this.metrics.sendSeconds.observe(label, (performance.now() - started) / 1000);
      return result;
    } catch (err) {
      this.metrics.messagesFailed.inc(label);
      // A destination that is only busy (full, down) is retried by the caller; one line per retry would drown the log.
      this.log[isRetryable(err) ? 'debug' : 'warn']({ msgId: message.id, to: to.raw, err: (err as Error).message }, 'send failed');
      throw err;
    }
  }

  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions, caller: Caller): Promise<Subscription> {
    const { address: a, endpoint } = this.resolve(address);
    await this.authorize('consume', a.raw, caller);
    if (!endpoint.consume) throw new ValidationError(`messages cannot be consumed from ${a.scheme}: addresses`);
    const label = this.labels.get(endpoint.scheme)!;
    // Made once per subscription, not per delivery: every message passes here.
    const delivered = () => this.metrics.messagesOut.inc(label);
    const failed = (err: unknown) => {
      this.metrics.messagesFailed.inc(label);
      throw err;
    };
    return endpoint.consume(a.raw, (m) => {
      let handled: Promise<void>;
      try {
        handled = handler(m);
      } catch (err) {
        // A handler that throws before it has a promise: counted, and a rejection as before.
        this.metrics.messagesFailed.inc(label);
        return Promise.reject(err);
      }
      return handled.then(delivered, failed);
    }, options);
  }

  async browse(address: string, limit: number, caller: Caller): Promise<BrowseResult> {
    const parsed = parseAddress(address);
    if (parsed.scheme === 'dlq') return this.deadLetters(parsed.path, limit, caller);
    const { endpoint } = this.resolve(address);
    await this.authorize('browse', parsed.raw, caller);
    if (!endpoint.browse) throw new ValidationError(`${parsed.scheme}: addresses cannot be browsed`);
    return endpoint.browse(address, limit);
  }

  async receive(address: string, max: number, leaseMs: number, caller: Caller): Promise<LeasedMessage[]> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.receive || parseAddress(address).scheme === 'dlq') throw new ValidationError(`${address} does not support receive with leases`);
    await this.authorize('receive', a.raw, caller);
    const messages = await endpoint.receive(a.raw, max, leaseMs);
    return messages;
  }

  async ack(address: string, leases: string[], caller: Caller): Promise<AckResult> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.ack) throw new ValidationError(`${address} does not support acknowledging leases`);
    await this.authorize('ack', a.raw, caller);
    const result = await endpoint.ack(a.raw, leases);
    this.metrics.messagesOut.inc(this.labels.get(endpoint.scheme)!, result.acked);
    return result;
  }

  async deadLetters(address: string, limit: number, caller: Caller): Promise<BrowseResult> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.deadLetters) throw new ValidationError(`${a.scheme}: addresses have no dead letters`);
    await this.authorize('deadLetters', a.raw, caller);
    return endpoint.deadLetters(a.raw, limit);
  }

  async replayDeadLetters(address: string, ids: string[] | undefined, caller: Caller): Promise<{ replayed: number; notFound?: string[] }> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.replayDeadLetters) throw new ValidationError(`${a.scheme}: addresses have no dead letters`);
    await this.authorize('replay', a.raw, caller);
    const intents = this.replays;
    if (!intents) {
      const { replayed, notFound } = await endpoint.replayDeadLetters(a.raw, ids);
      return { replayed, ...(notFound ? { notFound } : {}) };
    }
    // The intent is stored before the first dead letter moves, so a crash from there on cannot
    // lose the event (replay-intents.ts); if it cannot be stored, nothing is replayed.
    let intent: (ReplayIntent & { stop: () => void }) | undefined;
    let result;
    try {
      result = await endpoint.replayDeadLetters(a.raw, ids, async (captured) => { intent = await intents.begin(a.raw, ids !== undefined, captured); });
    } catch (err) {
      intent?.stop();
      // Failed part way: what moved is decided from Redis now (or by the poll if Redis is away).
      if (intent) await intents.settle(intent).catch((e: Error) => this.log.warn({ address: a.raw, err: e.message }, 'replay failed part way; its event is left to the replay intents poll'));
      throw err;
    }
    if (intent) {
      intent.stop();
      try {
        await intents.finish(intent, result.replayedJobs ?? []);
      } catch (err) {
        // The replay is done; the intent stays and the poll reports it from Redis.
        this.log.warn({ address: a.raw, err: (err as Error).message }, 'replayed event not stored yet; the replay intents poll reports it');
      }
    }
    return { replayed: result.replayed, ...(result.notFound ? { notFound: result.notFound } : {}) };
  }

  async discardDeadLetters(address: string, ids: string[], caller: Caller): Promise<{ discarded: number }> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.discardDeadLetters) throw new ValidationError(`dead letters of ${a.scheme}: addresses cannot be discarded here; replay them or let them expire`);
    await this.authorize('discardDeadLetters', a.raw, caller);
    return endpoint.discardDeadLetters(a.raw, ids);
  }

  async discardWaiting(address: string, id: string, caller: Caller): Promise<void> {
    const { address: a, endpoint } = this.resolve(address);
    if (a.raw !== parseAddress(address).raw || !endpoint.discardWaiting) throw new ValidationError(`waiting messages of ${a.scheme}: addresses cannot be discarded here`);
    await this.authorize('discardWaiting', a.raw, caller);
    return endpoint.discardWaiting(a.raw, id);
  }

  /** A queue's depth, rates and oldest age (no message): `browse`, or `admin` there. */
  async queueStats(address: string, caller: Caller): Promise<QueueStats> {
    const { address: a, endpoint } = this.resolve(address);
    if (!endpoint.stats) throw new ValidationError(`${a.scheme}: addresses have no queue statistics`);
    await this.authorize('stats', a.raw, caller);
    return endpoint.stats(a.raw);
  }

  async health(): Promise<Record<string, HealthReport>> {
    const out: Record<string, HealthReport> = {};
    await Promise.all([...this.endpoints].map(async ([scheme, ep]) => {
      try {
        out[scheme] = await ep.health();
      } catch (err) {
        out[scheme] = { ok: false, detail: (err as Error).message };
      }
    }));
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.endpoints.values()].map((ep) => ep.close()));
  }
}
