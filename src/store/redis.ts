import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { DependencyUnavailable, SwitchboardError } from '../core/errors.ts';
import './ioredis-end-on-disconnect.ts';

/** TLS towards Redis: PEM file paths, read when the connection is made. */
export interface RedisTlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
  /** @defaultValue true */
  rejectUnauthorized?: boolean;
}

/** Which Redis to use: one server, a cluster, or a primary found through Sentinel. */
export type RedisTarget = (
  | { url: string }
  | { cluster: { nodes: string[] } }
  | { sentinel: { sentinels: string[]; name: string; password?: string } }
) & {
  /** ACL user and password for the data nodes; a URL's own credentials win. */
  username?: string;
  password?: string;
  tls?: RedisTlsFiles;
};

/** The configured Redis is of another kind than the config says; the message says what to write. */
export class RedisKindMismatch extends SwitchboardError {
  constructor(message: string) {
    super('redis_kind_mismatch', message, 500);
  }
}

/** Common to every form. `maxRetriesPerRequest: null` is what BullMQ workers need. */
const BASE: RedisOptions = {
  maxRetriesPerRequest: null,
  enableReadyCheck: true,
  lazyConnect: true,
  retryStrategy: (times) => Math.min(times * 200, 2000),
};

/**
 * One ioredis client for the gateway. Commands wait for a reconnect instead of failing while Redis
 * restarts, and the doors time out their own requests so a caller still gets a clear 503.
 */
export function connectRedis(url: string): Redis {
  return new Redis(url, BASE);
}

/**
 * The client for a target. A cluster client is returned typed as `Redis`: the stores use the
 * command surface both share (and BullMQ takes either); nothing below the gateway branches on it.
 */
export function createRedisClient(target: RedisTarget): Redis {
  const tls = tlsOptions(target.tls);
  const auth = { ...(target.username ? { username: target.username } : {}), ...(target.password ? { password: target.password } : {}) };
  if ('cluster' in target) {
    const nodes = target.cluster.nodes.map(hostPort);
    const anyTls = tls ?? (target.cluster.nodes.some((n) => n.startsWith('rediss:')) ? {} : undefined);
    const first = new URL(target.cluster.nodes[0]!);
    const urlAuth = { ...(first.username ? { username: decodeURIComponent(first.username) } : {}), ...(first.password ? { password: decodeURIComponent(first.password) } : {}) };
    return new Cluster(nodes, {
      lazyConnect: true,
      enableReadyCheck: true,
      clusterRetryStrategy: (times) => Math.min(times * 200, 2000),
      // ioredis reloads the slot map only after an error on the client's own commands; a client
      // that never touched a failed master's slots would keep naming the dead master forever.
      slotsRefreshInterval: 5000,
      redisOptions: { maxRetriesPerRequest: null, ...auth, ...urlAuth, ...(anyTls ? { tls: anyTls } : {}) },
    }) as unknown as Redis;
  }
  if ('sentinel' in target) {
    const s = target.sentinel;
    const sentinelTls = s.sentinels.some((u) => u.startsWith('rediss:'));
    return new Redis({
      ...BASE,
      ...auth,
      sentinels: s.sentinels.map(hostPort),
      name: s.name,
      ...(s.password ? { sentinelPassword: s.password } : {}),
      ...(tls ? { tls } : {}),
      ...(sentinelTls ? { enableTLSForSentinelMode: true, sentinelTLS: tls ?? {} } : {}),
    });
  }
  const u = new URL(target.url);
  return new Redis(target.url, {
    ...BASE,
    ...(target.username && !u.username ? { username: target.username } : {}),
    ...(target.password && !u.password ? { password: target.password } : {}),
    ...(tls ? { tls } : {}), // tls settings on a redis:// URL still mean TLS
  });
}

/**
 * Connects, failing with a clear error when Redis does not answer in time, or when the server is
 * not the kind the config names (a cluster node or a sentinel given as redis.url, a replica).
 */
export async function openRedis(target: string | RedisTarget, timeoutMs = 10_000): Promise<Redis> {
  const t: RedisTarget = typeof target === 'string' ? { url: target } : target;
  const redis = createRedisClient(t);
  redis.on('error', () => {}); // reconnects are logged by health checks, not once per retry
  const timer = setTimeout(() => redis.disconnect(), timeoutMs);
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    const message = (err as Error).message;
    if (/^MOVED /.test(message) && 'url' in t) throw clusterGivenAsUrl(t.url);
    throw new DependencyUnavailable('redis', `cannot connect to ${describeRedis(t)}: ${message}`);
  } finally {
    clearTimeout(timer);
  }
  if ('url' in t) {
    try {
      await checkKind(redis, t.url);
    } catch (err) {
      redis.disconnect();
      throw err;
    }
  }
  return redis;
}

async function checkKind(redis: Redis, url: string): Promise<void> {
  const info = await redis.info();
  const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(info)?.[1];
  if (field('cluster_enabled') === '1' || field('redis_mode') === 'cluster') throw clusterGivenAsUrl(url);
  if (field('redis_mode') === 'sentinel') {
    throw new RedisKindMismatch(`${redactUrl(url)} is a Redis Sentinel, not a Redis server: write redis.sentinel: { sentinels: [${redactUrl(url)}, …], name: <the monitored master's name> } instead of redis.url`);
  }
  if (field('role') === 'slave') {
    const master = `${field('master_host') ?? '?'}:${field('master_port') ?? '?'}`;
    throw new RedisKindMismatch(`${redactUrl(url)} is a read-only replica of ${master}: point redis.url at the primary, or write redis.sentinel: { sentinels: [...], name } so failovers are followed`);
  }
}

function clusterGivenAsUrl(url: string): RedisKindMismatch {
  return new RedisKindMismatch(`${redactUrl(url)}: this Redis is a cluster node: write redis.cluster.nodes: [${redactUrl(url)}, …] instead of redis.url`);
}

/** One line for logs and errors: which Redis, passwords hidden. */
export function describeRedis(target: string | RedisTarget): string {
  if (typeof target === 'string') return redactUrl(target);
  if ('cluster' in target) return `cluster ${target.cluster.nodes.map(redactUrl).join(', ')}`;
  if ('sentinel' in target) return `sentinel master '${target.sentinel.name}' via ${target.sentinel.sentinels.map(redactUrl).join(', ')}`;
  return redactUrl(target.url);
}

/** A URL with its password replaced, fit for a log line or an error message. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid url)';
  }
}

function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 6379) };
}

function tlsOptions(files: RedisTlsFiles | undefined): ConnectionOptions | undefined {
  if (!files) return undefined;
  return {
    ...(files.ca ? { ca: readFileSync(files.ca) } : {}),
    ...(files.cert ? { cert: readFileSync(files.cert) } : {}),
    ...(files.key ? { key: readFileSync(files.key) } : {}),
    ...(files.servername ? { servername: files.servername } : {}),
    rejectUnauthorized: files.rejectUnauthorized ?? true,
  };
}

// --- Shards: work spread over hash tags (DESIGN §9) ------------------------------------------

/** The slot Redis Cluster gives a key: CRC16 (XMODEM) of its hash tag, mod 16384. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** Shard counts over 64 are refused by the config. */
export const MAX_SHARDS = 64;

/** Bit-reversal of `i` over 6 bits: 0, 32, 16, 48, 8, … — the first N spread evenly for any N. */
function spreadPosition(i: number): number {
  let r = 0;
  for (let b = 0; b < 6; b++) if (i & (1 << b)) r |= 1 << (5 - b);
  return r;
}

const tags = new Map<string, string>();

/**
 * The hash tag (without braces) of shard `shard` of `namespace`: `<namespace>.<shard>.<n>`, the
 * first `n` whose slot lies in the slot range of that shard. Shard i's range is the i-th of a
 * van der Corput sequence over 64 equal ranges, so the first N shards sit in N distinct parts of
 * the slot space for any N: a 3-master cluster (slots split in thirds) gets 5/4/3 of 12 shards,
 * never all on one master. Pure and stable across versions: where data lives depends on it.
 */
export function shardTag(namespace: string, shard: number): string {
  const cached = tags.get(`${namespace}\0${shard}`);
  if (cached) return cached;
  const width = 16384 / MAX_SHARDS;
  const low = spreadPosition(shard % MAX_SHARDS) * width;
  for (let n = 0; ; n++) {
    const tag = `${namespace}.${shard}.${n}`;
    const slot = keySlot(tag);
    if (slot >= low && slot < low + width) {
      tags.set(`${namespace}\0${shard}`, tag);
      return tag;
    }
  }
}

/**
 * Which of `shards` shards a string belongs to (a dedup key, a task id): stable for the same
 * string and shard count.
 */
export function shardOf(value: string, shards: number): number {
  if (shards <= 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) h = Math.imul(h ^ value.charCodeAt(i), 0x01000193) >>> 0;
  return h % shards;
}

/** True when the client is a Redis Cluster client (typed as Redis everywhere above). */
export function isCluster(redis: Redis): boolean {
  return redis instanceof Cluster;
}

/**
 * Redis's own clock in ms: one clock for every gateway on this keyspace, where comparing one
 * process's Date.now() with another's would let a skewed clock move a checkpoint or a deadline.
 */
export async function redisNow(redis: Redis): Promise<number> {
  const [sec, micros] = await redis.time();
  return Number(sec) * 1000 + Math.floor(Number(micros) / 1000);
}
