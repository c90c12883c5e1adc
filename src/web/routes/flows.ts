import { Router as ExpressRouter, type Request } from 'express';
import { NotFound, PermissionDenied, ValidationError } from '../../core/errors.ts';
import { createMessage, principalId, type Principal } from '../../core/message.ts';
import { FlowRuntime, type FlowView } from '../../flows/runtime.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf, principalOf } from '../middleware/authenticate.ts';
import { csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { withRequestTrace } from '../request-trace.ts';
import { render } from '../views.ts';

const NAME = /^[A-Za-z0-9_-]+$/;

function names(req: Request): { name: string; id?: string } {
  const { name, id } = req.params as { name: string; id?: string };
  if (!NAME.test(name)) throw new ValidationError(`'${name}' is not a flow name (letters, digits, _ and -)`);
  if (id !== undefined && !NAME.test(id)) throw new ValidationError(`'${id}' is not an instance id`);
  return { name, ...(id !== undefined ? { id } : {}) };
}

function access({ permissions, flows }: AppDeps) {
  const runtime = (): FlowRuntime => {
    if (!flows) throw new NotFound('flows are not enabled in this gateway');
    return flows;
  };
  const mayView = (p: Principal, v: FlowView) => v.startedBy === principalId(p) || permissions.check(p, 'browse', `flow:${v.flow}/${v.instanceId}`).allowed;
  /** The instance if the principal may see it; NotFound otherwise, so ids cannot be probed. */
  const viewFor = async (p: Principal, name: string, id: string) => {
    const v = await runtime().view(name, id);
    if (!mayView(p, v)) throw new NotFound(`no instance '${id}' of flow '${name}' for you`);
    return v;
  };
  return { runtime, viewFor };
}

/** Flows: start (start), status (browse, or who started it), retry and cancel (admin; cancel also the starter). */
export function flowRoutes(deps: AppDeps): ExpressRouter {
  const { router, permissions } = deps;
  const { runtime, viewFor } = access(deps);
  const r = ExpressRouter();

  r.post('/api/flows/:name', async (req, res) => {
    const { name } = names(req);
    // No lookup of the flow first: the pipeline decides `start`, so a user without it learns
    // nothing of which flows exist (403 for every name); the flow endpoint answers 404 after.
    const caller = callerOf(req, res);
    const body = (req.body ?? {}) as { input?: unknown; id?: unknown };
    if (typeof body !== 'object' || Array.isArray(body)) throw new ValidationError('expected a JSON object {"input": {...}}');
    const message = withRequestTrace(req, createMessage({ to: `flow:${name}`, body: body.input, id: body.id }, caller.principal));
    const result = (await router.send(message, caller)) as { duplicate: boolean; instanceId?: string };
    res.status(202).json({ instanceId: result.instanceId, duplicate: result.duplicate });
  });

  r.get('/api/flows', async (req, res) => {
    const p = principalOf(res);
    const name = typeof req.query.name === 'string' && req.query.name ? req.query.name : undefined;
    if (name !== undefined && !NAME.test(name)) throw new ValidationError(`'${name}' is not a flow name`);
    const limit = Math.min(Math.max(Number(req.query.limit) || 50, 1), 500);
    const rows = await runtime().list(name, limit * 4);
    const visible = [];
    for (const row of rows) {
      if (visible.length >= limit) break;
      if (permissions.check(p, 'browse', `flow:${row.flow}/${row.instanceId}`).allowed) visible.push(row);
      else {
        const v = await runtime().view(row.flow, row.instanceId);
        if (v.startedBy === principalId(p)) visible.push(row);
      }
    }
    res.json({ instances: visible, flows: [...runtime().definitions.keys()] });
  });

  r.get('/api/flows/:name/:id', async (req, res) => {
    const { name, id } = names(req);
    res.json(await viewFor(principalOf(res), name, id!));
  });

  r.post('/api/flows/:name/:id/retry', async (req, res) => {
    const { name, id } = names(req);
    const p = principalOf(res);
    await viewFor(p, name, id!);
    permissions.require(p, 'admin', `flow:${name}/${id}`);
    res.json(await runtime().retry(name, id!, principalId(p)));
  });

  r.post('/api/flows/:name/:id/cancel', async (req, res) => {
    const { name, id } = names(req);
    const p = principalOf(res);
    const v = await viewFor(p, name, id!);
    if (v.startedBy !== principalId(p) && !permissions.check(p, 'admin', `flow:${name}/${id}`).allowed) throw new PermissionDenied(principalId(p), 'admin', `flow:${name}/${id}`);
    res.json(await runtime().cancel(name, id!, principalId(p)));
  });

  return r;
}

/** The status page of one instance. */
export function flowPageRoutes(deps: AppDeps): ExpressRouter {
  const { viewFor } = access(deps);
  const r = ExpressRouter();
  r.get('/flows/:name/:id', requireLogin(deps.directory, deps.permissions), csrfToken, async (req, res) => {
    const { name, id } = names(req);
    const v = await viewFor(res.locals.principal, name, id!);
    render(res, 'flows/show', { title: `${v.flow} ${v.instanceId}`, view: v, json: (x: unknown) => JSON.stringify(x, null, 2) });
  });
  return r;
}
