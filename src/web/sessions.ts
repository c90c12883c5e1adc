import { randomBytes } from 'node:crypto';
import { RedisStore } from 'connect-redis';
import session from 'express-session';
import type { Redis } from 'ioredis';
import type { Principal } from '../core/message.ts';

declare module 'express-session' {
  interface SessionData {
    /** The logged-in user as of login (groups are refreshed from the directory while it answers). */
    user?: { name: string; groups: string[] };
    loggedInAt?: string;
  }
}

/**
 * The cookie-signing secret lives in Redis (created once with SET NX), so every gateway process
 * on the same Redis accepts the same sessions and a restart logs nobody out.
 */
export async function sessionSecret(redis: Redis, prefix: string): Promise<string> {
  const key = `${prefix}:session-secret`;
  await redis.set(key, randomBytes(32).toString('base64url'), 'NX');
  return (await redis.get(key))!;
}

export interface SessionOptions {
  redis: Redis;
  prefix: string;
  secret: string;
  ttlMs: number;
  /** Cookies only over HTTPS (when baseUrl is https). */
  secure: boolean;
}

export function sessions(o: SessionOptions) {
  return session({
    name: 'sb.sid',
    secret: o.secret,
    store: new RedisStore({ client: o.redis, prefix: `${o.prefix}:sess:`, ttl: Math.ceil(o.ttlMs / 1000) }),
    resave: false,
    saveUninitialized: false,
    rolling: true,
    cookie: { httpOnly: true, sameSite: 'lax', secure: o.secure, maxAge: o.ttlMs, path: '/' },
  });
}

export function sessionPrincipal(user: { name: string; groups: string[] }): Principal {
  return { kind: 'user', name: user.name, groups: user.groups };
}
