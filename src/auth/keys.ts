/**
 * Every Redis key of the auth stores (console permission rules, API tokens, failed-login
 * counters), and the KEYS of each auth script and transaction in the order its header names them.
 * The keys of one script or transaction share one hash tag, so each runs in one Redis Cluster
 * slot (test/unit/redis-scripts.test.ts checks it through these classes).
 */

/**
 * Console permission rules, all under `{perm}`:
 * `<prefix>:{perm}:rules` hash (id → rule JSON), `…:version` counter, `…:history` list of
 * changes, and `…:changed`, the pub/sub channel a change is announced on.
 */
export class PermissionKeys {
  constructor(readonly prefix: string) {}

  get rules(): string {
    return `${this.prefix}:{perm}:rules`;
  }

  get version(): string {
    return `${this.prefix}:{perm}:version`;
  }

  get history(): string {
    return `${this.prefix}:{perm}:history`;
  }

  get channel(): string {
    return `${this.prefix}:{perm}:changed`;
  }

  /** Lifecycle events of rule changes not yet forwarded (src/core/event-journal.ts). */
  get events(): string {
    return `${this.prefix}:{perm}:events`;
  }

  changeRule(): [string, string, string, string] {
    return [this.rules, this.version, this.history, this.events];
  }
}

/**
 * API tokens, all under `{tokens}` so creating or revoking one (the token hash and its owner's
 * set, in one MULTI) is one slot: `<prefix>:{tokens}:token:<id>` hash (id, name, user,
 * createdAt, hash of the secret) and `<prefix>:{tokens}:user:<user>` set of the user's token ids.
 *
 * Until this layout, tokens lived at `<prefix>:token:<id>` and `<prefix>:tokens:<user>` (two
 * slots: CROSSSLOT on a cluster). Those `legacy…` keys are still read and deleted on revoke, so
 * tokens issued before keep working; new tokens are written only under `{tokens}`.
 */
export class TokenKeys {
  constructor(readonly prefix: string) {}

  token(id: string): string {
    return `${this.prefix}:{tokens}:token:${id}`;
  }

  user(user: string): string {
    return `${this.prefix}:{tokens}:user:${user}`;
  }

  /** The keys of the MULTI that creates or revokes a token: the token hash and its owner's set. */
  createOrRevoke(id: string, user: string): [string, string] {
    return [this.token(id), this.user(user)];
  }

  legacyToken(id: string): string {
    return `${this.prefix}:token:${id}`;
  }

  legacyUser(user: string): string {
    return `${this.prefix}:tokens:${user}`;
  }
}

/**
 * Failed-login counters, one key each (unchanged): `<prefix>:rl:user:<lower-cased name>` and
 * `<prefix>:rl:ip:<ip>` (an IPv6 address counted by its /56 subnet). Each script takes one key.
 */
export class LoginKeys {
  constructor(readonly prefix: string) {}

  failures(kind: 'user' | 'ip', name: string): string {
    return `${this.prefix}:rl:${kind}:${name}`;
  }

  countFailedLogin(kind: 'user' | 'ip', name: string): [string] {
    return [this.failures(kind, name)];
  }

  readFailedLogins(kind: 'user' | 'ip', name: string): [string] {
    return [this.failures(kind, name)];
  }
}
