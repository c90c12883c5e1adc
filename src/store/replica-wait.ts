import { Cluster, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { SendResult } from '../core/endpoint.ts';
import { DependencyUnavailable } from '../core/errors.ts';
import type { SendInput, SendInterceptor, SendNext } from '../core/pipeline.ts';
import { keySlot } from './redis.ts';

export interface ReplicaWaitOptions {
  /** The gateway's connection; a duplicate is made for the WAITs (a WAIT blocks its connection). */
  redis: Redis;
  /** Key prefix; the barrier writes `<prefix>:{sbwait.<n>}:mark`. */
  prefix: string;
  /** Replicas that must confirm before a send is acknowledged (redis.waitReplicas, ≥ 1). */
  replicas: number;
  /**
   * How long to wait for them; past it the send fails as retryable (503), the message stays
   * stored, and a retry with the same id is answered as a duplicate once replicated.
   * @defaultValue 2000
   */
  timeoutMs?: number;
  log: Logger;
}

interface Waiter {
  /** Resolved with where the barrier ran (see `where`). */
  resolve(at: string): void;
  reject(err: Error): void;
}

/** The primary changed (a failover) between the write and its barrier: not acknowledged. */
function failedOver(): DependencyUnavailable {
  return new DependencyUnavailable('redis', 'the Redis primary changed (a failover) while the message was being stored (redis.waitReplicas): it may not have reached the new primary; send it again with the same id');
}

/**
 * `redis.waitReplicas: N` (DESIGN §9): a send is acknowledged (HTTP 202, AMQP settle, a route's
 * ack of its source) only after Redis `WAIT N` confirms that N replicas have everything the
 * primary had when the endpoint accepted the message — so a failover after the acknowledgement
 * cannot lose it. The last interceptor of the router: it runs after the endpoint stored.
 *
 * How: WAIT counts the replication offset of the connection's own last write, and a write
 * answered before another is issued is earlier in the replication stream. So after the endpoint
 * answers, one barrier — `SET <mark>` then `WAIT N timeout`, pipelined on a connection of its
 * own — covers every write acknowledged before it, whatever connection made it. Sends that arrive
 * while a barrier runs share the next one (group commit): one WAIT per round trip, not per message.
 *
 * On a Redis Cluster a message's keys live on one master, but which one depends on the endpoint
 * (a queue's tag, a flow instance, an outbox shard) and the router does not know it: the barrier
 * runs on every master at once (a mark whose slot that master serves, found from the cluster's
 * slot map), which covers the right one. It costs a WAIT per master per round, and a send waits
 * for the slowest master's replicas.
 *
 * A barrier must run on the server that took the write: WAIT on a freshly promoted primary says
 * nothing about a write the dead one acknowledged. So the barrier connection never resends a
 * command after a reconnect, and a send is acknowledged only if the primary (the masters of a
 * cluster) the gateway's connection used before the write is the one the barrier ran on and is
 * still the one after it; otherwise it fails as retryable (503), and the retry with the same id is
 * stored on, or found on, the new primary and waits for its replicas.
 */
export class ReplicaWait implements SendInterceptor {
  readonly name = 'wait-replicas';
  private readonly client: Redis;
  private readonly timeoutMs: number;
  private readonly rounds = new Map<string, { running: boolean; waiting: Waiter[] }>();
  private readonly tags = new Map<string, string>();

  constructor(private readonly o: ReplicaWaitOptions) {
    this.timeoutMs = o.timeoutMs ?? 2000;
    const source = o.redis as unknown as Redis | Cluster;
    this.client = (source instanceof Cluster
      ? source.duplicate(undefined, { redisOptions: { ...source.options.redisOptions, autoResendUnfulfilledCommands: false } })
      : source.duplicate({ autoResendUnfulfilledCommands: false })) as unknown as Redis;
    this.client.on('error', (err: Error) => o.log.debug({ err: err.message }, 'wait-replicas connection error'));
  }

  async send(input: SendInput, next: SendNext): Promise<SendResult> {
    const before = where(this.o.redis);
    const result = await next(input);
    const at = await this.barrier();
    if (before === '' || at !== before || where(this.o.redis) !== before) {
      // A cluster client learns a new slot map only from an error or a MOVED on its own commands,
      // and the gateway's connection may never touch the failed master's slots (BullMQ writes on
      // connections of its own): without a refresh its stale map would fail every later send too.
      refreshSlotMap(this.o.redis);
      refreshSlotMap(this.client);
      throw failedOver();
    }
    return result;
  }

  /**
   * Resolves once N replicas have everything acknowledged by the primary (every master) so far,
   * with where the barrier ran.
   */
  async barrier(): Promise<string> {
    let tags = this.markTags();
    if (tags.length === 0) {
      await this.client.ping(); // connects, and a cluster client loads its slot map
      tags = this.markTags();
    }
    const at = await Promise.all(tags.map((tag) => this.join(tag)));
    return this.client instanceof Cluster ? where(this.client) : at[0]!;
  }

  /** One mark per master: on one Redis a fixed one; on a cluster, for each master, a tag it serves. */
  private markTags(): string[] {
    const client = this.client as unknown as Redis | Cluster;
    if (!(client instanceof Cluster)) return ['sbwait'];
    const slots = (client as unknown as { slots: string[][] }).slots;
    const masters = new Set<string>();
    for (const owners of slots) if (owners?.[0]) masters.add(owners[0]);
    if (masters.size === 0) return []; // slot map not loaded yet
    return [...masters].map((master) => {
      const cached = this.tags.get(master);
      if (cached && slots[keySlot(cached)]?.[0] === master) return cached;
      for (let n = 0; ; n++) {
        const tag = `sbwait.${n}`;
        if (slots[keySlot(tag)]?.[0] === master) {
          this.tags.set(master, tag);
          return tag;
        }
      }
    });
  }

  private join(tag: string): Promise<string> {
    let round = this.rounds.get(tag);
    if (!round) this.rounds.set(tag, (round = { running: false, waiting: [] }));
    const r = round;
    return new Promise<string>((resolve, reject) => {
      r.waiting.push({ resolve, reject });
      if (!r.running) void this.run(tag, r);
    });
  }

  /** Runs barriers for `tag` until nobody waits; each covers everyone who joined before it began. */
  private async run(tag: string, round: { running: boolean; waiting: Waiter[] }): Promise<void> {
    round.running = true;
    while (round.waiting.length > 0) {
      const batch = round.waiting.splice(0);
      try {
        const key = `${this.o.prefix}:{${tag}}:mark`;
        const replies = await this.client.pipeline().set(key, String(Date.now()), 'PX', 60_000).wait(this.o.replicas, this.timeoutMs).exec();
        const [setErr] = replies?.[0] ?? [new Error('no reply')];
        const [waitErr, confirmed] = replies?.[1] ?? [new Error('no reply')];
        if (setErr || waitErr) throw setErr ?? waitErr;
        if (Number(confirmed) < this.o.replicas) {
          throw new DependencyUnavailable('redis', `only ${Number(confirmed)} of ${this.o.replicas} replica(s) confirmed the message within ${this.timeoutMs} ms (redis.waitReplicas): it is stored on the primary but not acknowledged; send it again with the same id`);
        }
        const at = where(this.client);
        for (const w of batch) w.resolve(at);
      } catch (err) {
        const e = err instanceof DependencyUnavailable ? err : new DependencyUnavailable('redis', `could not confirm replication (redis.waitReplicas): ${(err as Error).message}; send it again with the same id`);
        for (const w of batch) w.reject(e);
      }
    }
    round.running = false;
  }

  async close(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }
}

/** Asks a cluster client to reload its slot map (no-op on a single connection). */
function refreshSlotMap(redis: Redis): void {
  const client = redis as unknown as Redis | Cluster;
  if (client instanceof Cluster) client.refreshSlotsCache(() => {});
}

/**
 * Which server a client talks to now: the address of a single connection's socket (a Sentinel
 * failover moves it to another host or port), or a cluster's masters from its slot map. Empty
 * while not connected.
 */
function where(redis: Redis): string {
  const client = redis as unknown as Redis | Cluster;
  if (client instanceof Cluster) {
    const slots = (client as unknown as { slots: string[][] }).slots;
    const masters = new Set<string>();
    for (const owners of slots) if (owners?.[0]) masters.add(owners[0]);
    return [...masters].sort().join(',');
  }
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  return client.status === 'ready' && stream?.remotePort ? `${stream.remoteAddress}:${stream.remotePort}` : '';
}
