import { Cluster, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Lease, leaseKey } from '../store/lease.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { TaskKeys } from './keys.ts';

/**
 * The version of the open-by-due index this backfill brings a store up to. Raise it when the
 * index gains something older tasks must be given again: every store then runs the backfill once.
 */
export const OPEN_BY_DUE_VERSION = 1;

const SCRIPTS = { indexOpenTask: 2 } as const;

/** After a failed pass (Redis away, say), how long until this process competes for it again. */
const RETRY_MS = 30_000;

export interface OpenByDueBackfillOptions {
  redis: Redis;
  prefix: string;
  /** Hash tags tasks are spread over (redis.shards), as the task store has them. */
  shards: number;
  log: Logger;
  /**
   * Keys asked of each SCAN call, and tasks indexed per round trip.
   * @defaultValue 500
   */
  batch?: number;
}

/** What one pass found. */
export interface BackfillResult {
  /** Task hashes looked at. */
  tasks: number;
  /** Open tasks that were missing from the index and were added. */
  added: number;
}

/** The KEYS of `indexOpenTask` for task `id`: its hash and its shard's open-by-due index. */
export function indexOpenTaskKeys(keys: TaskKeys, id: string): [string, string] {
  return [keys.task(id), keys.openByDueIn(keys.tagOf(id))];
}

/** The Redis key holding the index version a store was brought up to. */
export function backfillMarkerKey(prefix: string): string {
  return `${prefix}:migrations:open-by-due`;
}

/** `text` as a literal in a SCAN MATCH pattern. */
const globLiteral = (text: string) => text.replace(/[\\*?[\]]/g, (c) => `\\${c}`);

/** The nodes to SCAN: every master of a cluster (a SCAN sees one node's keys), else the one server. */
async function scanNodes(redis: Redis): Promise<Redis[]> {
  const client: unknown = redis;
  if (!(client instanceof Cluster)) return [redis];
  // A cluster client knows its masters once connected; none known would make a pass that looked
  // at nothing and still wrote the marker.
  await client.ping();
  const masters = client.nodes('master');
  if (masters.length === 0) throw new Error('the Redis Cluster client knows no master to scan');
  return masters;
}

/**
 * Lists every open task missing from the open-by-due index (tasks created before the index
 * existed), shard by shard: SCAN over the task hashes in batches (never KEYS, so Redis keeps
 * serving), then per open task one `indexOpenTask` script that checks "still open" and adds in
 * the same step. Safe beside live traffic and idempotent: a second pass adds nothing. `stopped`
 * is asked between batches, so a process that loses its lease stops within one batch.
 */
export async function indexOpenTasks(o: OpenByDueBackfillOptions, stopped: () => boolean = () => false): Promise<BackfillResult> {
  const keys = new TaskKeys(o.prefix, o.shards);
  const scripts: ScriptCalls<typeof SCRIPTS> = loadScripts(o.redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  const batch = o.batch ?? 500;
  const result: BackfillResult = { tasks: 0, added: 0 };
  const nodes = await scanNodes(o.redis);
  for (const tag of keys.tags) {
    const head = `${o.prefix}:{${tag}}:task:`;
    const match = `${globLiteral(head)}*`;
    for (const node of nodes) {
      let cursor = '0';
      do {
        if (stopped()) return result;
        const [next, found] = await node.scan(cursor, 'MATCH', match, 'COUNT', batch);
        cursor = next;
        // Task ids have no ':'; what has one after the head is a task's history list.
        const ids = found.filter((k) => k.startsWith(head) && !k.slice(head.length).includes(':')).map((k) => k.slice(head.length));
        result.tasks += ids.length;
        result.added += await indexBatch(o.redis, scripts, keys, ids);
      } while (cursor !== '0');
    }
  }
  return result;
}

async function indexBatch(redis: Redis, scripts: ScriptCalls<typeof SCRIPTS>, keys: TaskKeys, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const pipeline = redis.pipeline();
  for (const id of ids) pipeline.hmget(keys.task(id), 'status', 'spec');
  const rows = ((await pipeline.exec()) ?? []).map(([err, row]) => (err ? [null, null] : row) as [string | null, string | null]);
  // Read ahead only to skip decided tasks cheaply and to find the due date (fixed at creation);
  // whether the task is still open is decided again inside the script.
  const open = ids.flatMap((id, i) => {
    const [status, spec] = rows[i]!;
    return status === 'open' && spec ? [[id, dueScore(spec)] as const] : [];
  });
  const added = await Promise.all(open.map(([id, due]) => scripts.indexOpenTask(indexOpenTaskKeys(keys, id), id, due)));
  return added.reduce<number>((n, a) => n + Number(a), 0);
}

/** The index score of a task: its due date in epoch ms, `+inf` without one (as createTask scores it). */
function dueScore(spec: string): string {
  try {
    const due = (JSON.parse(spec) as { due?: unknown }).due;
    const ms = typeof due === 'string' ? Date.parse(due) : NaN;
    return Number.isNaN(ms) ? '+inf' : String(ms);
  } catch {
    return '+inf';
  }
}

/**
 * Runs `indexOpenTasks` once per store, at start: one process of a fleet does it (the holder of
 * the lease `<prefix>:lease:open-by-due-backfill`), in the background so the gateway starts at
 * once, and records `OPEN_BY_DUE_VERSION` under `<prefix>:migrations:open-by-due` when done.
 * Every later start reads the marker and does nothing. A holder that dies or loses its lease
 * midway leaves no marker: another process takes the lease and starts over, which is safe since
 * a pass only adds what is missing.
 */
export class OpenByDueBackfill {
  private readonly lease: Lease;
  private stopping = false;
  /** Counts the times this process took the lease; a pass goes on only while its own is current. */
  private term = 0;
  private held = false;
  private running?: Promise<void>;
  private retry?: NodeJS.Timeout;
  /** Resolves with the pass this process ran (undefined: none was needed, or another process ran it). */
  readonly finished: Promise<BackfillResult | undefined>;
  private finish!: (r: BackfillResult | undefined) => void;

  constructor(private readonly o: OpenByDueBackfillOptions) {
    this.lease = new Lease({ redis: o.redis, key: leaseKey(o.prefix, 'open-by-due-backfill'), log: o.log });
    this.finished = new Promise((resolve) => (this.finish = resolve));
  }

  private async done(): Promise<boolean> {
    return Number(await this.o.redis.get(backfillMarkerKey(this.o.prefix))) >= OPEN_BY_DUE_VERSION;
  }

  /** Checks the marker and, unless the store is up to date, competes for the lease and runs the pass. */
  async start(): Promise<void> {
    if (await this.done()) return this.finish(undefined);
    this.lease.start({
      // Not awaited: the lease is renewed while the pass runs (its tick waits for this callback).
      acquired: () => {
        const term = ++this.term;
        this.held = true;
        this.running = (this.running ?? Promise.resolve()).then(() => this.run(term)).catch((err: Error) => this.failed(err));
      },
      lost: () => {
        this.held = false;
      },
    });
  }

  private async run(term: number): Promise<void> {
    const gone = () => this.stopping || !this.held || term !== this.term;
    if (gone()) return;
    if (await this.done()) {
      await this.lease.stop();
      return this.finish(undefined);
    }
    const started = Date.now();
    const result = await indexOpenTasks(this.o, gone);
    if (gone()) return;
    await this.o.redis.set(backfillMarkerKey(this.o.prefix), String(OPEN_BY_DUE_VERSION));
    this.o.log.info({ ...result, ms: Date.now() - started }, 'open tasks backfilled into the open-by-due index');
    await this.lease.stop();
    this.finish(result);
  }

  /** Gives the lease up, so another process may take the pass over, and competes again later. */
  private async failed(err: Error): Promise<void> {
    this.o.log.warn({ err: err.message, retryInMs: RETRY_MS }, 'open tasks backfill failed; it is tried again');
    await this.lease.stop();
    if (this.stopping) return;
    this.retry = setTimeout(() => void this.start().catch((e: Error) => this.failed(e)), RETRY_MS);
    this.retry.unref();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.retry) clearTimeout(this.retry);
    await this.lease.stop();
    await this.running;
    this.finish(undefined);
  }
}
