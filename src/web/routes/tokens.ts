import { Router as ExpressRouter } from 'express';
import { SwitchboardError, ValidationError } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** The request authenticated with an API token (Bearer), not with the owner's password. */
const byToken = (authorization: string | undefined) => /^bearer\s/i.test(authorization ?? '');

/**
 * A user's own API tokens: create (the secret is shown once), list, revoke.
 *
 * Only a password login may create a token; a token may list and revoke its owner's tokens but
 * never mint one. Otherwise a leaked token could mint a successor before it is revoked and
 * outlive its revocation through it.
 */
export function tokenRoutes({ tokens, audit }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.post('/api/tokens', async (req, res) => {
    const p = principalOf(res);
    if (byToken(req.headers.authorization)) {
      await audit.record({ action: 'token.refused', actor: `user:${p.name}`, ip: req.ip, target: 'token', detail: 'an API token tried to create a token; only a password login may' });
      throw new SwitchboardError('token_cannot_mint', 'an API token cannot create tokens: sign in with your password (HTTP Basic) to create one, so a leaked token cannot outlive its revocation', 403);
    }
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
