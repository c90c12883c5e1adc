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
  /**
   * Live inbox streams one user may hold open in this process; one more is refused (429).
   * @defaultValue 5
   */
  inboxStreamsPerUser?: number;
  /**
   * How often a live stream checks that its session still exists (ended by logout in another
   * process, or expired), closing itself when not.
   * @defaultValue 5,000 (5 s)
   */
  streamSessionCheckMs?: number;
}

/** One live stream: whose, in which session, and how to end it. */
interface LiveStream {
  user: string;
  sessionId: string;
  end(reason: string): void;
}

/**
 * The live (server-sent event) streams of one app: at most `perUser` per user, and a session's
 * streams end with it (logout ends them at once).
 */
export class LiveStreams {
  private readonly byUser = new Map<string, Set<LiveStream>>();

  constructor(readonly perUser: number, readonly sessionCheckMs: number) {}

  /** Registers a stream; undefined when the user already has `perUser` open. */
  open(user: string, sessionId: string, end: (reason: string) => void): { close(): void } | undefined {
    const mine = this.byUser.get(user) ?? new Set<LiveStream>();
    if (mine.size >= this.perUser) return undefined;
    const stream: LiveStream = { user, sessionId, end };
    mine.add(stream);
    this.byUser.set(user, mine);
    return {
      close: () => {
        mine.delete(stream);
        if (mine.size === 0 && this.byUser.get(user) === mine) this.byUser.delete(user);
      },
    };
  }

  /** Ends every stream of a session (logout). */
  endSession(sessionId: string, reason: string): void {
    for (const mine of [...this.byUser.values()]) for (const s of [...mine]) if (s.sessionId === sessionId) s.end(reason);
  }

  count(user: string): number {
    return this.byUser.get(user)?.size ?? 0;
  }
}

const registries = new WeakMap<SessionOptions, LiveStreams>();

/** The live streams of the app built with these session options (one registry per app). */
export function liveStreams(o: SessionOptions): LiveStreams {
  let r = registries.get(o);
  if (!r) {
    r = new LiveStreams(o.inboxStreamsPerUser ?? 5, o.streamSessionCheckMs ?? 5000);
    registries.set(o, r);
  }
  return r;
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
