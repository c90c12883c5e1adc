import { Router as ExpressRouter } from 'express';
import { ValidationError } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** A user's own API tokens: create (the secret is shown once), list, revoke. */
export function tokenRoutes({ tokens, audit }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.post('/api/tokens', async (req, res) => {
    const p = principalOf(res);
    const created = await tokens.create(p.name, (req.body ?? {}).name);
    await audit.record({ action: 'token.created', actor: `user:${p.name}`, ip: req.ip, target: `token:${created.id}`, detail: `API token '${created.name}' created` });
    res.status(201).json(created);
  });
  r.get('/api/tokens', async (_req, res) => {
    res.json({ tokens: await tokens.list(principalOf(res).name) });
  });
  r.delete('/api/tokens/:id', async (req, res) => {
    const p = principalOf(res);
    const id = String(req.params.id);
    if (!/^[a-f0-9]{16}$/.test(id)) throw new ValidationError('a token id is 16 hex characters (see GET /api/tokens)');
    const revoked = await tokens.revoke(p.name, id);
    await audit.record({ action: 'token.revoked', actor: `user:${p.name}`, ip: req.ip, target: `token:${id}`, detail: `API token '${revoked.name}' revoked` });
    res.json({ revoked });
  });
  return r;
}
