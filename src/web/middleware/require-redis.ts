import type { NextFunction, Request, Response } from 'express';
import type { Redis } from 'ioredis';
import { DependencyUnavailable } from '../../core/errors.ts';

/**
 * While Redis is unreachable, API calls fail fast with 503 + Retry-After instead of waiting on a
 * reconnect (ioredis would queue the command): the client keeps its message and retries later.
 */
export function requireRedis(redis: Redis) {
  return (_req: Request, _res: Response, next: NextFunction) => {
    next(redis.status === 'ready' ? undefined : new DependencyUnavailable('redis', `connection is ${redis.status}; try again shortly`));
  };
}
