import type { NextFunction, Request, Response } from 'express';
import type { Authenticator } from '../../auth/authenticator.ts';
import { Unauthenticated } from '../../core/errors.ts';
import type { Principal } from '../../core/message.ts';
import type { Caller } from '../../core/pipeline.ts';

/** API door: HTTP Basic against the directory, or `Authorization: Bearer <API token>`. */
export function authenticate(auth: Authenticator) {
  return async (req: Request, res: Response, next: NextFunction) => {
    try {
      const header = req.headers.authorization;
      if (!header) throw new Unauthenticated();
      const space = header.indexOf(' ');
      const scheme = header.slice(0, space).toLowerCase();
      const value = header.slice(space + 1).trim();
      const ctx = { ip: req.ip, door: 'http-api' };
      if (scheme === 'basic' && value) {
        const decoded = Buffer.from(value, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        res.locals.principal = await auth.password(colon > 0 ? decoded.slice(0, colon) : '', colon > 0 ? decoded.slice(colon + 1) : '', ctx);
      } else if (scheme === 'bearer' && value) {
        res.locals.principal = await auth.token(value, ctx);
      } else {
        throw new Unauthenticated('unsupported Authorization header: use HTTP Basic with a directory user, or Bearer with an API token');
      }
      next();
    } catch (err) {
      next(err);
    }
  };
}

export function principalOf(res: Response): Principal {
  const p = res.locals.principal as Principal | undefined;
  if (!p) throw new Unauthenticated();
  return p;
}

/** The authenticated principal of this request as the router's pipeline sees it. */
export function callerOf(req: Request, res: Response): Caller {
  return { principal: principalOf(res), door: 'http', ...(req.ip ? { ip: req.ip } : {}) };
}
