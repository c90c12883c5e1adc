import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Directory } from '../auth/directory.ts';
import type { Permissions } from '../auth/permissions.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';

/** Everything the HTTP door needs, built by the gateway and handed in (no I/O at import time). */
export interface AppDeps {
  router: Router;
  directory: Directory;
  permissions: Permissions;
  metrics: Metrics;
  redis: Redis;
  log: Logger;
  /** Largest accepted JSON body, e.g. '1mb'. */
  bodyLimit: string;
  /** Extra readiness checks (routes, …) shown in /readyz. */
  readiness?: () => Promise<Record<string, { ok: boolean; detail?: string }>>;
}
