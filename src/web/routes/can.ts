import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { VERBS, type Verb } from '../../auth/permissions.ts';
import { NotFound } from '../../core/errors.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { operation, requestOf } from '../openapi-operation.ts';
import { AddressPattern, PermissionRule, Verb as VerbSchema } from '../openapi-schemas.ts';

/** `verb`, as the permission queries take it. */
export const verbQuery = z.enum(VERBS, { error: `query parameter 'verb' must be one of ${VERBS.join(', ')}` });

export const canOperations = {
  can: operation({
    method: 'get', path: '/api/can', id: 'explainPermission', tag: 'permissions',
    summary: 'May this user do this verb on this address? With the rule that decided (admin on the address)',
    query: z.object({
      user: z.string({ error: "query parameter 'user' is required" }).min(1, { error: "query parameter 'user' is required" }),
      verb: verbQuery,
      address: AddressPattern,
    }),
    ok: {
      status: 200, description: 'the decision',
      schema: z.looseObject({ allowed: z.boolean(), verb: VerbSchema, address: z.string(), user: z.string(), groups: z.array(z.string()), rule: PermissionRule.optional().meta({ description: 'the rule that allowed it' }), reason: z.string() }),
    },
    errors: [400, 403, 404],
  }),
};

/** GET /api/can — explains a permission decision: the rule that allowed it, or that none did. */
export function canRoutes({ permissions, directory }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  r.get(canOperations.can.path, async (req, res) => {
    const { user, verb, address } = requestOf.query(canOperations.can, req);
    permissions.require(principalOf(res), 'admin', address);
    const principal = await directory.lookup(user);
    if (!principal) throw new NotFound(`no user '${user}' in the directory`);
    const d = permissions.check(principal, verb as Verb, address);
    res.json({ allowed: d.allowed, verb: d.verb, address: d.address, user, groups: principal.groups ?? [], ...(d.rule ? { rule: d.rule } : {}), reason: d.reason });
  });
  return r;
}
