import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * Idempotent-receiver store for endpoints that cannot check ids atomically themselves
 * (an e-mail, a webhook). `remember` after the destination accepted; `seen` before sending.
 * A crash between the send and `remember` can repeat that one send: at-least-once, which is the
 * most an external destination without ids allows. The queue endpoint dedups atomically instead.
 */
export class DedupStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** How long an id is remembered, in ms. */
    readonly ttlMs: number,
  ) {}

  private key(scope: string, id: string): string {
    // Hash tag per scope so a scope's keys stay on one Redis Cluster slot.
    return `${this.prefix}:dedup:{${scope}}:${createHash('sha256').update(id).digest('hex')}`;
  }

  async seen(scope: string, id: string): Promise<boolean> {
    return (await this.redis.exists(this.key(scope, id))) === 1;
  }

  async remember(scope: string, id: string): Promise<void> {
    await this.redis.set(this.key(scope, id), '1', 'PX', this.ttlMs);
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
