import { Router as ExpressRouter } from 'express';
import { createMessage } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** POST /api/messages — the HTTP door's send. 202 only after the destination durably accepted. */
export function messageRoutes({ router, permissions }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.post('/api/messages', async (req, res) => {
    const sender = principalOf(res);
    // The sender is always the authenticated principal; a `sender` in the body is ignored.
    const message = createMessage(req.body ?? {}, sender);
    permissions.require(sender, 'send', message.to);
    const result = await router.send(message);
    res.status(202).json({ id: result.id, duplicate: result.duplicate });
  });
  return r;
}
