import { Router as ExpressRouter } from 'express';
import { NotFound, ValidationError } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** The API side of people's tasks; the web inbox uses the same Inbox and rules. */
export function taskRoutes({ inbox }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const people = () => {
    if (!inbox) throw new NotFound('tasks are not enabled in this gateway');
    return inbox;
  };
  const taskId = (id: unknown) => {
    if (typeof id !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new ValidationError('a task id is letters, digits, _ and - (see GET /api/tasks)');
    return id;
  };
  r.get('/api/tasks', async (_req, res) => {
    res.json({ tasks: await people().list(principalOf(res)) });
  });
  r.get('/api/tasks/:id', async (req, res) => {
    res.json(await people().get(principalOf(res), taskId(req.params.id)));
  });
  r.post('/api/tasks/:id/claim', async (req, res) => {
    res.json(await people().claim(principalOf(res), taskId(req.params.id), req.ip));
  });
  r.post('/api/tasks/:id/release', async (req, res) => {
    res.json(await people().release(principalOf(res), taskId(req.params.id), req.ip));
  });
  r.post('/api/tasks/:id/delegate', async (req, res) => {
    res.json(await people().delegate(principalOf(res), taskId(req.params.id), (req.body ?? {}).to, req.ip));
  });
  r.post('/api/tasks/:id/decision', async (req, res) => {
    res.json(await people().decide(principalOf(res), taskId(req.params.id), (req.body ?? {}) as Record<string, unknown>, req.ip));
  });
  return r;
}
