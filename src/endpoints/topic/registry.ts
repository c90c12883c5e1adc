import type { Redis } from 'ioredis';
import { matchesPattern, parsePattern, type AddressPattern } from '../../core/pattern.ts';
import type { TopicKeys } from './keys.ts';

/** One subscription as the registry keeps it. */
export interface SubscriptionRecord {
  /** The topic or pattern it subscribes to, without `topic:`. */
  topic: string;
  name: string;
  /** False: it lives only as long as its consumer (an AMQP link), then it is deleted. */
  durable: boolean;
  /** JMS 2.0 shared subscription: several consumers split its messages. */
  shared: boolean;
  /** Bounded: a publish is refused while the subscription holds this many messages. */
  maxDepth?: number;
  createdAt: string;
  createdBy?: string;
  /** Of a non-durable subscription: the process holding it (its liveness mark keeps it). */
  owner?: string;
}

/** The whole registry as read at one version. */
export interface RegistrySnapshot {
  version: string;
  subscriptions: SubscriptionRecord[];
}

/**
 * The subscriptions of every topic: a Redis hash per topic or pattern, with a version bumped by
 * each change in the same MULTI, so a publisher can tell whether what it read is still current.
 * Read through a cache that costs one GET while nothing changes.
 */
export class SubscriptionRegistry {
  private cached?: RegistrySnapshot;
  private readonly patterns = new Map<string, AddressPattern>();

  constructor(private readonly redis: Redis, private readonly keys: TopicKeys) {}

  /** Every subscription, at the version read first (a change during the read shows as a newer version). */
  async snapshot(): Promise<RegistrySnapshot> {
    const version = (await this.redis.get(this.keys.version())) ?? '0';
    if (this.cached?.version === version) return this.cached;
    const topics = await this.redis.smembers(this.keys.index());
    const hashes = await Promise.all(topics.map((t) => this.redis.hgetall(this.keys.subscriptions(t))));
    const subscriptions = hashes.flatMap((h) => Object.values(h).map((json) => JSON.parse(json) as SubscriptionRecord));
    this.cached = { version, subscriptions };
    return this.cached;
  }

  /** The subscriptions a message published to `topic` goes to: its own and the matching patterns'. */
  matching(snapshot: RegistrySnapshot, topic: string): SubscriptionRecord[] {
    return snapshot.subscriptions.filter((s) => s.topic === topic || matchesPattern(this.pattern(s.topic), `topic:${topic}`));
  }

  private pattern(topic: string): AddressPattern {
    let p = this.patterns.get(topic);
    if (!p) {
      if (this.patterns.size > 10_000) this.patterns.clear();
      this.patterns.set(topic, (p = parsePattern(`topic:${topic}`)));
    }
    return p;
  }

  async get(topic: string, name: string): Promise<SubscriptionRecord | undefined> {
    const json = await this.redis.hget(this.keys.subscriptions(topic), name);
    return json ? (JSON.parse(json) as SubscriptionRecord) : undefined;
  }

  /** The subscriptions on exactly this topic or pattern. */
  async on(topic: string): Promise<SubscriptionRecord[]> {
    return Object.values(await this.redis.hgetall(this.keys.subscriptions(topic))).map((j) => JSON.parse(j) as SubscriptionRecord);
  }

  /** Adds a subscription unless one of that name is on the topic; returns the one there now. */
  async create(record: SubscriptionRecord): Promise<{ created: boolean; subscription: SubscriptionRecord }> {
    const result = await this.redis
      .multi()
      .hsetnx(this.keys.subscriptions(record.topic), record.name, JSON.stringify(record))
      .sadd(this.keys.index(), record.topic)
      .incr(this.keys.version())
      .exec();
    if (result?.[0]?.[1] === 1) return { created: true, subscription: record };
    const existing = await this.get(record.topic, record.name);
    // Deleted between the two calls: try again rather than answer with nothing.
    return existing ? { created: false, subscription: existing } : this.create(record);
  }

  /** Removes a subscription; false when there was none of that name. */
  async remove(topic: string, name: string): Promise<boolean> {
    const result = await this.redis.multi().hdel(this.keys.subscriptions(topic), name).incr(this.keys.version()).exec();
    return result?.[0]?.[1] === 1;
  }
}
