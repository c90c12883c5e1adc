import type { Request, Response } from 'express';
import { ipKeyGenerator, rateLimit, type RateLimitRequestHandler } from 'express-rate-limit';
import type { Redis } from 'ioredis';
import { RedisStore, type RedisReply } from 'rate-limit-redis';
import { normalizeUsername } from '../../auth/authenticator.ts';
import { claimedUser } from './authenticate.ts';

export interface LoginLimits {
  /** Failed logins per user name within the window before that name is locked out. */
  perUser: number;
  /** Failed logins per client IP within the window. */
  perIp: number;
  windowMs: number;
}

/**
 * Failed logins are counted per user name and per IP in Redis, so every gateway process shares
 * the counts and a restart does not reset them. Only failures count (a 401 answer): a client that
 * logs in correctly is never slowed. Over the limit the answer is 429 with Retry-After, the same
 * for existing and unknown user names.
 */
export function loginRateLimits(redis: Redis, prefix: string, limits: LoginLimits, onLimited: (req: Request, res: Response, message: string) => void): RateLimitRequestHandler[] {
  const store = (kind: string) => new RedisStore({ prefix: `${prefix}:rl:${kind}:`, sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as Promise<RedisReply> });
  const common = {
    windowMs: limits.windowMs,
    standardHeaders: 'draft-7' as const,
    legacyHeaders: false,
    skipSuccessfulRequests: true,
    requestWasSuccessful: (_req: Request, res: Response) => res.statusCode !== 401,
    validate: { trustProxy: false, xForwardedForHeader: false },
  };
  const minutes = Math.ceil(limits.windowMs / 60_000);
  return [
    rateLimit({
      ...common,
      limit: limits.perIp,
      store: store('ip'),
      // IPv6 clients are keyed by their /56, or one host could rotate addresses past the limit.
      keyGenerator: (req) => ipKeyGenerator(req.ip ?? 'unknown'),
      handler: (req, res) => onLimited(req, res, `too many failed logins from this address; try again in up to ${minutes} minute(s)`),
    }),
    rateLimit({
      ...common,
      limit: limits.perUser,
      store: store('user'),
      skip: (req) => claimedUser(req) === undefined,
      keyGenerator: (req) => normalizeUsername(claimedUser(req) ?? '').toLowerCase().slice(0, 256),
      handler: (req, res) => onLimited(req, res, `too many failed logins for this user name; try again in up to ${minutes} minute(s)`),
    }),
  ];
}
