import { ipKeyGenerator, type Options } from 'express-rate-limit';
import type { Redis } from 'ioredis';
import { RedisStore, type RedisReply } from 'rate-limit-redis';
import { SwitchboardError } from '../core/errors.ts';

export interface LoginLimits {
  /** Failed logins per user name within the window before that name is locked out. */
  perUser: number;
  /** Failed logins per client IP within the window. */
  perIp: number;
  windowMs: number;
}

export class TooManyAttempts extends SwitchboardError {
  constructor(message: string, readonly retryAfterSeconds: number) {
    super('too_many_attempts', message, 429);
  }
}

/**
 * Counts failed logins per user name and per client IP in Redis (rate-limit-redis windows), so
 * every gateway process shares the counts and a restart does not reset them. Only failures
 * count, so a client sending many requests at once with good credentials is never locked out;
 * once over a limit every attempt is refused, good password or not, the same for existing and
 * unknown names.
 */
export class LoginGuard {
  private readonly byUser: RedisStore;
  private readonly byIp: RedisStore;

  constructor(redis: Redis, prefix: string, private readonly limits: LoginLimits) {
    const store = (kind: string) => {
      const s = new RedisStore({ prefix: `${prefix}:rl:${kind}:`, sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as Promise<RedisReply> });
      s.init({ windowMs: limits.windowMs } as Options);
      return s;
    };
    this.byUser = store('user');
    this.byIp = store('ip');
  }

  private static userKey(username: string): string {
    return username.toLowerCase().slice(0, 256);
  }

  /** Throws TooManyAttempts when the user name or the IP is locked out. */
  async check(username: string | undefined, ip: string | undefined): Promise<void> {
    const [u, i] = await Promise.all([
      username ? this.byUser.get(LoginGuard.userKey(username)) : undefined,
      ip ? this.byIp.get(ipKeyGenerator(ip)) : undefined,
    ]);
    const minutes = Math.ceil(this.limits.windowMs / 60_000);
    const wait = (reset?: Date) => Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + this.limits.windowMs) - Date.now()) / 1000));
    if (i && i.totalHits >= this.limits.perIp) throw new TooManyAttempts(`too many failed logins from this address; try again in up to ${minutes} minute(s)`, wait(i.resetTime));
    if (u && u.totalHits >= this.limits.perUser) throw new TooManyAttempts(`too many failed logins for this user name; try again in up to ${minutes} minute(s)`, wait(u.resetTime));
  }

  async failed(username: string | undefined, ip: string | undefined): Promise<void> {
    await Promise.all([
      username ? this.byUser.increment(LoginGuard.userKey(username)) : undefined,
      ip ? this.byIp.increment(ipKeyGenerator(ip)) : undefined,
    ]);
  }
}
