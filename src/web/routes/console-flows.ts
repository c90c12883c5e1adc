import { Router as ExpressRouter, type Request } from 'express';
import { NotFound, PermissionDenied, SwitchboardError, ValidationError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import type { FlowRow, FlowRuntime, FlowSearch, FlowView } from '../../flows/runtime.ts';
import type { FlowStatus } from '../../flows/store.ts';
import type { AppDeps } from '../deps.ts';
import { ConsoleAccess, pagePrincipal, textParam } from '../console/access.ts';
import { serveLive } from '../console/live.ts';
import { csrfProtect, csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { liveStreams } from '../sessions.ts';
import { render } from '../views.ts';

const NAME = /^[A-Za-z0-9_-]+$/;
const STATUSES: FlowStatus[] = ['running', 'waiting', 'completed', 'failed', 'cancelled'];

/** A date field of the search form (yyyy-mm-dd, or a full ISO time) as epoch ms; `end` takes the day's last ms. */
function dateParam(v: string | undefined, what: string, end = false): number | undefined {
  if (v === undefined) return undefined;
  const day = /^\d{4}-\d{2}-\d{2}$/.test(v);
  const t = Date.parse(day ? `${v}T00:00:00Z` : v);
  if (Number.isNaN(t)) throw new ValidationError(`'${what}' must be a date like 2026-12-01, got '${v}'`);
  return day && end ? t + 86_399_999 : t;
}

/** The search form as a FlowSearch; a bad field is a ValidationError naming it. */
export function flowSearchOf(req: Request): { search: Omit<FlowSearch, 'visible'>; form: Record<string, string> } {
  const form: Record<string, string> = {};
  for (const k of ['flow', 'status', 'startedBy', 'from', 'to', 'tag']) {
    const v = textParam(req, k);
    if (v !== undefined) form[k] = v;
  }
  if (form.flow !== undefined && !NAME.test(form.flow)) throw new ValidationError(`'${form.flow}' is not a flow name (letters, digits, _ and -)`);
  if (form.status !== undefined && !STATUSES.includes(form.status as FlowStatus)) throw new ValidationError(`status must be one of ${STATUSES.join(', ')}`);
  let tag: { name: string; value: string } | undefined;
  if (form.tag !== undefined) {
    const eq = form.tag.indexOf('=');
    if (eq <= 0 || eq === form.tag.length - 1) throw new ValidationError(`a tag is searched as name=value (e.g. ref=INV-1), got '${form.tag}'`);
    tag = { name: form.tag.slice(0, eq).trim(), value: form.tag.slice(eq + 1).trim() };
  }
  // A bare name is a user: the instance records its starter as user:<name>.
  const startedBy = form.startedBy === undefined ? undefined : form.startedBy.includes(':') ? form.startedBy : `user:${form.startedBy}`;
  const from = dateParam(form.from, 'from');
  const to = dateParam(form.to, 'to', true);
  return {
    form,
    search: {
      limit: 50,
      ...(form.flow ? { flow: form.flow } : {}), ...(form.status ? { status: form.status as FlowStatus } : {}), ...(startedBy ? { startedBy } : {}),
      ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}), ...(tag ? { tag } : {}),
    },
  };
}

/** Rows a live flows page may follow: the most a search page lists. */
export const LIVE_ROWS = 50;

/** The `i=flow/id` parameters of a live flows stream, validated. */
export function liveRefs(req: Request): { flow: string; instanceId: string }[] {
  const raw = req.query.i === undefined ? [] : Array.isArray(req.query.i) ? req.query.i : [req.query.i];
  if (raw.length > LIVE_ROWS) throw new ValidationError(`a live flows page follows at most ${LIVE_ROWS} instances (i=flow/id), got ${raw.length}`);
  return raw.map((v) => {
    const [flow, instanceId, ...rest] = typeof v === 'string' ? v.split('/') : [];
    if (!flow || !instanceId || rest.length > 0 || !NAME.test(flow) || !NAME.test(instanceId)) throw new ValidationError(`each i is an instance as flow/id (letters, digits, _ and -), got '${String(v).slice(0, 100)}'`);
    return { flow, instanceId };
  });
}

/**
 * The console's flows: instances searched by flow, status, starter, dates and business key
 * (`ctx.tag`), an instance's journal as a timeline, retry and cancel after a confirmation. The
 * same rights as the API: seeing needs browse or admin on `flow:<name>/<id>` (or having started
 * it), retry needs admin, cancel admin or being the starter.
 */
export function consoleFlowRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const access = new ConsoleAccess(deps.permissions);
  const runtime = (): FlowRuntime => {
    if (!deps.flows) throw new NotFound('flows are not enabled in this gateway');
    return deps.flows;
  };
  const address = (v: { flow: string; instanceId: string }) => `flow:${v.flow}/${v.instanceId}`;
  const mayView = (p: Principal, v: FlowRow | FlowView) => v.startedBy === principalId(p) || access.mayLook(p, address(v));
  const viewFor = async (p: Principal, name: string, id: string) => {
    if (!NAME.test(name) || !NAME.test(id)) throw new ValidationError(`'${name}/${id}' is not a flow instance (letters, digits, _ and -)`);
    const v = await runtime().view(name, id);
    // NotFound, not 403: ids cannot be probed (as in the API).
    if (!mayView(p, v)) throw new NotFound(`no instance '${id}' of flow '${name}' for you`);
    return v;
  };
  const mayRetry = (p: Principal, v: FlowView) => v.status === 'failed' && deps.permissions.check(p, 'admin', address(v)).allowed;
  const mayCancel = (p: Principal, v: FlowView) => !['completed', 'failed', 'cancelled'].includes(v.status) && (v.startedBy === principalId(p) || deps.permissions.check(p, 'admin', address(v)).allowed);

  r.get('/admin/flows', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    let result: { instances: FlowRow[]; more: boolean } = { instances: [], more: false };
    let error: string | undefined;
    let form: Record<string, string> = {};
    try {
      const q = flowSearchOf(req);
      form = q.form;
      result = await runtime().search({ ...q.search, visible: (row) => mayView(p, row) });
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      error = err.message;
      form = Object.fromEntries(Object.entries(req.query).filter(([, v]) => typeof v === 'string').map(([k, v]) => [k, String(v).slice(0, 200)]));
    }
    render(res, 'admin/flows', { title: 'Flows', section: 'flows', form, statuses: STATUSES, flows: [...runtime().definitions.keys()].sort(), instances: result.instances, more: result.more, error, done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined }, error ? 400 : 200);
  });

  // Live: the status of the instances a search page lists (`?i=flow/id`, as many as a page shows),
  // read by id every few seconds; one the user may not see is left out, as in the search.
  const live = { streams: liveStreams(deps.session), log: deps.log };
  r.get('/admin/flows/live', login, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    const refs = liveRefs(req);
    const flows = runtime();
    serveLive(live, req, res, p, 'instances', async () => (await flows.rows(refs)).filter((row) => mayView(p, row)).map(({ flow, instanceId, status, updatedAt }) => ({ flow, instanceId, status, updatedAt: updatedAt.replace('T', ' ').slice(0, 19) })));
  });

  r.get('/admin/flows/:name/:id', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    const v = await viewFor(p, String(req.params.name), String(req.params.id));
    render(res, 'admin/flow', { title: `${v.flow} ${v.instanceId}`, section: 'flows', view: v, json: (x: unknown) => JSON.stringify(x, null, 2), mayRetry: mayRetry(p, v), mayCancel: mayCancel(p, v), done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined });
  });

  const actions = {
    retry: { label: 'Retry', explain: 'It runs again from the step that failed; the steps before it replay from the journal.', allowed: mayRetry, verb: 'admin' },
    cancel: { label: 'Cancel', explain: 'It stops for good: it takes no more messages, and what it waits for is dropped.', allowed: mayCancel, verb: 'admin' },
  } as const;
  for (const [name, act] of Object.entries(actions)) {
    const checked = async (p: Principal, flow: string, id: string) => {
      const v = await viewFor(p, flow, id);
      if (!act.allowed(p, v)) {
        if (name === 'retry' && v.status !== 'failed') throw new SwitchboardError('conflict', `instance '${id}' is ${v.status}; only a failed instance can be retried`, 409);
        if (name === 'cancel' && ['completed', 'failed', 'cancelled'].includes(v.status)) throw new SwitchboardError('conflict', `instance '${id}' has already ${v.status}`, 409);
        throw new PermissionDenied(principalId(p), act.verb, address(v));
      }
      return v;
    };
    r.get(`/admin/flows/:name/:id/${name}`, login, csrfToken, async (req, res) => {
      const v = await checked(pagePrincipal(res), String(req.params.name), String(req.params.id));
      render(res, 'admin/confirm', {
        title: `${act.label} ${v.flow} ${v.instanceId}?`, section: 'flows', heading: `${act.label} instance ${v.instanceId} of ${v.flow}?`,
        lines: [`It is ${v.status}, started by ${v.startedBy} at ${v.createdAt}.`, act.explain],
        action: req.originalUrl.split('?')[0], button: act.label, cancel: `/admin/flows/${encodeURIComponent(v.flow)}/${encodeURIComponent(v.instanceId)}`,
      });
    });
    r.post(`/admin/flows/:name/:id/${name}`, login, csrfToken, csrfProtect, async (req, res) => {
      const p = pagePrincipal(res);
      const v = await checked(p, String(req.params.name), String(req.params.id));
      if (name === 'retry') await runtime().retry(v.flow, v.instanceId, principalId(p));
      else await runtime().cancel(v.flow, v.instanceId, principalId(p));
      await deps.audit.record({ action: `flow.${name === 'retry' ? 'retried' : 'cancelled'}`, actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: address(v), detail: `${name} from the console` });
      res.redirect(303, `/admin/flows/${encodeURIComponent(v.flow)}/${encodeURIComponent(v.instanceId)}?done=${encodeURIComponent(name === 'retry' ? 'retried' : 'cancelled')}`);
    });
  }
  return r;
}
