import { Router as ExpressRouter, type Request, type Response } from 'express';
import { VERBS, type PermissionRule } from '../../auth/permissions.ts';
import { SwitchboardError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import { matchesPattern, parsePattern, patternWithin } from '../../core/pattern.ts';
import type { AppDeps } from '../deps.ts';
import { csrfProtect, csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { render } from '../views.ts';
import { adminOf, whoCanQuery } from './permissions.ts';

const selectorOf = (r: PermissionRule) => (r.group !== undefined ? `Group ${r.group}` : r.user !== undefined ? `User ${r.user}` : `Peer ${r.peer}`);

/** /admin/permissions — the console where admins map groups to permissions, live. */
export function permissionPageRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const gate = (req: Request, res: Response): Principal | undefined => {
    const p = res.locals.principal as Principal;
    if (!deps.permissionAdmin || !deps.permissionAdmin.isAdmin(p)) {
      void deps.audit.record({ action: 'access.denied', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: '/admin/permissions', detail: 'no admin right' });
      render(res, 'error', { title: 'Not allowed', heading: 'Not allowed', message: 'Managing permissions needs an admin permission, and no rule gives you one.' }, 403);
      return undefined;
    }
    return p;
  };

  const page = async (req: Request, res: Response, extra: { error?: string; status?: number; form?: Record<string, unknown>; done?: string } = {}) => {
    const p = res.locals.principal as Principal;
    const scopes = deps.permissions.adminScopes(p);
    const bySelector: Record<string, (PermissionRule & { manageable: boolean })[]> = {};
    for (const rule of deps.permissions.rules) {
      const manageable = rule.source === 'console' && scopes.some((s) => patternWithin(parsePattern(rule.address), s));
      (bySelector[selectorOf(rule)] ??= []).push({ ...rule, manageable });
    }
    const q = req.query as Record<string, string | undefined>;
    let whoCan;
    let whoCanError: string | undefined;
    if (q.wcAddress && q.wcVerb) {
      try {
        const { address, verb } = whoCanQuery({ address: q.wcAddress, verb: q.wcVerb });
        deps.permissions.require(p, 'admin', address);
        whoCan = { address, verb, grants: await adminOf(deps).whoCan(verb, address) };
      } catch (err) {
        if (!(err instanceof SwitchboardError)) throw err;
        whoCanError = err.message;
      }
    }
    render(res, 'admin/permissions', {
      title: 'Permissions',
      bySelector,
      version: deps.permissions.version,
      history: (await adminOf(deps).history(50)),
      scopes: scopes.map((s) => s.raw),
      verbs: VERBS,
      form: extra.form ?? {},
      error: extra.error,
      done: extra.done ?? (typeof q.done === 'string' ? q.done.slice(0, 200) : undefined),
      query: q,
      whoCan,
      whoCanError,
    }, extra.status ?? 200);
  };

  r.get('/admin/permissions', login, csrfToken, async (req, res) => {
    if (gate(req, res)) await page(req, res);
  });

  // As-you-type helpers for the add form.
  r.get('/admin/permissions/groups', login, async (req, res) => {
    if (!deps.permissionAdmin?.isAdmin(res.locals.principal as Principal)) return void res.status(403).json({ error: { code: 'forbidden', message: 'admin only' } });
    const q = typeof req.query.q === 'string' ? req.query.q.slice(0, 100) : '';
    res.json({ groups: await deps.directory.groups(q, 20) });
  });
  r.get('/admin/permissions/check', login, async (req, res) => {
    if (!deps.permissionAdmin?.isAdmin(res.locals.principal as Principal)) return void res.status(403).json({ error: { code: 'forbidden', message: 'admin only' } });
    const address = typeof req.query.address === 'string' ? req.query.address : '';
    try {
      const pattern = parsePattern(address);
      const known = (await deps.knownAddresses?.()) ?? [];
      res.json({ ok: true, matches: known.filter((a) => matchesPattern(pattern, a)).slice(0, 50) });
    } catch (err) {
      res.json({ ok: false, error: (err as Error).message });
    }
  });

  r.post('/admin/permissions/add', login, csrfToken, csrfProtect, async (req, res) => {
    const p = gate(req, res);
    if (!p) return;
    const b = req.body as Record<string, unknown>;
    const kind = b.kind === 'user' || b.kind === 'peer' ? b.kind : 'group';
    const verbs = Array.isArray(b.verbs) ? b.verbs : typeof b.verbs === 'string' ? [b.verbs] : [];
    try {
      const rule = await adminOf(deps).add(p, { [kind]: b.who, address: b.address, verbs, force: b.force === 'on' }, req.ip);
      await deps.audit.record({ action: 'permission.added', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: rule.address, detail: `${rule.id} added from the console` });
      res.redirect(303, `/admin/permissions?done=${encodeURIComponent(`added ${rule.id}`)}`);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      await page(req, res, { error: err.message, status: err.status, form: { kind, who: b.who, address: b.address, verbs } });
    }
  });

  r.get('/admin/permissions/:id/remove', login, csrfToken, async (req, res) => {
    if (!gate(req, res)) return;
    const rule = deps.permissions.rules.find((x) => x.id === req.params.id);
    if (!rule) return render(res, 'error', { title: 'Not found', heading: 'Not found', message: `There is no rule '${req.params.id}'.`, back: '/admin/permissions', backLabel: 'Back to permissions' }, 404);
    render(res, 'admin/remove-rule', { title: 'Remove a rule', rule, selector: selectorOf(rule) });
  });
  r.post('/admin/permissions/:id/remove', login, csrfToken, csrfProtect, async (req, res) => {
    const p = gate(req, res);
    if (!p) return;
    try {
      const rule = await adminOf(deps).remove(p, String(req.params.id), req.ip);
      await deps.audit.record({ action: 'permission.removed', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: rule.address, detail: `${rule.id} removed from the console` });
      res.redirect(303, `/admin/permissions?done=${encodeURIComponent(`removed ${rule.id}`)}`);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      await page(req, res, { error: err.message, status: err.status });
    }
  });
  r.post('/admin/permissions/revert', login, csrfToken, csrfProtect, async (req, res) => {
    const p = gate(req, res);
    if (!p) return;
    try {
      const version = Number((req.body as Record<string, unknown>).version);
      const result = await adminOf(deps).revert(p, version, req.ip);
      await deps.audit.record({ action: 'permission.reverted', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: '**', detail: `reverted to version ${version}` });
      res.redirect(303, `/admin/permissions?done=${encodeURIComponent(`reverted to version ${version}: ${result.added.length} added, ${result.removed.length} removed`)}`);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      await page(req, res, { error: err.message, status: err.status });
    }
  });
  return r;
}
