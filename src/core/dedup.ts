import * as crypto from 'node:crypto';
import type { Redis } from 'ioredis';
import { corkForTurn } from '../store/corked-turn.ts';
import { principalId, type Message } from './message.ts';

/**
 * The idempotent-receiver key of a message (DESIGN §2): its address, its original sender and
 * its id. An id deduplicates only against earlier messages of the same sender on the same
 * address, so one user's id never swallows another user's message. Every dedup of a message
 * uses this one key: the queue endpoint's BullMQ key, the outboxes (e-mail, webhooks, peers),
 * the router's store for endpoints that cannot check ids themselves, the peer listener.
 *
 * The sender is `message.sender`, the one stamped where the message entered. Routes, bridges
 * and peers forward as themselves but keep that sender, so a redelivery after a hop is still the
 * same key and exactly-once holds across hops. A message from a broker has the sender
 * `broker:<name>`, and one from a peer `peer:<alias>`: what such a message claims about who sent
 * it is neither authenticated nor signed, so it must not decide what counts as a repeat.
 *
 * Fixed length and free of delimiters, so it is safe in any Redis key.
 *
 * @example
 * dedupKey({ to: 'queue:orders', sender: { kind: 'user', name: 'alice' }, id: 'order-1' })
 */
export function dedupKey(message: Pick<Message, 'to' | 'sender' | 'id'>): string {
  // JSON of the parts: no choice of address, principal or id can run into the next part.
  return sha256Hex(JSON.stringify([message.to, principalId(message.sender), message.id]));
}

/**
 * SHA-256 as hex. Node's one-shot `crypto.hash` (20.12 and later) is a third of the cost of a
 * Hash object (measured: ~1.2 µs against ~3.2 µs), and every message that enters a queue is hashed
 * at least once; earlier Node 20 releases get the Hash object.
 */
const sha256Hex: (text: string) => string =
  typeof crypto.hash === 'function' ? (text) => crypto.hash('sha256', text, 'hex') : (text) => crypto.createHash('sha256').update(text).digest('hex');

/** An id of a dedup scope with its Redis key (DedupStore.entry). */
export interface DedupEntry {
  readonly scope: string;
  readonly key: string;
}

/** One caller waiting for its part of a batched look or mark. */
interface Waiting<T> {
  key: string;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
}

/** Sets each of KEYS to '1' with the time to live ARGV[1] (ms): one command for a batch of marks. */
const REMEMBER = "for i = 1, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', ARGV[1]) end return #KEYS";

/** Keys in one command at most: a burst of thousands is still several commands, none huge. */
const MAX_BATCH = 500;

/**
 * Idempotent-receiver store for endpoints that cannot check ids atomically themselves
 * (a temporary queue, a broker). `remember` after the destination accepted; `seen` before
 * sending; for a message, the id to pass is its `dedupKey`.
 * A crash between the send and `remember` can repeat that one send: at-least-once, which is the
 * most a destination without ids allows. The queue endpoint and the outboxes dedup atomically instead.
 *
 * A bridge with many messages in flight asks for its looks and marks together: those asked for
 * in one turn of the event loop go to Redis as one MGET and one script per scope (the keys of a
 * scope share a hash tag, so a Redis Cluster runs each on one node), not one command a message.
 * On the AMQP bridge the two commands a message cost about a tenth of its rate (npm run bench --
 * mq). Each caller still gets its own answer, and a failed command fails exactly its batch.
 */
export class DedupStore {
  private readonly looks = new Map<string, Waiting<boolean>[]>();
  private readonly marks = new Map<string, Waiting<void>[]>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** How long an id is remembered, in ms. */
    readonly ttlMs: number,
  ) {}

  private key(scope: string, id: string): string {
    // Hash tag per scope so a scope's keys stay on one Redis Cluster slot.
    return `${this.prefix}:dedup:{${scope}}:${sha256Hex(id)}`;
  }

  /**
   * An id of a scope, its key worked out once for both the look and the mark (the router does
   * both for every message to a transport that cannot check ids itself: a hash less a message).
   */
  entry(scope: string, id: string): DedupEntry {
    return { scope, key: this.key(scope, id) };
  }

  seen(scope: string, id: string): Promise<boolean> {
    return this.seenEntry(this.entry(scope, id));
  }

  remember(scope: string, id: string): Promise<void> {
    return this.rememberEntry(this.entry(scope, id));
  }

  seenEntry(e: DedupEntry): Promise<boolean> {
    return this.batch(this.looks, e.scope, e.key, (keys) => this.redis.mget(keys).then((values) => values.map((v) => v !== null)));
  }

  rememberEntry(e: DedupEntry): Promise<void> {
    return this.batch(this.marks, e.scope, e.key, (keys) => this.redis.eval(REMEMBER, keys.length, ...keys, this.ttlMs).then(() => keys.map(() => undefined)));
  }

  /** Adds `key` to this turn's batch of `scope`, sent once the turn's callbacks have run. */
  private batch<T>(pending: Map<string, Waiting<T>[]>, scope: string, key: string, send: (keys: string[]) => Promise<T[]>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let list = pending.get(scope);
      if (!list) {
        pending.set(scope, (list = []));
        process.nextTick(() => {
          pending.delete(scope);
          corkForTurn(this.redis);
          for (let i = 0; i < list!.length; i += MAX_BATCH) {
            const part = list!.slice(i, i + MAX_BATCH);
            let sent: Promise<T[]>;
            try {
              sent = send(part.map((w) => w.key));
            } catch (err) {
              sent = Promise.reject(err);
            }
            sent.then((answers) => part.forEach((w, j) => w.resolve(answers[j]!)), (err: unknown) => part.forEach((w) => w.reject(err)));
          }
        });
      }
      list.push({ key, resolve, reject });
    });
  }

  /** Binds `key` to `value` for `ttlMs` unless bound already; returns the earlier value, or null. */
  async bind(scope: string, key: string, value: string, ttlMs: number): Promise<string | null> {
    const k = this.key(scope, key);
    const set = await this.redis.set(k, value, 'PX', ttlMs, 'NX');
    return set === 'OK' ? null : await this.redis.get(k);
  }

  /** Atomically records the id; false when it was already there. */
  async claim(scope: string, id: string): Promise<boolean> {
    return (await this.redis.set(this.key(scope, id), '1', 'PX', this.ttlMs, 'NX')) === 'OK';
  }
}
