import type { ConnectionOptions } from 'node:tls';
import { Client, Filter, InvalidCredentialsError, type Entry } from 'ldapts';
import type { Logger } from 'pino';
import type { HealthReport } from '../core/endpoint.ts';
import { DependencyUnavailable } from '../core/errors.ts';
import type { Principal } from '../core/message.ts';
import type { Directory } from './directory.ts';

export interface LdapOptions {
  /** ldap:// or ldaps:// URL. */
  url: string;
  /** Service account that searches users and groups. */
  bindDN: string;
  bindPassword: string;
  userBase: string;
  /** Filter with `{username}`, e.g. `(uid={username})`; the value is escaped (RFC 4515). */
  userFilter: string;
  /** Attribute holding the login name (the principal's name). */
  usernameAttribute: string;
  /** Attribute holding the e-mail address. */
  mailAttribute?: string;
  /** Where groups are searched; omit to rely on memberOf only. */
  groupBase?: string;
  /** Filter with `{dn}` (the user's DN, escaped), e.g. `(|(member={dn})(uniqueMember={dn}))`. */
  groupFilter: string;
  /** Attribute on the user entry listing group DNs (e.g. memberOf), read in addition to the search. */
  memberOfAttribute?: string;
  /** Follow groups that are members of groups (up to 5 levels). */
  nestedGroups: boolean;
  /** How long a user's entry and groups are cached; membership changes show within it. */
  cacheTtlMs: number;
  /** Per-operation and connect timeout: a slow directory counts as down. */
  timeoutMs: number;
  /** `ca` is the PEM text of the CA that signed the directory's certificate (read at the config edge), not a path. */
  tls?: { ca?: string; startTls?: boolean; rejectUnauthorized?: boolean };
}

interface UserRecord {
  dn: string;
  name: string;
  groups: string[];
  email?: string;
}

/** RDN value of a DN's first component: `cn=ops,ou=groups,…` → `ops`. */
function firstRdnValue(dn: string): string {
  const m = /^[^=]+=((?:\\.|[^,\\])*)/.exec(dn);
  return m ? m[1]!.replace(/\\(.)/g, '$1') : dn;
}

function firstString(v: Entry[string] | undefined): string | undefined {
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined ? undefined : Buffer.isBuffer(x) ? x.toString('utf8') : String(x);
}

function strings(v: Entry[string] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : String(x)));
}


/**
 * Puts an escaped value into a configured filter. A replacer function, not a replacement string:
 * with a string, `$&`, `$'` and `` $` `` in a user name would splice parts of the filter itself
 * into the query.
 */
export function fillFilter(template: string, placeholder: string, value: string): string {
  const escaped = Filter.escape(value);
  return template.replaceAll(placeholder, () => escaped);
}

/**
 * The LDAP directory (ldapts). Each operation uses a fresh connection, so an outage costs only
 * the operations during it and the first one after recovery just works. Anything but a wrong
 * password is "directory unavailable": the door fails closed with 503, never open.
 */
export class LdapDirectory implements Directory {
  private readonly cache = new Map<string, { record: UserRecord | null; until: number }>();
  private readonly tlsOptions?: ConnectionOptions;

  constructor(private readonly o: LdapOptions, private readonly log: Logger) {
    if (o.tls) {
      this.tlsOptions = {
        ...(o.tls.ca ? { ca: o.tls.ca } : {}),
        rejectUnauthorized: o.tls.rejectUnauthorized ?? true,
      };
    }
  }

  private async connect(): Promise<Client> {
    // Fresh option objects each time: ldapts stores the upgraded socket into the options it is given.
    // tlsOptions on the client are for ldaps:// only (given on ldap:// they break a later StartTLS).
    const ldaps = this.o.url.startsWith('ldaps:');
    const client = new Client({ url: this.o.url, timeout: this.o.timeoutMs, connectTimeout: this.o.timeoutMs, ...(ldaps && this.tlsOptions ? { tlsOptions: { ...this.tlsOptions } } : {}) });
    // The certificate must name the host we dialled, as for LDAPS.
    if (this.o.tls?.startTls) await client.startTLS({ ...this.tlsOptions, host: new URL(this.o.url).hostname });
    return client;
  }

  private unavailable(err: unknown): DependencyUnavailable {
    const reason = (err as Error).message || (err as Error).name;
    this.log.warn({ err: reason }, 'directory unavailable');
    return new DependencyUnavailable('directory', `the LDAP directory cannot be reached (${reason}); try again shortly`);
  }

  /** Runs `fn` on a connection bound as the service account. */
  private async asService<T>(fn: (c: Client) => Promise<T>): Promise<T> {
    let client: Client | undefined;
    try {
      client = await this.connect();
      await client.bind(this.o.bindDN, this.o.bindPassword);
      return await fn(client);
    } catch (err) {
      throw this.unavailable(err);
    } finally {
      await client?.unbind().catch(() => {});
    }
  }

  private async findUser(c: Client, username: string): Promise<UserRecord | null> {
    const filter = fillFilter(this.o.userFilter, '{username}', username);
    const attributes = [this.o.usernameAttribute, ...(this.o.mailAttribute ? [this.o.mailAttribute] : []), ...(this.o.memberOfAttribute ? [this.o.memberOfAttribute] : [])];
    const { searchEntries } = await c.search(this.o.userBase, { scope: 'sub', filter, attributes, sizeLimit: 2 });
    // Zero or several matches: no login (an ambiguous filter must not pick one at random).
    if (searchEntries.length !== 1) return null;
    const entry = searchEntries[0]!;
    const groupDns = new Set<string>(this.o.memberOfAttribute ? strings(entry[this.o.memberOfAttribute]) : []);
    if (this.o.groupBase) {
      let frontier = [entry.dn];
      for (let depth = 0; depth < (this.o.nestedGroups ? 5 : 1) && frontier.length > 0; depth++) {
        const next: string[] = [];
        for (const dn of frontier) {
          const gf = fillFilter(this.o.groupFilter, '{dn}', dn);
          const groups = await c.search(this.o.groupBase, { scope: 'sub', filter: gf, attributes: ['cn'] });
          for (const g of groups.searchEntries) if (!groupDns.has(g.dn)) { groupDns.add(g.dn); next.push(g.dn); }
        }
        frontier = next;
      }
    }
    const groups = [...groupDns].flatMap((dn) => [dn, firstRdnValue(dn)]);
    const email = this.o.mailAttribute ? firstString(entry[this.o.mailAttribute]) : undefined;
    return { dn: entry.dn, name: firstString(entry[this.o.usernameAttribute]) ?? username, groups: [...new Set(groups)], ...(email ? { email } : {}) };
  }

  private async record(username: string): Promise<UserRecord | null> {
    const hit = this.cache.get(username);
    if (hit && hit.until > Date.now()) return hit.record;
    const record = await this.asService((c) => this.findUser(c, username));
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(username, { record, until: Date.now() + this.o.cacheTtlMs });
    return record;
  }

  async lookup(username: string): Promise<Principal | null> {
    if (!username) return null;
    const r = await this.record(username);
    return r ? LdapDirectory.principal(r) : null;
  }

  private static principal(r: UserRecord): Principal {
    return { kind: 'user', name: r.name, groups: r.groups, ...(r.email ? { email: r.email } : {}) };
  }

  async groups(prefix: string, limit: number): Promise<string[]> {
    if (!this.o.groupBase) return [];
    return this.asService(async (c) => {
      const filter = prefix ? `(cn=${Filter.escape(prefix)}*)` : '(cn=*)';
      const { searchEntries } = await c.search(this.o.groupBase!, { scope: 'sub', filter, attributes: ['cn'], sizeLimit: Math.max(limit, 1) }).catch((err: Error) => {
        // More matches than the size limit: the first ones are enough for a picker.
        if (err.name === 'SizeLimitExceededError') return { searchEntries: [] as Entry[] };
        throw err;
      });
      return searchEntries.map((e) => firstString(e.cn) ?? firstRdnValue(e.dn)).sort().slice(0, limit);
    });
  }

  /** Direct members of a group found by cn (or DN) under groupBase that are users under userBase. */
  async members(group: string): Promise<Principal[]> {
    if (!this.o.groupBase) return [];
    const out: Principal[] = [];
    await this.asService(async (c) => {
      const filter = group.includes('=') ? undefined : `(cn=${Filter.escape(group)})`;
      const found = filter
        ? (await c.search(this.o.groupBase!, { scope: 'sub', filter, attributes: ['member', 'uniqueMember'] })).searchEntries
        : (await c.search(group, { scope: 'base', attributes: ['member', 'uniqueMember'] })).searchEntries;
      const dns = found.flatMap((g) => [...strings(g.member), ...strings(g.uniqueMember)]);
      for (const dn of dns) {
        if (!dn.toLowerCase().endsWith(this.o.userBase.toLowerCase())) continue;
        const { searchEntries } = await c.search(dn, { scope: 'base', attributes: [this.o.usernameAttribute] });
        const name = firstString(searchEntries[0]?.[this.o.usernameAttribute]);
        if (!name) continue;
        const p = await this.lookup(name).catch(() => null);
        if (p) out.push(p);
      }
    });
    return out;
  }

  async authenticate(username: string, password: string): Promise<Principal | null> {
    // An empty password is an unauthenticated bind, which some servers report as success.
    if (!username || !password) return null;
    const r = await this.record(username);
    if (!r) return null;
    let client: Client | undefined;
    try {
      client = await this.connect();
      await client.bind(r.dn, password);
    } catch (err) {
      if (err instanceof InvalidCredentialsError) return null;
      throw this.unavailable(err);
    } finally {
      await client?.unbind().catch(() => {});
    }
    return LdapDirectory.principal(r);
  }

  async health(): Promise<HealthReport> {
    try {
      await this.asService(async () => undefined);
      return { ok: true, detail: `ldap ${this.o.url}` };
    } catch (err) {
      return { ok: false, detail: (err as Error).message };
    }
  }
}
