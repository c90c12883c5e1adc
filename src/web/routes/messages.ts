import { Router as ExpressRouter } from 'express';
import { createMessage } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf } from '../middleware/authenticate.ts';
import { withRequestTrace } from '../request-trace.ts';

/** POST /api/messages — the HTTP door's send. 202 only after the destination durably accepted. */
export function messageRoutes({ router }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.post('/api/messages', async (req, res) => {
    const caller = callerOf(req, res);
    // The sender is always the authenticated principal; a `sender` in the body is ignored. Whether
    // it may send there (and ask for replies where it asks) is the router's pipeline to decide.
    const message = withRequestTrace(req, createMessage(req.body ?? {}, caller.principal));
    const result = await router.send(message, caller);
    res.status(202).json({ id: result.id, duplicate: result.duplicate });
  });
  return r;
}
