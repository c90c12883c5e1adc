import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { NotFound, ValidationError } from '../core/errors.ts';
import { TokenKeys } from './keys.ts';

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
 *
 * A token and its owner's list change together in one MULTI over keys of one hash tag
 * (`{tokens}`, see `./keys.ts`). Tokens stored before that layout are still found at their old
 * keys, listed, verified and revoked; nothing new is written there.
 */
export class TokenStore {
  private readonly keys: TokenKeys;

  constructor(private readonly redis: Redis, prefix: string) {
    this.keys = new TokenKeys(prefix);
  }

  /** The stored token, under today's key or, for a token issued before it, the old one. */
  private async read(id: string): Promise<{ h: Record<string, string>; legacy: boolean }> {
    const h = await this.redis.hgetall(this.keys.token(id));
    if (h.id) return { h, legacy: false };
    return { h: await this.redis.hgetall(this.keys.legacyToken(id)), legacy: true };
  }

  async create(user: string, name: unknown): Promise<TokenInfo & { token: string }> {
    if (typeof name !== 'string' || !/^[\x20-\x7e]{1,64}$/.test(name)) throw new ValidationError("'name' must be 1 to 64 printable characters, e.g. \"deploy script\"");
    const id = randomBytes(8).toString('hex');
    const secret = randomBytes(32).toString('base64url');
    const info: TokenInfo = { id, name, user, createdAt: new Date().toISOString() };
    const [token, owned] = this.keys.createOrRevoke(id, user);
    await this.redis.multi()
      .hset(token, { ...info, hash: sha256(secret).toString('hex') })
      .sadd(owned, id)
      .exec();
    return { ...info, token: `sbt_${id}_${secret}` };
  }

  async list(user: string): Promise<TokenInfo[]> {
    const [ids, legacyIds] = await Promise.all([this.redis.smembers(this.keys.user(user)), this.redis.smembers(this.keys.legacyUser(user))]);
    const out: TokenInfo[] = [];
    for (const id of new Set([...ids, ...legacyIds])) {
      const { h } = await this.read(id);
      if (h.id) out.push({ id: h.id, name: h.name!, user: h.user!, createdAt: h.createdAt! });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Revokes a token of `user`; NotFound when it is not theirs (or does not exist). */
  async revoke(user: string, id: string): Promise<TokenInfo> {
    const { h, legacy } = await this.read(id);
    if (!h.id || h.user !== user) throw new NotFound(`no token '${id}' of ${user}`);
    if (legacy) {
      // The old keys are in two slots: the token first, so a crash in between leaves only a
      // dangling id in the list (which lists nothing), never a live token nobody can see.
      await this.redis.del(this.keys.legacyToken(id));
      await this.redis.srem(this.keys.legacyUser(user), id);
    } else {
      const [token, owned] = this.keys.createOrRevoke(id, user);
      await this.redis.multi().del(token).srem(owned, id).exec();
    }
    return { id: h.id, name: h.name!, user: h.user, createdAt: h.createdAt! };
  }

  /** The owner of a valid token, or null. */
  async verify(token: string): Promise<{ user: string; id: string } | null> {
    const m = TOKEN.exec(token);
    if (!m) return null;
    const [, id, secret] = m as unknown as [string, string, string];
    const { h } = await this.read(id);
    if (!h.hash || !h.user) return null;
    const ok = timingSafeEqual(Buffer.from(h.hash, 'hex'), sha256(secret));
    return ok ? { user: h.user, id } : null;
  }
}
