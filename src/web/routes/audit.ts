import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { clampedInt, operation, requestOf } from '../openapi-operation.ts';

export const auditOperations = {
  list: operation({
    method: 'get', path: '/api/audit', id: 'listAudit', tag: 'audit',
    summary: 'The audit trail, newest first (admin on everything)',
    query: z.object({ limit: clampedInt(1, 1000, 100), actor: z.string().optional(), action: z.string().optional() }),
    ok: {
      status: 200, description: 'entries',
      schema: z.looseObject({ entries: z.array(z.looseObject({ action: z.string(), actor: z.string(), ip: z.string().optional(), target: z.string().optional(), detail: z.string().optional() })) }),
    },
    errors: [400, 403],
  }),
};

/** GET /api/audit — the audit trail, newest first (admin on everything). */
export function auditRoutes({ audit, permissions }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get(auditOperations.list.path, async (req, res) => {
    permissions.require(principalOf(res), 'admin', '**');
    const { limit, actor, action } = requestOf.query(auditOperations.list, req);
    res.json({ entries: await audit.list(limit, { actor, action }) });
  });
  return r;
}
