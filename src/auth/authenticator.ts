import { createHash } from 'node:crypto';
import { Unauthenticated } from '../core/errors.ts';
import type { Principal } from '../core/message.ts';
import type { AuditLog } from './audit.ts';
import type { Directory } from './directory.ts';
import type { LoginGuard } from './login-guard.ts';
import type { TokenStore } from './tokens.ts';

const CACHE_MAX = 1000;
/**
 * Directories compare names ignoring surrounding spaces and runs of spaces (LDAP's
 * insignificant-space handling): so do we, for the login and for rate-limit keys alike, or
 * ' alice' would be a fresh name to guess passwords for.
 */
export function normalizeUsername(name: string): string {
  return name.trim().replace(/\s+/g, ' ');
}

/** One message for every way a login can fail, so user names cannot be probed. */
export const BAD_LOGIN = 'invalid user name or password';

/**
 * Turns credentials into a principal for every door (HTTP Basic, bearer tokens, the web login,
 * AMQP SASL PLAIN), so every door shares one set of login limits and one audit trail. A verified password is remembered for `credentialCacheMs` (keyed by a hash of
 * user and password, never the password) so API clients don't pay a directory bind per request;
 * groups always come from the directory's lookup, which has its own cache TTL.
 */
export class Authenticator {
  private readonly verified = new Map<string, number>();

  constructor(
    private readonly directory: Directory,
    private readonly tokens: TokenStore,
    private readonly audit: AuditLog,
    private readonly guard: LoginGuard,
    private readonly credentialCacheMs = 60_000,
  ) {}

  /**
   * `cache` lets repeated API calls skip the directory bind; an interactive login (the web form)
   * always binds and is always audited.
   */
  async password(rawUsername: string, password: string, ctx: { ip?: string; door: string; cache?: boolean }): Promise<Principal> {
    const username = normalizeUsername(rawUsername);
    await this.guard.check(username || undefined, ctx.ip);
    if (!username || !password) {
      await this.guard.failed(username || undefined, ctx.ip);
      throw new Unauthenticated(BAD_LOGIN);
    }
    const key = createHash('sha256').update(`${username}\0${password}`).digest('hex');
    const until = this.verified.get(key);
    if (ctx.cache !== false && until !== undefined && until > Date.now()) {
      const p = await this.directory.lookup(username);
      if (p) return p;
    }
    const principal = await this.directory.authenticate(username, password);
    if (!principal) {
      this.verified.delete(key);
      await this.guard.failed(username, ctx.ip);
      await this.audit.record({ action: 'login.failure', actor: `user:${username.slice(0, 128)}`, ip: ctx.ip, target: ctx.door, detail: 'bad user name or password' });
      throw new Unauthenticated(BAD_LOGIN);
    }
    if (this.verified.size >= CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(key, Date.now() + this.credentialCacheMs);
    await this.audit.record({ action: 'login.success', actor: `user:${principal.name}`, ip: ctx.ip, target: ctx.door });
    return principal;
  }

  /**
   * A door refused a client before it could log in (AMQP: a frame too large before SASL, no login
   * within the handshake timeout, too many connections from one address). Audited as
   * `<door>.refused` (`amqp.refused`) with the IP; not counted against the login limits, since no
   * password was tried.
   */
  async refused(ctx: { ip?: string; door: string }, detail: string): Promise<void> {
    await this.audit.record({ action: `${ctx.door}.refused`, actor: `ip:${ctx.ip ?? '(unknown)'}`, ip: ctx.ip, target: ctx.door, detail });
  }

  async token(token: string, ctx: { ip?: string; door: string }): Promise<Principal> {
    await this.guard.check(undefined, ctx.ip);
    const owner = await this.tokens.verify(token);
    const principal = owner ? await this.directory.lookup(owner.user) : null;
    if (!owner || !principal) {
      await this.guard.failed(undefined, ctx.ip);
      await this.audit.record({ action: 'login.failure', actor: owner ? `user:${owner.user}` : 'token:(invalid)', ip: ctx.ip, target: ctx.door, detail: owner ? 'token owner no longer in the directory' : 'unknown or revoked token' });
      throw new Unauthenticated('invalid or revoked API token');
    }
    return principal;
  }
}
