import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface AuditEntry {
  /** e.g. login.success, login.failure, access.denied, token.created, token.revoked */
  action: string;
  /** Who acted (`user:alice`), or the name that was tried for a failed login. */
  actor: string;
  /** Where from: the client IP. */
  ip?: string;
  /** What it was about: an address, a token id, a door. */
  target?: string;
  detail?: string;
}

export type StoredAuditEntry = AuditEntry & { at: string; id: string };

/**
 * The audit trail: an append-only Redis stream (capped at about `max` entries) plus a log line
 * for each entry, so it reaches the log pipeline too. Never holds a secret.
 */
export class AuditLog {
  constructor(private readonly redis: Redis, private readonly prefix: string, private readonly log: Logger, private readonly max = 100_000) {}

  private get key(): string {
    return `${this.prefix}:audit`;
  }

  async record(entry: AuditEntry): Promise<void> {
    const at = new Date().toISOString();
    this.log.info({ audit: entry.action, actor: entry.actor, ip: entry.ip, target: entry.target }, entry.detail ?? entry.action);
    try {
      await this.redis.xadd(this.key, 'MAXLEN', '~', String(this.max), '*', 'e', JSON.stringify({ ...entry, at }));
    } catch (err) {
      // The request it describes has already been decided; losing the Redis copy must not undo it.
      this.log.error({ err: (err as Error).message, audit: entry.action }, 'could not store audit entry');
    }
  }

  /** Newest first. */
  async list(limit = 100, filter?: { actor?: string; action?: string }): Promise<StoredAuditEntry[]> {
    const rows = await this.redis.xrevrange(this.key, '+', '-', 'COUNT', Math.min(limit * 10, 10_000));
    const out: StoredAuditEntry[] = [];
    for (const [id, fields] of rows) {
      const e = JSON.parse(fields[1] ?? '{}') as StoredAuditEntry;
      if (filter?.actor && e.actor !== filter.actor) continue;
      if (filter?.action && e.action !== filter.action) continue;
      out.push({ ...e, id });
      if (out.length >= limit) break;
    }
    return out;
  }
}
