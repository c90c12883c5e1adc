import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { Route } from '../core/route.ts';
import type { Router } from '../core/router.ts';
import type { Cleanup } from './cleanup.ts';

/**
 * Step 7: the configured routes, each consuming its `from` and sending to its `to`. They start
 * once every transport and application they may send to is registered; all are checked before
 * any starts, so a bad route stops the start with nothing moved.
 */
export async function startRoutes(config: Config, router: Router, log: Logger, cleanup: Cleanup): Promise<Route[]> {
  const routes = config.routes.map((def) => new Route(def, router, log));
  routes.forEach((r) => r.validate());
  cleanup.push(() => Promise.all(routes.map((r) => r.stop())));
  for (const r of routes) await r.start();
  return routes;
}
