import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { SwitchboardError } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { operation, requestOf } from '../openapi-operation.ts';
import { TokenInfo } from '../openapi-schemas.ts';

const TOKEN_ID = 'a token id is 16 hex characters (see GET /api/tokens)';

export const tokenOperations = {
  create: operation({
    method: 'post', path: '/api/tokens', id: 'createToken', tag: 'tokens',
    summary: 'Create an API token (password login only; the secret is shown once)',
    description: 'An API token cannot create tokens (403 token_cannot_mint), so a leaked one cannot outlive its revocation.',
    // The name's rules are the token store's (shared with the CLI); this documents them.
    body: z.object({ name: z.string().optional().meta({ description: 'what it is for' }) }).meta({ id: 'CreateToken' }),
    ok: { status: 201, description: 'created; `token` is the secret, shown only now', schema: TokenInfo.extend({ token: z.string() }) },
    errors: [400, 403],
  }),
  list: operation({
    method: 'get', path: '/api/tokens', id: 'listTokens', tag: 'tokens',
    summary: 'Your API tokens (never their secrets)',
    ok: { status: 200, description: 'your tokens', schema: z.looseObject({ tokens: z.array(TokenInfo) }) },
    errors: [],
  }),
  revoke: operation({
    method: 'delete', path: '/api/tokens/:id', id: 'revokeToken', tag: 'tokens',
    summary: 'Revoke one of your API tokens',
    params: z.object({ id: z.string().regex(/^[a-f0-9]{16}$/, { error: TOKEN_ID }) }),
    ok: { status: 200, description: 'revoked', schema: z.looseObject({ revoked: TokenInfo }) },
    errors: [400, 404],
  }),
};

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
  r.post(tokenOperations.create.path, async (req, res) => {
    const p = principalOf(res);
    if (byToken(req.headers.authorization)) {
      await audit.record({ action: 'token.refused', actor: `user:${p.name}`, ip: req.ip, target: 'token', detail: 'an API token tried to create a token; only a password login may' });
      throw new SwitchboardError('token_cannot_mint', 'an API token cannot create tokens: sign in with your password (HTTP Basic) to create one, so a leaked token cannot outlive its revocation', 403);
    }
    const created = await tokens.create(p.name, (req.body ?? {}).name);
    await audit.record({ action: 'token.created', actor: `user:${p.name}`, ip: req.ip, target: `token:${created.id}`, detail: `API token '${created.name}' created` });
    res.status(201).json(created);
  });
  r.get(tokenOperations.list.path, async (_req, res) => {
    res.json({ tokens: await tokens.list(principalOf(res).name) });
  });
  r.delete(tokenOperations.revoke.path, async (req, res) => {
    const p = principalOf(res);
    const { id } = requestOf.params(tokenOperations.revoke, req);
    const revoked = await tokens.revoke(p.name, id);
    await audit.record({ action: 'token.revoked', actor: `user:${p.name}`, ip: req.ip, target: `token:${id}`, detail: `API token '${revoked.name}' revoked` });
    res.json({ revoked });
  });
  return r;
}
