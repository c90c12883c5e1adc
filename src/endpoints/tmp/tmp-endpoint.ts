import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, SendResult, Subscription } from '../../core/endpoint.ts';
import { NotFound, isRetryable } from '../../core/errors.ts';
import { decodeMessage, encodeMessage, type Message } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import type { RecordLifecycle } from '../../core/lifecycle.ts';
import { Lease, leaseKey } from '../../store/lease.ts';

export interface TmpEndpointOptions {
  /** Connection shared with the other endpoints; a duplicate is made for wake-up notices. */
  redis: Redis;
  /** Key prefix, as for every other Redis key of the gateway. */
  prefix: string;
  /**
   * How long this process's liveness mark lasts; it is renewed at a third of this. A process
   * that stops renewing (a crash) has its temporary queues deleted by the next sweep of another.
   * @defaultValue 30000
   */
  livenessMs?: number;
  /**
   * How often temporary queues of dead processes are looked for, and how often a consumer looks
   * for messages it was not woken for.
   * @defaultValue 30000 (sweep); the consumer poll is 1000
   */
  sweepMs?: number;
  /**
   * Stores `switchboard.message.dead-lettered` for a message its consumer refused, awaited before
   * the message is dropped.
   * @defaultValue undefined (no event mapped)
   */
  deadLetterEvents?: RecordLifecycle;
  metrics: Metrics;
  log: Logger;
}

/**
 * KEYS[1] live mark of the queue, KEYS[2] its message list; ARGV[1] the encoded message,
 * ARGV[2] 'tail' (a send) or 'head' (a message handed back). Returns 1 when stored, 0 when the
 * queue is gone: a message is never written into a queue that was deleted (it would come back
 * as an orphan list).
 */
const PUSH_IF_LIVE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == 'head' then redis.call('LPUSH', KEYS[2], ARGV[1]) else redis.call('RPUSH', KEYS[2], ARGV[1]) end
return 1`;

interface Consumer {
  address: string;
  handler: DeliveryHandler;
  max: number;
  inFlight: number;
  closed: boolean;
  pumping: boolean;
  /** Handlers still running: close() waits for them, so their messages are back before it returns. */
  running: Set<Promise<void>>;
  /** After a handler said "not now", the consumer waits before taking again. */
  pausedUntil: number;
}

/**
 * `tmp:` — temporary queues owned by one connection of a door (an AMQP dynamic receiver, a JMS
 * temporary queue). Redis lists, at-most-one process owns each: the one that holds the door's
 * connection. Anyone allowed may send while the queue lives; a send to a deleted one is
 * NotFound. The queue dies with its owner: deleted when the door says the connection closed, or,
 * after a crash, by the sweep of any other process once the owner's liveness mark expires.
 *
 * A message being delivered is held in this process only (LPOP, then handed back at the head on
 * a retryable failure): a crash loses it, but a crash also ends the connection that owns the
 * queue, and the queue with it, so there is nobody left who could have received it.
 */
export class TmpEndpoint implements Endpoint {
  readonly scheme = 'tmp';
  readonly dedupsOnIngress = false;
  /** This process, as the owner recorded for its queues. */
  readonly node = randomBytes(6).toString('base64url').replace(/[^A-Za-z0-9]/g, 'x');
  private readonly owned = new Set<string>();
  private readonly consumers = new Map<string, Set<Consumer>>();
  private readonly livenessMs: number;
  private readonly sweepMs: number;
  private subscriber?: Redis;
  /** The crash sweep is a singleton duty of the fleet: the holder of `<prefix>:lease:tmp-sweep` does it. */
  private readonly sweepLease: Lease;
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;

  constructor(private readonly o: TmpEndpointOptions) {
    this.livenessMs = o.livenessMs ?? 30_000;
    this.sweepMs = o.sweepMs ?? 30_000;
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => void fn().catch((err) => o.log.warn({ err: (err as Error).message }, 'tmp: housekeeping failed')), ms);
      t.unref();
      this.timers.push(t);
    };
    every(Math.max(100, Math.floor(this.livenessMs / 3)), () => this.markAlive());
    every(this.sweepMs, async () => (this.sweepLease.held ? this.sweep() : 0));
    every(1000, async () => this.wakeAll());
    this.sweepLease = new Lease({ redis: o.redis, key: leaseKey(o.prefix, 'tmp-sweep'), log: o.log });
    // The first mark right away, and a sweep as soon as the lease is ours (not at import: the
    // gateway constructs this when starting).
    setImmediate(() => {
      void this.markAlive().catch((err) => o.log.warn({ err: (err as Error).message }, 'tmp: first liveness mark failed'));
      if (!this.closed) this.sweepLease.start({ acquired: () => void this.sweep().catch((err) => o.log.warn({ err: (err as Error).message }, 'tmp: first sweep failed')), lost: () => {} });
    });
  }

  private key(address: string, part: 'live' | 'messages'): string {
    // One hash tag per queue: both keys on one Redis Cluster slot, so PUSH_IF_LIVE is atomic there.
    return `${this.o.prefix}:tmp:{${address}}:${part}`;
  }
  private nodeKey(node: string): string {
    return `${this.o.prefix}:tmp:node:${node}`;
  }
  private get nodesKey(): string {
    return `${this.o.prefix}:tmp:nodes`;
  }
  private get wakeChannel(): string {
    return `${this.o.prefix}:tmp:wake`;
  }

  private async markAlive(): Promise<void> {
    if (this.closed) return;
    await this.o.redis.set(this.nodeKey(this.node), '1', 'PX', this.livenessMs);
    await this.o.redis.sadd(this.nodesKey, this.node);
  }

  /** Deletes the queues of processes whose liveness mark expired (they crashed). */
  async sweep(): Promise<number> {
    let deleted = 0;
    for (const node of await this.o.redis.smembers(this.nodesKey)) {
      if (node === this.node || (await this.o.redis.exists(this.nodeKey(node)))) continue;
      const queues = await this.o.redis.smembers(`${this.nodeKey(node)}:queues`);
      for (const address of queues) await this.o.redis.del(this.key(address, 'live'), this.key(address, 'messages'));
      await this.o.redis.del(`${this.nodeKey(node)}:queues`);
      await this.o.redis.srem(this.nodesKey, node);
      deleted += queues.length;
      if (queues.length > 0) this.o.log.info({ node, queues: queues.length }, 'tmp: deleted the temporary queues of a process that stopped without closing them');
    }
    return deleted;
  }

  /**
   * Creates the temporary queue `address`, owned by this process until deleteTemporary. The
   * commands are queued before this returns its promise, so a send or consume issued afterwards on
   * the same connection finds the queue.
   */
  async openTemporary(address: string): Promise<void> {
    this.owned.add(address);
    await Promise.all([
      this.o.redis.set(this.key(address, 'live'), this.node),
      this.o.redis.sadd(`${this.nodeKey(this.node)}:queues`, address),
      this.markAlive(),
    ]);
  }

  /** Deletes the queue with its messages; its consumers stop (their in-flight messages go with it). */
  async deleteTemporary(address: string): Promise<void> {
    this.owned.delete(address);
    for (const c of this.consumers.get(address) ?? []) c.closed = true;
    await this.o.redis.del(this.key(address, 'live'), this.key(address, 'messages'));
    await this.o.redis.srem(`${this.nodeKey(this.node)}:queues`, address);
  }

  async send(message: Message): Promise<SendResult> {
    const stored = await this.o.redis.eval(PUSH_IF_LIVE, 2, this.key(message.to, 'live'), this.key(message.to, 'messages'), JSON.stringify(encodeMessage(message)), 'tail');
    if (stored !== 1) throw new NotFound(`${message.to} does not exist (a temporary queue lives only as long as the connection that created it)`);
    // Other processes learn of it by a notice; here the consumer is woken directly.
    this.wake(message.to);
    await this.o.redis.publish(this.wakeChannel, message.to);
    return { id: message.id, duplicate: false };
  }

  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription> {
    if (!(await this.o.redis.exists(this.key(address, 'live')))) throw new NotFound(`${address} does not exist (a temporary queue lives only as long as the connection that created it)`);
    await this.listen();
    const c: Consumer = { address, handler, max: Math.max(1, options.maxInFlight), inFlight: 0, closed: false, pumping: false, running: new Set(), pausedUntil: 0 };
    let set = this.consumers.get(address);
    if (!set) this.consumers.set(address, (set = new Set()));
    set.add(c);
    void this.pump(c);
    return {
      close: async () => {
        c.closed = true;
        this.consumers.get(address)?.delete(c);
        if (this.consumers.get(address)?.size === 0) this.consumers.delete(address);
        await Promise.all([...c.running]);
      },
    };
  }

  private async listen(): Promise<void> {
    if (this.subscriber) return;
    this.subscriber = this.o.redis.duplicate();
    this.subscriber.on('error', (err) => this.o.log.warn({ err: err.message }, 'tmp: notice connection error'));
    this.subscriber.on('message', (_channel: string, address: string) => this.wake(address));
    await this.subscriber.subscribe(this.wakeChannel);
  }

  private wake(address: string): void {
    for (const c of this.consumers.get(address) ?? []) void this.pump(c);
  }

  private wakeAll(): void {
    for (const set of this.consumers.values()) for (const c of set) void this.pump(c);
  }

  /** Takes messages while the consumer has room; one pump per consumer at a time. */
  private async pump(c: Consumer): Promise<void> {
    if (c.pumping || c.closed || Date.now() < c.pausedUntil) return;
    c.pumping = true;
    try {
      while (!c.closed && c.inFlight < c.max) {
        const raw = await this.o.redis.lpop(this.key(c.address, 'messages'));
        if (raw === null) break;
        c.inFlight++;
        const run = this.deliver(c, raw).finally(() => {
          c.inFlight--;
          c.running.delete(run);
          void this.pump(c);
        });
        c.running.add(run);
      }
    } catch (err) {
      this.o.log.warn({ address: c.address, err: (err as Error).message }, 'tmp: could not take a message');
    } finally {
      c.pumping = false;
    }
  }

  private async deliver(c: Consumer, raw: string): Promise<void> {
    const message = decodeMessage(JSON.parse(raw));
    try {
      await c.handler(message);
    } catch (err) {
      if (isRetryable(err)) {
        // Handed back at the head (unless the queue is gone meanwhile), in its place in the order.
        await this.o.redis.eval(PUSH_IF_LIVE, 2, this.key(c.address, 'live'), this.key(c.address, 'messages'), raw, 'head');
        c.pausedUntil = Date.now() + 200;
        return;
      }
      // A temporary queue has no dead-letter queue: a message its consumer refuses is dropped, and
      // said so. The event is stored first; if it cannot be, the message goes back to the head
      // and is refused (and dropped) again once it can. (A temporary queue lives in one process:
      // a kill -9 takes its messages in flight with it, as it takes the queue's connection.)
      if (this.o.deadLetterEvents) {
        try {
          await this.o.deadLetterEvents({ type: 'switchboard.message.dead-lettered', subject: c.address, key: `${c.address}\0${message.id}`, data: { address: c.address, messageId: message.id, transport: 'tmp', reason: (err as Error).message } });
        } catch (e) {
          this.o.log.warn({ address: c.address, msgId: message.id, err: (e as Error).message }, 'tmp: dead-letter event not stored; the message is kept for now');
          await this.o.redis.eval(PUSH_IF_LIVE, 2, this.key(c.address, 'live'), this.key(c.address, 'messages'), raw, 'head');
          c.pausedUntil = Date.now() + 1000;
          return;
        }
      }
      this.o.metrics.deadLettered.inc({ endpoint: 'tmp' });
      this.o.log.warn({ address: c.address, msgId: message.id, err: (err as Error).message }, 'tmp: message refused by its consumer; dropped (temporary queues have no dead-letter queue)');
    }
  }

  async health(): Promise<HealthReport> {
    const pong = await this.o.redis.ping();
    return { ok: pong === 'PONG', detail: `${this.owned.size} temporary queue(s) owned here` };
  }

  /** Stops consumers and deletes this process's queues: their connections are closed by now. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.sweepLease.stop().catch(() => {});
    for (const set of this.consumers.values()) for (const c of set) c.closed = true;
    await Promise.all([...this.consumers.values()].flatMap((set) => [...set].flatMap((c) => [...c.running])));
    for (const address of [...this.owned]) await this.deleteTemporary(address).catch(() => {});
    await this.o.redis.del(this.nodeKey(this.node)).catch(() => {});
    await this.o.redis.srem(this.nodesKey, this.node).catch(() => {});
    await this.subscriber?.quit().catch(() => {});
  }
}
