import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { NotFound } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { operation, requestOf } from '../openapi-operation.ts';
import { Task } from '../openapi-schemas.ts';
import { inRequestSpan } from '../request-span.ts';

const TASK_ID = 'a task id is letters, digits, _ and - (see GET /api/tasks)';
const TaskParam = z.object({ id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { error: TASK_ID }) });
const TASK_ERRORS = [400, 403, 404, 409];
const task = (description: string) => ({ status: 200, description, schema: Task });

/*
 * A decision's and a delegation's contents are checked by the people application against the
 * task (its actions and fields, the delegate's rights), the same rules as in the web inbox; these
 * schemas document them.
 */
export const taskOperations = {
  list: operation({
    method: 'get', path: '/api/tasks', id: 'listTasks', tag: 'tasks',
    summary: 'Your open tasks: yours and those of your groups',
    ok: { status: 200, description: 'tasks', schema: z.looseObject({ tasks: z.array(Task) }) },
    errors: [404],
  }),
  get: operation({ method: 'get', path: '/api/tasks/:id', id: 'getTask', tag: 'tasks', summary: 'One task', params: TaskParam, ok: task('the task'), errors: [400, 404] }),
  claim: operation({ method: 'post', path: '/api/tasks/:id/claim', id: 'claimTask', tag: 'tasks', summary: 'Claim a group task', description: '409 when someone else has it, naming who.', params: TaskParam, ok: task('claimed'), errors: TASK_ERRORS }),
  release: operation({ method: 'post', path: '/api/tasks/:id/release', id: 'releaseTask', tag: 'tasks', summary: 'Give a claimed task back to its group', params: TaskParam, ok: task('released'), errors: TASK_ERRORS }),
  delegate: operation({
    method: 'post', path: '/api/tasks/:id/delegate', id: 'delegateTask', tag: 'tasks', summary: 'Hand a task to another person',
    params: TaskParam,
    body: z.object({ to: z.string().meta({ description: 'user name (or person:<name>) of someone who may act on it' }) }).meta({ id: 'DelegateTask' }),
    ok: task('delegated'), errors: TASK_ERRORS,
  }),
  decide: operation({
    method: 'post', path: '/api/tasks/:id/decision', id: 'decideTask', tag: 'tasks',
    summary: 'Decide a task: one of its actions, with its fields',
    description: 'A task already decided, or claimed by someone else, is 409 naming who has it; four-eyes refusals are 403.',
    params: TaskParam,
    body: z.object({
      action: z.string().meta({ description: "one of the task's actions" }),
      fields: z.record(z.string(), z.unknown()).optional().meta({ description: "values for the task's fields" }),
      comment: z.string().max(10_000).optional(),
    }).meta({ id: 'Decision' }),
    ok: task('the task after the decision'), errors: TASK_ERRORS,
  }),
};

/** The API side of people's tasks; the web inbox uses the same Inbox and rules. */
export function taskRoutes({ inbox, tracing }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const op = taskOperations;
  const people = () => {
    if (!inbox) throw new NotFound('tasks are not enabled in this gateway');
    return inbox;
  };
  r.get(op.list.path, async (_req, res) => {
    res.json({ tasks: await people().list(principalOf(res)) });
  });
  r.get(op.get.path, async (req, res) => {
    res.json(await people().get(principalOf(res), requestOf.params(op.get, req).id));
  });
  r.post(op.claim.path, async (req, res) => {
    res.json(await people().claim(principalOf(res), requestOf.params(op.claim, req).id, req.ip));
  });
  r.post(op.release.path, async (req, res) => {
    res.json(await people().release(principalOf(res), requestOf.params(op.release, req).id, req.ip));
  });
  r.post(op.delegate.path, async (req, res) => {
    res.json(await people().delegate(principalOf(res), requestOf.params(op.delegate, req).id, (req.body ?? {}).to, req.ip));
  });
  r.post(op.decide.path, async (req, res) => {
    const p = principalOf(res);
    res.json(await inRequestSpan(tracing, req, '/api/tasks/{id}/decision', p, (span) => people().decide(p, requestOf.params(op.decide, req).id, (req.body ?? {}) as Record<string, unknown>, req.ip, span)));
  });
  return r;
}
