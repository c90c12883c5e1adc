import { Router as ExpressRouter } from 'express';
import type { PermissionAdmin } from '../../auth/permission-admin.ts';
import { VERBS, type Verb } from '../../auth/permissions.ts';
import { NotFound, PermissionDenied, ValidationError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import { parsePattern } from '../../core/pattern.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

export function adminOf(deps: AppDeps): PermissionAdmin {
  if (!deps.permissionAdmin) throw new NotFound('live permissions are not enabled in this gateway');
  return deps.permissionAdmin;
}

export function requireSomeAdmin(deps: AppDeps, p: Principal): void {
  if (!adminOf(deps).isAdmin(p)) throw new PermissionDenied(principalId(p), 'admin', 'any address');
}

export function whoCanQuery(q: Record<string, unknown>): { address: string; verb: Verb } {
  const { address, verb } = q;
  if (typeof address !== 'string' || !address) throw new ValidationError("query parameter 'address' is required");
  if (typeof verb !== 'string' || !(VERBS as readonly string[]).includes(verb)) throw new ValidationError(`query parameter 'verb' must be one of ${VERBS.join(', ')}`);
  parsePattern(address);
  return { address, verb: verb as Verb };
}

/** DESIGN §5: the rules as data, changed live by admins within their scope, with history. */
export function permissionRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const audit = (p: Principal, action: string, target: string, detail: string, ip?: string) => deps.audit.record({ action, actor: principalId(p), ...(ip ? { ip } : {}), target, detail });

  r.get('/api/permissions', async (_req, res) => {
    requireSomeAdmin(deps, principalOf(res));
    res.json(await adminOf(deps).list());
  });
  r.post('/api/permissions', async (req, res) => {
    const p = principalOf(res);
    const rule = await adminOf(deps).add(p, (req.body ?? {}) as Record<string, unknown>, req.ip);
    await audit(p, 'permission.added', rule.address, `${rule.id}: ${rule.group ? `group ${rule.group}` : rule.user ? `user ${rule.user}` : `peer ${rule.peer}`} may ${rule.verbs.join(', ')} on ${rule.address}`, req.ip);
    res.status(201).json({ rule, version: deps.permissions.version });
  });
  r.delete('/api/permissions/:id', async (req, res) => {
    const p = principalOf(res);
    const rule = await adminOf(deps).remove(p, String(req.params.id), req.ip);
    await audit(p, 'permission.removed', rule.address, `${rule.id} removed`, req.ip);
    res.json({ removed: rule, version: deps.permissions.version });
  });
  r.get('/api/permissions/history', async (req, res) => {
    requireSomeAdmin(deps, principalOf(res));
    res.json({ changes: await adminOf(deps).history(Math.min(Math.max(Number(req.query.limit) || 200, 1), 5000)) });
  });
  r.post('/api/permissions/revert', async (req, res) => {
    const p = principalOf(res);
    const version = (req.body ?? {}).version as unknown;
    const result = await adminOf(deps).revert(p, version, req.ip);
    await audit(p, 'permission.reverted', '**', `reverted to version ${String(version)}: ${result.added.length} added, ${result.removed.length} removed`, req.ip);
    res.json({ ...result, version: deps.permissions.version });
  });
  r.get('/api/who-can', async (req, res) => {
    const { address, verb } = whoCanQuery(req.query as Record<string, unknown>);
    deps.permissions.require(principalOf(res), 'admin', address);
    res.json({ address, verb, grants: await adminOf(deps).whoCan(verb, address) });
  });
  return r;
}
