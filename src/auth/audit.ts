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
 * Actions anyone can cause without credentials that work (a failed login at any door, AMQP SASL
 * included, a refused webhook or peer, a peer whose certificate is revoked: whoever holds the
 * revoked key can connect again and again). These are rate-limited per source, so a flood from
 * one address cannot bury the trail.
 */
export const UNAUTHENTICATED_ACTIONS: ReadonlySet<string> = new Set(['login.failure', 'webhook.refused', 'peer.refused', 'amqp.refused', 'peer.revoked']);

export interface AuditOptions {
  /**
   * Entries older than this are dropped (XADD … MINID), so what stays is decided by time, never
   * pushed out by a burst.
   * @defaultValue 90 days
   */
  retentionMs?: number;
  /**
   * A memory backstop far above what the rate limit lets through: the stream is trimmed to about
   * this many entries.
   * @defaultValue 1,000,000
   */
  maxEntries?: number;
  /**
   * Entries of one unauthenticated action from one source (IP) per minute; the rest are counted
   * and recorded as one `audit.suppressed` entry ("N more … suppressed") when the minute ends.
   * @defaultValue 20
   */
  perSourcePerMinute?: number;
}

const MINUTE = 60_000;
/** Sources tracked in one minute; beyond this every new source shares one bucket. */
const MAX_SOURCES = 10_000;

interface Window {
  minute: number;
  action: string;
  ip: string;
  written: number;
  suppressed: number;
  target?: string;
}

/**
 * The audit trail: an append-only Redis stream, kept for `retentionMs`, plus a log line for each
 * entry, so it reaches the log pipeline too. Never holds a secret.
 */
export class AuditLog {
  private readonly retentionMs: number;
  private readonly maxEntries: number;
  private readonly perSource: number;
  private readonly windows = new Map<string, Window>();
  private flushTimer: NodeJS.Timeout | undefined;
  private writes = 0;
  /** The minute of the last flush: windows of earlier minutes are all gone. */
  private flushedMinute = 0;

  constructor(private readonly redis: Redis, private readonly prefix: string, private readonly log: Logger, options: AuditOptions = {}) {
    this.retentionMs = options.retentionMs ?? 90 * 86_400_000;
    this.maxEntries = options.maxEntries ?? 1_000_000;
    this.perSource = options.perSourcePerMinute ?? 20;
  }

  private get key(): string {
    return `${this.prefix}:audit`;
  }

  async record(entry: AuditEntry): Promise<void> {
    await this.flush();
    if (UNAUTHENTICATED_ACTIONS.has(entry.action) && !this.admit(entry)) return;
    await this.write(entry);
  }

  /** Counts an unauthenticated entry against its source's minute; false when over the limit. */
  private admit(entry: AuditEntry): boolean {
    const minute = Math.floor(Date.now() / MINUTE);
    let ip = entry.ip ?? '(unknown)';
    let id = `${entry.action}\0${ip}`;
    if (!this.windows.has(id) && this.windows.size >= MAX_SOURCES) {
      ip = '(many sources)';
      id = `${entry.action}\0${ip}`;
    }
    let w = this.windows.get(id);
    if (!w) {
      w = { minute, action: entry.action, ip, written: 0, suppressed: 0, ...(entry.target ? { target: entry.target } : {}) };
      this.windows.set(id, w);
    }
    if (w.written < this.perSource) {
      w.written++;
      return true;
    }
    w.suppressed++;
    // The summary is written when the minute ends, even if nothing else is recorded by then.
    this.flushTimer ??= setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, (minute + 1) * MINUTE - Date.now() + 50).unref();
    return false;
  }

  /** Closes the minutes that have ended: one summary entry per source that was suppressed. */
  private async flush(): Promise<void> {
    const minute = Math.floor(Date.now() / MINUTE);
    if (minute === this.flushedMinute) return;
    this.flushedMinute = minute;
    const ended = [...this.windows].filter(([, w]) => w.minute < minute);
    for (const [id, w] of ended) {
      this.windows.delete(id);
      if (w.suppressed === 0) continue;
      await this.write({
        action: 'audit.suppressed',
        actor: `ip:${w.ip}`,
        ip: w.ip,
        ...(w.target ? { target: w.target } : {}),
        detail: `${w.suppressed} more ${w.action} from ${w.ip} suppressed in the minute from ${new Date(w.minute * MINUTE).toISOString()} (over ${this.perSource} a minute from one source)`,
      });
    }
  }

  private async write(entry: AuditEntry): Promise<void> {
    const at = new Date().toISOString();
    this.log.info({ audit: entry.action, actor: entry.actor, ip: entry.ip, target: entry.target }, entry.detail ?? entry.action);
    try {
      // Retention by time: entries older than retentionMs go as new ones come (exact trim; the
      // rate limit keeps writes few).
      const minId = `${Math.max(0, Date.now() - this.retentionMs)}-0`;
      await this.redis.xadd(this.key, 'MINID', '=', minId, '*', 'e', JSON.stringify({ ...entry, at }));
      if (++this.writes % 1000 === 0) await this.redis.xtrim(this.key, 'MAXLEN', '~', this.maxEntries);
    } catch (err) {
      // The request it describes has already been decided; losing the Redis copy must not undo it.
      this.log.error({ err: (err as Error).message, audit: entry.action }, 'could not store audit entry');
    }
  }

  /** Newest first. */
  async list(limit = 100, filter?: { actor?: string; action?: string }): Promise<StoredAuditEntry[]> {
    await this.flush();
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

  /**
   * Entries newest first between `since` and `until` (epoch ms; the stream ids are times, so the
   * range is read, not scanned), matching every given filter: `actor` and `action` exactly (an
   * action ending in `.*` as a prefix, e.g. `access.*`), `text` anywhere in target or detail.
   * At most `limit`, reading at most `maxRead` entries of the range.
   */
  async search(q: AuditSearch): Promise<StoredAuditEntry[]> {
    await this.flush();
    const out: StoredAuditEntry[] = [];
    const text = q.text?.toLowerCase();
    const prefix = q.action?.endsWith('.*') ? q.action.slice(0, -1) : undefined;
    let end = q.until !== undefined ? String(q.until) : '+';
    const start = q.since !== undefined ? String(q.since) : '-';
    let read = 0;
    const maxRead = q.maxRead ?? 50_000;
    while (out.length < q.limit && read < maxRead) {
      const rows = await this.redis.xrevrange(this.key, end, start, 'COUNT', 1000);
      if (rows.length === 0) break;
      read += rows.length;
      for (const [id, fields] of rows) {
        const e = { ...(JSON.parse(fields[1] ?? '{}') as StoredAuditEntry), id };
        if (q.actor && e.actor !== q.actor) continue;
        if (q.action && (prefix ? !e.action.startsWith(prefix) : e.action !== q.action)) continue;
        if (text && !`${e.target ?? ''} ${e.detail ?? ''}`.toLowerCase().includes(text)) continue;
        out.push(e);
        if (out.length >= q.limit) break;
      }
      if (rows.length < 1000) break;
      end = `(${rows[rows.length - 1]![0]}`;
    }
    return out;
  }
}

export interface AuditSearch {
  actor?: string;
  action?: string;
  text?: string;
  since?: number;
  until?: number;
  limit: number;
  /** @defaultValue 50,000 */
  maxRead?: number;
}
