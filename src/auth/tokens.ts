import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { NotFound, ValidationError } from '../core/errors.ts';

export interface TokenInfo {
  id: string;
  name: string;
  user: string;
  createdAt: string;
}

const TOKEN = /^sbt_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * API tokens a user creates for scripts and revokes. Only a SHA-256 of the secret is stored (the
 * secret has 256 random bits, so a slow hash adds nothing); the token is shown once, at creation.
 * A token acts as its owner, with the owner's current groups from the directory.
 */
export class TokenStore {
  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  private key(id: string): string {
    return `${this.prefix}:token:${id}`;
  }

  private userKey(user: string): string {
    return `${this.prefix}:tokens:${user}`;
  }

  async create(user: string, name: unknown): Promise<TokenInfo & { token: string }> {
    if (typeof name !== 'string' || !/^[\x20-\x7e]{1,64}$/.test(name)) throw new ValidationError("'name' must be 1 to 64 printable characters, e.g. \"deploy script\"");
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const info: TokenInfo = { id, name, user, createdAt: new Date().toISOString() };
    await this.redis.multi()
      .hset(this.key(id), { ...info, hash: sha256(secret).toString('hex') })
      .sadd(this.userKey(user), id)
      .exec();
    return { ...info, token: `sbt_${id}_${secret}` };
  }

  async list(user: string): Promise<TokenInfo[]> {
    const ids = await this.redis.smembers(this.userKey(user));
    const out: TokenInfo[] = [];
    for (const id of ids) {
      const h = await this.redis.hgetall(this.key(id));
      if (h.id) out.push({ id: h.id, name: h.name!, user: h.user!, createdAt: h.createdAt! });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Revokes a token of `user`; NotFound when it is not theirs (or does not exist). */
  async revoke(user: string, id: string): Promise<TokenInfo> {
    const h = await this.redis.hgetall(this.key(id));
    if (!h.id || h.user !== user) throw new NotFound(`no token '${id}' of ${user}`);
    await this.redis.multi().del(this.key(id)).srem(this.userKey(user), id).exec();
    return { id: h.id, name: h.name!, user: h.user, createdAt: h.createdAt! };
  }

  /** The owner of a valid token, or null. */
  async verify(token: string): Promise<{ user: string; id: string } | null> {
    const m = TOKEN.exec(token);
    if (!m) return null;
    const [, id, secret] = m as unknown as [string, string, string];
    const h = await this.redis.hgetall(this.key(id));
    if (!h.hash || !h.user) return null;
    const ok = timingSafeEqual(Buffer.from(h.hash, 'hex'), sha256(secret));
    return ok ? { user: h.user, id } : null;
  }
}
