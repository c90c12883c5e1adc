import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import type { PermissionAdmin } from '../../auth/permission-admin.ts';
import type { Verb } from '../../auth/permissions.ts';
import { NotFound, PermissionDenied } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { clampedInt, operation, parseWith, requestOf } from '../openapi-operation.ts';
import { AddressPattern, PermissionRule, Verb as VerbSchema } from '../openapi-schemas.ts';
import { verbQuery } from './can.ts';

export function adminOf(deps: AppDeps): PermissionAdmin {
  if (!deps.permissionAdmin) throw new NotFound('live permissions are not enabled in this gateway');
  return deps.permissionAdmin;
}

export function requireSomeAdmin(deps: AppDeps, p: Principal): void {
  if (!adminOf(deps).isAdmin(p)) throw new PermissionDenied(principalId(p), 'admin', 'any address');
}

const WhoCanQuery = z.object({
  address: AddressPattern,
  verb: verbQuery,
});

export function whoCanQuery(q: Record<string, unknown>): { address: string; verb: Verb } {
  return parseWith(WhoCanQuery, q, 'query');
}

const ruleChange = { version: z.number().meta({ description: 'the version of the rules after the change' }) };

/*
 * A rule's contents are checked by PermissionAdmin (exactly one of group, user or peer; verbs;
 * the admin's scope; the directory), the same rules as on the console; the schema documents them.
 */
export const permissionOperations = {
  list: operation({
    method: 'get', path: '/api/permissions', id: 'listPermissions', tag: 'permissions',
    summary: 'The rules in force (admin somewhere)',
    ok: { status: 200, description: 'the rules and their version', schema: z.looseObject({ version: z.number(), rules: z.array(PermissionRule) }) },
    errors: [403, 404],
  }),
  add: operation({
    method: 'post', path: '/api/permissions', id: 'addPermission', tag: 'permissions',
    summary: 'Add a rule, live (admin on its address)',
    body: z.object({
      group: z.string().optional(), user: z.string().optional(), peer: z.string().optional(),
      address: z.string().meta({ description: 'an address pattern, inside your admin scope', example: 'queue:payments.**' }),
      verbs: z.array(VerbSchema).min(1),
      force: z.boolean().optional().meta({ description: 'add even when the directory (or network map) does not know the name yet' }),
    }).meta({ id: 'NewPermissionRule', description: 'names exactly one of group, user or peer' }),
    ok: { status: 201, description: 'added', schema: z.looseObject({ rule: PermissionRule, ...ruleChange }) },
    errors: [400, 403, 404, 409],
  }),
  remove: operation({
    method: 'delete', path: '/api/permissions/:id', id: 'removePermission', tag: 'permissions',
    summary: 'Remove a console rule (admin on its address)',
    params: z.object({ id: z.string() }),
    ok: { status: 200, description: 'removed', schema: z.looseObject({ removed: PermissionRule, ...ruleChange }) },
    errors: [403, 404, 409],
  }),
  history: operation({
    method: 'get', path: '/api/permissions/history', id: 'permissionHistory', tag: 'permissions',
    summary: 'Changes to the rules, newest first (admin somewhere)',
    query: z.object({ limit: clampedInt(1, 5000, 200) }),
    ok: { status: 200, description: 'changes', schema: z.looseObject({ changes: z.array(z.looseObject({})) }) },
    errors: [403, 404],
  }),
  revert: operation({
    method: 'post', path: '/api/permissions/revert', id: 'revertPermissions', tag: 'permissions',
    summary: 'Put the console rules back as they were at a version (admin on every rule it touches)',
    body: z.object({ version: z.int().min(0).meta({ description: 'a version from the history' }) }).meta({ id: 'RevertPermissions' }),
    ok: { status: 200, description: 'what was added and removed', schema: z.looseObject({ added: z.array(PermissionRule), removed: z.array(PermissionRule), ...ruleChange }) },
    errors: [400, 403, 404],
  }),
  whoCan: operation({
    method: 'get', path: '/api/who-can', id: 'whoCan', tag: 'permissions',
    summary: 'Who may do a verb on an address, and through which rule (admin on the address)',
    query: WhoCanQuery,
    ok: { status: 200, description: 'the grants', schema: z.looseObject({ address: z.string(), verb: VerbSchema, grants: z.array(z.looseObject({ rule: z.string(), verbs: z.array(VerbSchema), source: z.string() })) }) },
    errors: [400, 403, 404],
  }),
};

/** DESIGN §5: the rules as data, changed live by admins within their scope, with history. */
export function permissionRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const audit = (p: Principal, action: string, target: string, detail: string, ip?: string) => deps.audit.record({ action, actor: principalId(p), ...(ip ? { ip } : {}), target, detail });

  r.get(permissionOperations.list.path, async (_req, res) => {
    requireSomeAdmin(deps, principalOf(res));
    res.json(await adminOf(deps).list());
  });
  r.post(permissionOperations.add.path, async (req, res) => {
    const p = principalOf(res);
    const rule = await adminOf(deps).add(p, (req.body ?? {}) as Record<string, unknown>, req.ip);
    await audit(p, 'permission.added', rule.address, `${rule.id}: ${rule.group ? `group ${rule.group}` : rule.user ? `user ${rule.user}` : `peer ${rule.peer}`} may ${rule.verbs.join(', ')} on ${rule.address}`, req.ip);
    res.status(201).json({ rule, version: deps.permissions.version });
  });
  r.delete(permissionOperations.remove.path, async (req, res) => {
    const p = principalOf(res);
    const rule = await adminOf(deps).remove(p, String(req.params.id), req.ip);
    await audit(p, 'permission.removed', rule.address, `${rule.id} removed`, req.ip);
    res.json({ removed: rule, version: deps.permissions.version });
  });
  r.get(permissionOperations.history.path, async (req, res) => {
    requireSomeAdmin(deps, principalOf(res));
    res.json({ changes: await adminOf(deps).history(requestOf.query(permissionOperations.history, req).limit) });
  });
  r.post(permissionOperations.revert.path, async (req, res) => {
    const p = principalOf(res);
    const version = (req.body ?? {}).version as unknown;
    const result = await adminOf(deps).revert(p, version, req.ip);
    await audit(p, 'permission.reverted', '**', `reverted to version ${String(version)}: ${result.added.length} added, ${result.removed.length} removed`, req.ip);
    res.json({ ...result, version: deps.permissions.version });
  });
  r.get(permissionOperations.whoCan.path, async (req, res) => {
    const { address, verb } = requestOf.query(permissionOperations.whoCan, req);
    deps.permissions.require(principalOf(res), 'admin', address);
    res.json({ address, verb, grants: await adminOf(deps).whoCan(verb, address) });
  });
  return r;
}
