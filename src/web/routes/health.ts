import { Router as ExpressRouter } from 'express';
import type { AppDeps } from '../deps.ts';

/** Liveness, readiness (Redis and each endpoint) and Prometheus metrics; no credentials. */
export function healthRoutes({ router, redis, metrics, readiness }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', async (_req, res) => {
    const checks: Record<string, { ok: boolean; detail?: string }> = {};
    checks.redis = redis.status === 'ready' ? { ok: true } : { ok: false, detail: `connection is ${redis.status}` };
    if (checks.redis.ok) {
      for (const [scheme, h] of Object.entries(await router.health())) checks[`endpoint:${scheme}`] = h;
      Object.assign(checks, (await readiness?.()) ?? {});
    }
    const ready = Object.values(checks).every((c) => c.ok);
    if (!ready) res.setHeader('Retry-After', '5');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
  });
  r.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });
  return r;
}
