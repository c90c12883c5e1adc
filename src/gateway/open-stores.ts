import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../store/embedded-redis.ts';
import { claimKeyspace } from '../network/keyspace-owner.ts';
import { MemoryGuard } from '../store/memory-guard.ts';
import { describeRedis, isCluster, openRedis, type RedisTarget } from '../store/redis.ts';
import type { Cleanup } from './cleanup.ts';

export interface Stores {
  redis: Redis;
  /** The Redis the gateway uses (the first node or sentinel for a cluster or sentinel). */
  redisUrl: string;
  /** Also the last interceptor of the router: refuses new inbound work while Redis is nearly full. */
  memoryGuard: MemoryGuard;
  /** redis.shards as it applies: given, or 12 on a cluster and 1 elsewhere (DESIGN §9). */
  shards: number;
}

/** Step 2: Redis (configured or private) and the guard that watches its memory. */
export async function openStores(config: Config, log: Logger, cleanup: Cleanup): Promise<Stores> {
  const { redis, redisUrl } = await openConfiguredRedis(config.redis, log, cleanup);
  // DESIGN §9: refuses an evicting Redis now, and new inbound work while memory is nearly full.
  const memoryGuard = new MemoryGuard({ redis, limit: config.redis.memoryLimit, log });
  await memoryGuard.start();
  cleanup.push(async () => memoryGuard.stop());
  // One gateway per keyspace: refuses to share it with a gateway of another network identity.
  await claimKeyspace({ redis, prefix: config.redis.prefix, url: redisUrl, identity: config.network?.identity, log });
  const shards = config.redis.shards ?? (isCluster(redis) ? 12 : 1);
  return { redis, redisUrl, memoryGuard, shards };
}

/**
 * The configured Redis (url, cluster or sentinel), or a private redis-server in redis.dataDir. The
 * start log says which one and where the setting came from. A private server that ends while the
 * gateway runs (killed from outside, crashed) is started again on its port and data, so neither
 * running nor draining waits on a Redis that is gone; it is stopped after everything else.
 */
export async function openConfiguredRedis(c: Config['redis'], log: Logger, cleanup: Cleanup): Promise<{ redis: Redis; redisUrl: string }> {
  const auth = { ...(c.username ? { username: c.username } : {}), ...(c.password ? { password: c.password } : {}), ...(c.tls ? { tls: c.tls } : {}) };
  const target: RedisTarget | undefined = c.url ? { url: c.url, ...auth } : c.cluster ? { cluster: c.cluster, ...auth } : c.sentinel ? { sentinel: c.sentinel, ...auth } : undefined;
  if (target) {
    const redis = await openRedis(target);
    cleanup.push(() => quitRedis(redis));
    log.info({ redis: describeRedis(target), source: c.source === 'file' ? 'config file' : c.source }, 'using redis');
    return { redis, redisUrl: 'url' in target ? target.url : 'cluster' in target ? target.cluster.nodes[0]! : target.sentinel.sentinels[0]! };
  }
  let embedded: EmbeddedRedis = await startEmbeddedRedis(c.dataDir);
  let stopping = false;
  let restarts = 0;
  // A restart still under way when the stop comes is waited for, so the server it starts is stopped too.
  let restarting: Promise<void> | undefined;
  const watch = (e: EmbeddedRedis) => e.onUnexpectedExit(() => {
    if (stopping) return;
    if (++restarts > 5) return log.error({ dataDir: c.dataDir }, 'the private redis-server keeps ending: not starting it again; the gateway answers 503 until it is stopped');
    log.error({ pid: e.pid, dataDir: c.dataDir }, 'the private redis-server ended: starting it again on the same port and data');
    restarting = startEmbeddedRedis(c.dataDir, { port: e.port }).then(
      (next) => { embedded = next; if (!stopping) watch(next); },
      (err: Error) => { log.error({ err: err.message }, 'could not start the private redis-server again'); },
    ).finally(() => { restarting = undefined; });
  });
  watch(embedded);
  cleanup.push(async () => {
    stopping = true;
    await restarting;
    await embedded.stop();
  });
  const redis = await openRedis(embedded.url);
  cleanup.push(() => quitRedis(redis));
  log.info({ redis: describeRedis(embedded.url), source: 'embedded', dataDir: c.dataDir, pid: embedded.pid, adopted: embedded.adopted }, embedded.adopted ? 'using the private redis-server left running by an earlier gateway (no redis.url, cluster or sentinel configured)' : 'started a private redis-server (no redis.url, cluster or sentinel configured)');
  return { redis, redisUrl: embedded.url };
}

/** QUIT, or cut the connection if Redis does not answer within 2 s (it may be gone already). */
async function quitRedis(redis: Redis): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => { timer = setTimeout(r, 2000); })]);
  clearTimeout(timer);
  redis.disconnect();
}
