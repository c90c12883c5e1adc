import { Router as ExpressRouter, type Request } from 'express';
import * as z from 'zod';
import { NotFound, PermissionDenied } from '../../core/errors.ts';
import { createMessage, principalId, type Principal } from '../../core/message.ts';
import { FlowRuntime, type FlowView } from '../../flows/runtime.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf, principalOf } from '../middleware/authenticate.ts';
import { csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { clampedInt, operation, parseWith, requestOf } from '../openapi-operation.ts';
import { FlowInstance, FlowStatus } from '../openapi-schemas.ts';
import { withRequestTrace } from '../request-trace.ts';
import { render } from '../views.ts';
import { MessageId } from './messages.ts';

const NAME = /^[A-Za-z0-9_-]+$/;
const FlowName = z.string().regex(NAME, { error: (iss) => `'${String(iss.input)}' is not a flow name (letters, digits, _ and -)` });
const NameParam = z.object({ name: FlowName });
const InstanceParams = NameParam.extend({ id: z.string().regex(NAME, { error: (iss) => `'${String(iss.input)}' is not an instance id` }) });

function names(req: Request): { name: string; id: string } {
  return parseWith(InstanceParams, req.params, 'path');
}

export const flowOperations = {
  start: operation({
    method: 'post', path: '/api/flows/:name', id: 'startFlow', tag: 'flows',
    summary: 'Start an instance of a flow (start on flow:<name>)',
    description: 'Accepted once the start is durable; the same `id` again starts nothing new.',
    params: NameParam,
    body: z.object({ input: z.unknown().optional().meta({ description: "the flow's input" }), id: MessageId }, { error: 'expected a JSON object {"input": {...}}' }).meta({ id: 'StartFlow' }),
    ok: { status: 202, description: 'started (or, with duplicate, started before by this id)', schema: z.looseObject({ instanceId: z.string().optional(), duplicate: z.boolean() }) },
    errors: [400, 403, 404],
  }),
  list: operation({
    method: 'get', path: '/api/flows', id: 'listFlows', tag: 'flows',
    summary: 'Recent instances you may see, and the flows this gateway has',
    query: z.object({ name: FlowName.optional(), limit: clampedInt(1, 500, 50) }),
    ok: {
      status: 200, description: 'instances, newest first',
      schema: z.looseObject({ instances: z.array(z.looseObject({ instanceId: z.string(), flow: z.string(), status: FlowStatus, createdAt: z.string(), updatedAt: z.string() })), flows: z.array(z.string()) }),
    },
    errors: [400, 404],
  }),
  get: operation({
    method: 'get', path: '/api/flows/:name/:id', id: 'getFlowInstance', tag: 'flows',
    summary: 'One instance with its steps (browse on it, or who started it)',
    params: InstanceParams,
    ok: { status: 200, description: 'the instance', schema: FlowInstance },
    errors: [400, 404],
  }),
  retry: operation({
    method: 'post', path: '/api/flows/:name/:id/retry', id: 'retryFlowInstance', tag: 'flows',
    summary: 'Run a failed instance again from its journal (admin on it)',
    params: InstanceParams,
    ok: { status: 200, description: 'the instance', schema: FlowInstance },
    errors: [400, 403, 404, 409],
  }),
  cancel: operation({
    method: 'post', path: '/api/flows/:name/:id/cancel', id: 'cancelFlowInstance', tag: 'flows',
    summary: 'Cancel an instance (admin on it, or who started it)',
    params: InstanceParams,
    ok: { status: 200, description: 'the instance', schema: FlowInstance },
    errors: [400, 403, 404, 409],
  }),
};

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

  r.post(flowOperations.start.path, async (req, res) => {
    const { name } = requestOf.params(flowOperations.start, req);
    // No lookup of the flow first: the pipeline decides `start`, so a user without it learns
    // nothing of which flows exist (403 for every name); the flow endpoint answers 404 after.
    const caller = callerOf(req, res);
    const body = requestOf.body(flowOperations.start, req);
    const message = withRequestTrace(req, createMessage({ to: `flow:${name}`, body: body.input, id: body.id }, caller.principal));
    const result = (await router.send(message, caller)) as { duplicate: boolean; instanceId?: string };
    res.status(202).json({ instanceId: result.instanceId, duplicate: result.duplicate });
  });

  r.get(flowOperations.list.path, async (req, res) => {
    const p = principalOf(res);
    const query = requestOf.query(flowOperations.list, req);
    const name = query.name || undefined;
    const limit = query.limit;
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

  r.get(flowOperations.get.path, async (req, res) => {
    const { name, id } = names(req);
    res.json(await viewFor(principalOf(res), name, id));
  });

  r.post(flowOperations.retry.path, async (req, res) => {
    const { name, id } = names(req);
    const p = principalOf(res);
    await viewFor(p, name, id);
    permissions.require(p, 'admin', `flow:${name}/${id}`);
    res.json(await runtime().retry(name, id, principalId(p)));
  });

  r.post(flowOperations.cancel.path, async (req, res) => {
    const { name, id } = names(req);
    const p = principalOf(res);
    const v = await viewFor(p, name, id);
    if (v.startedBy !== principalId(p) && !permissions.check(p, 'admin', `flow:${name}/${id}`).allowed) throw new PermissionDenied(principalId(p), 'admin', `flow:${name}/${id}`);
    res.json(await runtime().cancel(name, id, principalId(p)));
  });

  return r;
}

/** The status page of one instance. */
export function flowPageRoutes(deps: AppDeps): ExpressRouter {
  const { viewFor } = access(deps);
  const r = ExpressRouter();
  r.get('/flows/:name/:id', requireLogin(deps.directory, deps.permissions), csrfToken, async (req, res) => {
    const { name, id } = names(req);
    const v = await viewFor(res.locals.principal, name, id);
    render(res, 'flows/show', { title: `${v.flow} ${v.instanceId}`, view: v, json: (x: unknown) => JSON.stringify(x, null, 2) });
  });
  return r;
}
