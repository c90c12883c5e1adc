import { ipKeyGenerator } from 'express-rate-limit';
import type { Redis } from 'ioredis';
import { SwitchboardError } from '../core/errors.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { LoginKeys } from './keys.ts';

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

const SCRIPTS = { countFailedLogin: 1, readFailedLogins: 1 } as const;

/** Failures counted in the current window, and when that window ends. */
interface Count {
  failures: number;
  resetAt: number;
}

/**
 * Counts failed logins per user name and per client IP in Redis (a fixed window from the first
 * failure), so every gateway process shares the counts and a restart does not reset them. Only
 * failures count, so a client sending many requests at once with good credentials is never locked
 * out; once over a limit every attempt is refused, good password or not, the same for existing
 * and unknown names. Each counter is one key read and written by our own scripts in `./scripts/`
 * (loaded like every other script, so on a Redis Cluster they run on the node owning the key).
 */
export class LoginGuard {
  private readonly keys: LoginKeys;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;

  constructor(redis: Redis, prefix: string, private readonly limits: LoginLimits) {
    this.keys = new LoginKeys(prefix);
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  private static userKey(username: string): string {
    return username.toLowerCase().slice(0, 256);
  }

  private static count([failures, ms]: [number, number]): Count {
    return { failures, resetAt: Date.now() + ms };
  }

  private async read(kind: 'user' | 'ip', name: string): Promise<Count> {
    return LoginGuard.count((await this.scripts.readFailedLogins(this.keys.readFailedLogins(kind, name))) as [number, number]);
  }

  /** Throws TooManyAttempts when the user name or the IP is locked out. */
  async check(username: string | undefined, ip: string | undefined): Promise<void> {
    const [u, i] = await Promise.all([
      username ? this.read('user', LoginGuard.userKey(username)) : undefined,
      ip ? this.read('ip', ipKeyGenerator(ip)) : undefined,
    ]);
    const minutes = Math.ceil(this.limits.windowMs / 60_000);
    const wait = (c: Count) => Math.max(1, Math.ceil((c.resetAt - Date.now()) / 1000));
    if (i && i.failures >= this.limits.perIp) throw new TooManyAttempts(`too many failed logins from this address; try again in up to ${minutes} minute(s)`, wait(i));
    if (u && u.failures >= this.limits.perUser) throw new TooManyAttempts(`too many failed logins for this user name; try again in up to ${minutes} minute(s)`, wait(u));
  }

  async failed(username: string | undefined, ip: string | undefined): Promise<void> {
    await Promise.all([
      username ? this.scripts.countFailedLogin(this.keys.countFailedLogin('user', LoginGuard.userKey(username)), this.limits.windowMs) : undefined,
      ip ? this.scripts.countFailedLogin(this.keys.countFailedLogin('ip', ipKeyGenerator(ip)), this.limits.windowMs) : undefined,
    ]);
  }
}
