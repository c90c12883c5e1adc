import { Redis } from 'ioredis';
import { DependencyUnavailable } from '../core/errors.ts';

/**
 * One ioredis client for the gateway. `maxRetriesPerRequest: null` is what BullMQ workers need;
 * commands wait for a reconnect instead of failing while Redis restarts, and the doors time out
 * their own requests so a caller still gets a clear 503.
 */
export function connectRedis(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    lazyConnect: true,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
}

/** Connects, failing with a clear error when Redis does not answer in time. */
export async function openRedis(url: string, timeoutMs = 10_000): Promise<Redis> {
  const redis = connectRedis(url);
  redis.on('error', () => {}); // reconnects are logged by health checks, not once per retry
  const timer = setTimeout(() => redis.disconnect(), timeoutMs);
  try {
    await redis.connect();
    await redis.ping();
    return redis;
  } catch (err) {
    redis.disconnect();
    throw new DependencyUnavailable('redis', `cannot connect to ${redactUrl(url)}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** A URL with its password replaced, fit for a log line or an error message. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}
