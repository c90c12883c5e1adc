import { Router as ExpressRouter } from 'express';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** GET /api/audit — the audit trail, newest first (admin on everything). */
export function auditRoutes({ audit, permissions }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get('/api/audit', async (req, res) => {
    permissions.require(principalOf(res), 'admin', '**');
    const q = req.query as Record<string, string | undefined>;
    const limit = Math.min(Math.max(Number(q.limit) || 100, 1), 1000);
    res.json({ entries: await audit.list(limit, { actor: q.actor, action: q.action }) });
  });
  return r;
}
