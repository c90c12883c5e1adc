import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { parseAddress } from '../../core/address.ts';
import { dedupKey } from '../../core/dedup.ts';
import type { AckResult, BeforeReplay, BrowseResult, ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, LeasedMessage, ReplayResult, SendResult, Subscription } from '../../core/endpoint.ts';
import { DestinationUnavailable, NotFound, ValidationError } from '../../core/errors.ts';
import { decodeMessage, encodeMessage, type Message, type StoredMessage } from '../../core/message.ts';
import { loadScripts, type ScriptCalls } from '../../store/scripts.ts';
import { TopicKeys } from './keys.ts';
import { SubscriptionRegistry, type SubscriptionRecord } from './registry.ts';
import { SUBSCRIPTION_NAME, splitTopicPath, subscriptionAddress, topicProblem } from './scheme.ts';
import { AcceptCode } from './scripts/codes.ts';

/**
 * Where subscriptions keep their messages: durable queues, addressed by the subscription's
 * address. The gateway hands in the queue transport, which has these (a transport never imports
 * another). `store` puts a message into the queue at `address`, which is not its `to`, with no
 * depth check (the topic decided at accept), dedup by (to, sender, id) within that queue.
 */
export interface SubscriptionQueues {
  store(address: string, message: Message): Promise<SendResult>;
  depth(address: string): Promise<number>;
  /** Deletes the queue with its messages and dead letters. */
  drop(address: string): Promise<void>;
  consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription>;
  browse(address: string, limit: number): Promise<BrowseResult>;
  receive(address: string, max: number, leaseMs: number): Promise<LeasedMessage[]>;
  ack(address: string, leases: string[]): Promise<AckResult>;
  deadLetters(address: string, limit: number): Promise<BrowseResult>;
  replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult>;
}

/** A subscription as the API shows it (DESIGN §6). */
export interface SubscriptionInfo {
  name: string;
  durable: boolean;
  shared: boolean;
  /** Set when the subscription is on a pattern that matches the topic asked about. */
  pattern?: string;
  maxDepth?: number;
  depth: number;
  address: string;
}

export interface TopicEndpointOptions {
  redis: Redis;
  prefix: string;
  queues: SubscriptionQueues;
  /** How long a published id is remembered per topic and sender. */
  dedupTtlMs: number;
  /**
   * Publications older than this that are still in the fan-out log (their publisher died while
   * copying) are copied by whichever process sweeps next.
   * @defaultValue 5000
   */
  fanOutGraceMs?: number;
  /**
   * Liveness of this process for its non-durable subscriptions; after a crash another process
   * deletes them once the mark has expired.
   * @defaultValue 30000
   */
  livenessMs?: number;
  log: Logger;
}

const SCRIPTS = { acceptPublication: 3 } as const;
interface Publication {
  message: StoredMessage;
  /** [topic, name] of each subscription that existed when the message was accepted. */
  targets: [string, string][];
}

/**
 * `topic:` — publish/subscribe (DESIGN §6). A publish is accepted in one script that checks the
 * registry is the one the publisher read and appends the message, with the subscriptions it goes
 * to, to a fan-out log (an outbox): BullMQ's add is a script of its own per queue, each queue in
 * its own Cluster slot, so one script cannot write every subscription queue. The copies are then
 * made at once, and after a crash by the sweep of any process; each copy is idempotent (the
 * subscription queue dedups by (topic, sender, id)), so a message reaches every subscription that
 * existed when it was accepted, or — refused because a bounded subscription was full — none.
 */
export class TopicEndpoint implements Endpoint {
  readonly scheme = 'topic';
  readonly dedupsOnIngress = true;
  private readonly keys: TopicKeys;
  private readonly registry: SubscriptionRegistry;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;
  private readonly process = randomBytes(8).toString('hex');
  /** Consumers in this process of each non-durable subscription: the last to close deletes it. */
  private readonly holders = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(private readonly o: TopicEndpointOptions) {
    this.keys = new TopicKeys(o.prefix);
    this.registry = new SubscriptionRegistry(o.redis, this.keys);
    this.scripts = loadScripts(o.redis, new URL('./scripts/', import.meta.url), SCRIPTS);
    const liveness = o.livenessMs ?? 30_000;
    const grace = o.fanOutGraceMs ?? 5000;
    this.timers.push(setInterval(() => void this.sweepLog(grace).catch((err) => o.log.warn({ err: (err as Error).message }, 'topic fan-out sweep failed')), Math.max(200, grace / 2)).unref());
    this.timers.push(setInterval(() => void this.keepAlive(liveness).catch((err) => o.log.warn({ err: (err as Error).message }, 'topic liveness sweep failed')), liveness / 3).unref());
    void this.keepAlive(liveness).catch(() => undefined);
  }

  private parse(address: string): { topic: string; subscription?: string; pattern: boolean } {
    return splitTopicPath(parseAddress(address).path);
  }

  async send(message: Message): Promise<SendResult> {
    const { topic, subscription, pattern } = this.parse(message.to);
    if (subscription !== undefined) throw new ValidationError(`'${message.to}': publish to the topic (topic:${topic}); a subscription is consumed, not sent to`);
    if (pattern) throw new ValidationError(`'${message.to}': a pattern is for subscribing; publish to one topic, e.g. topic:${topic.replace(/\*+/g, 'x')}`);
    const key = dedupKey(message);
    for (let attempt = 0; attempt < 50; attempt++) {
      const snapshot = await this.registry.snapshot();
      const targets = this.registry.matching(snapshot, topic);
      await this.requireRoom(message.to, targets);
      const publication: Publication = { message: encodeMessage(message), targets: targets.map((t) => [t.topic, t.name]) };
      const reply = String(await this.scripts.acceptPublication(this.keys.acceptPublication(key), snapshot.version, targets.length > 0 ? JSON.stringify(publication) : '', this.o.dedupTtlMs));
      if (reply === AcceptCode.Stale) continue;
      if (reply === AcceptCode.Duplicate) return { id: message.id, duplicate: true };
      if (reply !== AcceptCode.NoSubscription) {
        // Accepted durably; a copy that fails now is made by the next sweep.
        await this.fanOut(reply, publication).catch((err) => this.o.log.warn({ msgId: message.id, to: message.to, err: (err as Error).message }, 'topic fan-out deferred to the sweep'));
      }
      return { id: message.id, duplicate: false };
    }
    throw new DestinationUnavailable(message.to, 'its subscriptions keep changing; try again');
  }

  /** Backpressure: a bounded subscription that is full refuses the publish for every subscription. */
  private async requireRoom(to: string, targets: SubscriptionRecord[]): Promise<void> {
    const bounded = targets.filter((t) => t.maxDepth !== undefined);
    const depths = await Promise.all(bounded.map((t) => this.o.queues.depth(subscriptionAddress(t.topic, t.name))));
    // Checked before the accept, not atomically with it: concurrent publishers may overshoot by
    // their number, as a bounded queue tolerates.
    const full = bounded.findIndex((t, i) => depths[i]! >= t.maxDepth!);
    if (full >= 0) {
      const t = bounded[full]!;
      throw new DestinationUnavailable(to, `subscription '${t.name}' of topic:${t.topic} is full (${depths[full]} messages, maxDepth ${t.maxDepth}); no subscription got the message; try again later`);
    }
  }

  /** Copies a publication to each of its subscriptions still there, then drops it from the log. */
  private async fanOut(entry: string, p: Publication): Promise<void> {
    const message = decodeMessage(p.message);
    for (const [topic, name] of p.targets) {
      // A subscription deleted since the accept gets nothing (its queue would come back as an orphan).
      if (!(await this.o.redis.hexists(this.keys.subscriptions(topic), name))) continue;
      await this.o.queues.store(subscriptionAddress(topic, name), message);
    }
    await this.o.redis.xdel(this.keys.log(), entry);
  }

  /** Finishes publications whose publisher did not (it crashed or lost Redis while copying). */
  private async sweepLog(graceMs: number): Promise<void> {
    const entries = await this.o.redis.xrange(this.keys.log(), '-', String(Date.now() - graceMs), 'COUNT', 100);
    for (const [id, fields] of entries) {
      const json = fields[fields.indexOf('p') + 1];
      if (json) await this.fanOut(id, JSON.parse(json) as Publication);
      else await this.o.redis.xdel(this.keys.log(), id);
    }
  }

  /** Renews this process's liveness mark and deletes non-durable subscriptions of dead processes. */
  private async keepAlive(livenessMs: number): Promise<void> {
    await this.o.redis.set(this.keys.live(this.process), '1', 'PX', livenessMs);
    const { subscriptions } = await this.registry.snapshot();
    for (const s of subscriptions) {
      if (s.durable || !s.owner || s.owner === this.process) continue;
      if ((await this.o.redis.exists(this.keys.live(s.owner))) === 0) await this.deleteSubscription(s.topic, s.name);
    }
  }

  // ── Subscriptions: what the doors (API, CLI, AMQP) manage, found through the router ──

  /** The subscriptions on `topic` and, for a topic, those on patterns that match it. */
  async listSubscriptions(topic: string): Promise<SubscriptionInfo[]> {
    requireTopic(topic);
    const { pattern } = splitTopicPath(topic);
    const own = await this.registry.on(topic);
    const matched = pattern ? [] : this.registry.matching(await this.registry.snapshot(), topic).filter((s) => s.topic !== topic);
    return Promise.all([...own, ...matched].map((s) => this.info(s, s.topic !== topic)));
  }

  private async info(s: SubscriptionRecord, viaPattern: boolean): Promise<SubscriptionInfo> {
    const address = subscriptionAddress(s.topic, s.name);
    return {
      name: s.name, durable: s.durable, shared: s.shared,
      ...(viaPattern ? { pattern: `topic:${s.topic}` } : {}),
      ...(s.maxDepth !== undefined ? { maxDepth: s.maxDepth } : {}),
      depth: await this.o.queues.depth(address),
      address,
    };
  }

  /**
   * Creates a subscription unless one of that name is on the topic (then `created` is false and
   * it is returned as it is). A non-durable one is held by this process and deleted with its
   * last consumer here.
   */
  async createSubscription(topic: string, name: string, opts: { durable?: boolean; shared?: boolean; maxDepth?: number; createdBy?: string } = {}): Promise<{ created: boolean; subscription: SubscriptionInfo }> {
    requireTopic(topic);
    if (!SUBSCRIPTION_NAME.test(name)) throw new ValidationError(`bad subscription name '${name}': letters, digits, _ . - (at most 128)`);
    if (opts.maxDepth !== undefined && (!Number.isInteger(opts.maxDepth) || opts.maxDepth < 1)) throw new ValidationError("'maxDepth' must be a positive integer");
    const durable = opts.durable ?? true;
    const record: SubscriptionRecord = {
      topic, name, durable, shared: opts.shared ?? false, createdAt: new Date().toISOString(),
      ...(opts.maxDepth !== undefined ? { maxDepth: opts.maxDepth } : {}),
      ...(opts.createdBy ? { createdBy: opts.createdBy } : {}),
      ...(durable ? {} : { owner: this.process }),
    };
    const { created, subscription } = await this.registry.create(record);
    return { created, subscription: await this.info(subscription, false) };
  }

  /** Deletes a subscription with its messages; false when there was none of that name. */
  async deleteSubscription(topic: string, name: string): Promise<boolean> {
    requireTopic(topic);
    const removed = await this.registry.remove(topic, name);
    if (removed) await this.o.queues.drop(subscriptionAddress(topic, name));
    return removed;
  }

  /** The subscription an address names; NotFound naming the ones there are. */
  private async existing(address: string): Promise<string> {
    const { topic, subscription } = this.parse(address);
    if (subscription === undefined) throw new ValidationError(`'${address}': a topic keeps no messages itself; use one of its subscriptions, topic:${topic}?subscription=<name>`);
    if (!(await this.registry.get(topic, subscription))) {
      const names = (await this.registry.on(topic)).map((s) => s.name);
      throw new NotFound(`no subscription '${subscription}' on topic:${topic} (subscriptions: ${names.length > 0 ? names.join(', ') : 'none'})`);
    }
    return subscriptionAddress(topic, subscription);
  }

  /**
   * Consumes a subscription. `topic:x?subscription=n` is durable and made if missing (as a JMS
   * durable subscriber does); `topic:x` gets a non-durable subscription of its own that is
   * deleted when the consumer closes.
   */
  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription> {
    const { topic, subscription } = this.parse(address);
    const name = subscription ?? `v-${randomBytes(9).toString('base64url')}`;
    const { subscription: s } = await this.createSubscription(topic, name, { durable: subscription !== undefined });
    const at = s.address;
    if (!s.durable) this.holders.set(at, (this.holders.get(at) ?? 0) + 1);
    let sub: Subscription;
    try {
      sub = await this.o.queues.consume(at, handler, options);
    } catch (err) {
      await this.release(topic, name, s.durable);
      throw err;
    }
    let closed = false;
    return {
      close: async () => {
        if (closed) return;
        closed = true;
        await sub.close();
        await this.release(topic, name, s.durable);
      },
    };
  }

  private async release(topic: string, name: string, durable: boolean): Promise<void> {
    if (durable) return;
    const at = subscriptionAddress(topic, name);
    const n = (this.holders.get(at) ?? 1) - 1;
    if (n > 0) return void this.holders.set(at, n);
    this.holders.delete(at);
    await this.deleteSubscription(topic, name).catch((err) => this.o.log.warn({ address: at, err: (err as Error).message }, 'could not delete a non-durable subscription'));
  }

  async browse(address: string, limit: number): Promise<BrowseResult> {
    return this.o.queues.browse(await this.existing(address), limit);
  }

  async receive(address: string, max: number, leaseMs: number): Promise<LeasedMessage[]> {
    return this.o.queues.receive(await this.existing(address), max, leaseMs);
  }

  async ack(address: string, leases: string[]): Promise<AckResult> {
    return this.o.queues.ack(await this.existing(address), leases);
  }

  async deadLetters(address: string, limit: number): Promise<BrowseResult> {
    return this.o.queues.deadLetters(await this.existing(address), limit);
  }

  async replayDeadLetters(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult> {
    return this.o.queues.replayDeadLetters(await this.existing(address), ids, before);
  }

  async health(): Promise<HealthReport> {
    const pending = await this.o.redis.xlen(this.keys.log());
    return { ok: true, detail: `${pending} publication(s) being copied to subscriptions` };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.o.redis.del(this.keys.live(this.process)).catch(() => undefined);
  }
}

function requireTopic(topic: string): void {
  const problem = topic === '' || topic.includes('?') ? 'expected a topic or pattern such as trades.eu or trades.*' : topicProblem(topic);
  if (problem) throw new ValidationError(`bad topic '${topic}': ${problem}`);
}
