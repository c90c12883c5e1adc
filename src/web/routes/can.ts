import { Router as ExpressRouter } from 'express';
import { VERBS, type Verb } from '../../auth/permissions.ts';
import { parsePattern } from '../../core/pattern.ts';
import { NotFound, ValidationError } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** GET /api/can — explains a permission decision: the rule that allowed it, or that none did. */
export function canRoutes({ permissions, directory }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get('/api/can', async (req, res) => {
    const { user, verb, address } = req.query as Record<string, unknown>;
    if (typeof user !== 'string' || !user) throw new ValidationError("query parameter 'user' is required");
    if (typeof verb !== 'string' || !(VERBS as readonly string[]).includes(verb)) throw new ValidationError(`query parameter 'verb' must be one of ${VERBS.join(', ')}`);
    if (typeof address !== 'string') throw new ValidationError("query parameter 'address' is required");
    parsePattern(address);
    permissions.require(principalOf(res), 'admin', address);
    const principal = await directory.lookup(user);
    if (!principal) throw new NotFound(`no user '${user}' in the directory`);
    const d = permissions.check(principal, verb as Verb, address);
    res.json({ allowed: d.allowed, verb: d.verb, address: d.address, user, groups: principal.groups ?? [], ...(d.rule ? { rule: d.rule } : {}), reason: d.reason });
  });
  return r;
}
