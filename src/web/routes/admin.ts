import { Router as ExpressRouter } from 'express';
import { VERBS, type PermissionRule, type Verb } from '../../auth/permissions.ts';
import { DependencyUnavailable, SwitchboardError } from '../../core/errors.ts';
import { parsePattern } from '../../core/pattern.ts';
import type { AppDeps } from '../deps.ts';
import { csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { render } from '../views.ts';

/** /admin — the permission mapping and "test a user" (explain), for principals with admin rights. */
export function adminRoutes({ directory, permissions, audit, router }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get('/admin', requireLogin(directory, permissions), csrfToken, async (req, res) => {
    if (!res.locals.isAdmin) {
      await audit.record({ action: 'access.denied', actor: `user:${res.locals.principal.name}`, ip: req.ip, target: '/admin', detail: 'admin pages denied: no admin right' });
      // Someone who may browse but administers nothing is shown the console pages they may use.
      const browses = permissions.rulesFor(res.locals.principal).some((r) => r.verbs.includes('browse'));
      return render(res, 'error', { title: 'Not allowed', heading: 'Not allowed', message: `The admin overview needs an admin permission, and no rule gives you one.${browses ? ' You may browse queues and flows in the console.' : ''}`, ...(browses ? { back: '/admin/queues', backLabel: 'Open the console’s queues' } : {}) }, 403);
    }
    const me = res.locals.principal;
    const bySelector: Record<string, PermissionRule[]> = {};
    for (const rule of permissions.rules) {
      const key = rule.group !== undefined ? `Group ${rule.group}` : rule.user !== undefined ? `User ${rule.user}` : `Peer ${rule.peer}`;
      (bySelector[key] ??= []).push(rule);
    }
    const q = req.query as Record<string, string | undefined>;
    let decision;
    let decisionGroups: string[] = [];
    let explainError: string | undefined;
    if (q.user && q.verb && q.address) {
      try {
        if (!(VERBS as readonly string[]).includes(q.verb)) throw new SwitchboardError('bad_request', `unknown verb '${q.verb}'`);
        parsePattern(q.address);
        if (!permissions.check(me, 'admin', q.address).allowed) throw new SwitchboardError('forbidden', `you have no admin right on ${q.address}`, 403);
        const target = await directory.lookup(q.user);
        if (!target) throw new SwitchboardError('not_found', `no user '${q.user}' in the directory`, 404);
        decision = permissions.check(target, q.verb as Verb, q.address);
        decisionGroups = (target.groups ?? []).filter((g) => !g.includes('='));
      } catch (err) {
        if (err instanceof DependencyUnavailable || err instanceof SwitchboardError) explainError = err.message;
        else throw err;
      }
    }
    const health = await router.health();
    const connections = Object.entries(health).filter(([scheme]) => ['mq', 'peer', 'email', 'webhook', 'queue', 'flow'].includes(scheme)).map(([scheme, h]) => ({ scheme, ok: h.ok, detail: h.detail ?? '' }));
    render(res, 'admin/index', { title: 'Administration', section: 'home', bySelector, verbs: VERBS, query: q, decision, decisionGroups, explainError, connections });
  });
  return r;
}
