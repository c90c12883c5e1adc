import { createHash } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Directory } from '../../auth/directory.ts';
import { Unauthenticated } from '../../core/errors.ts';
import type { Principal } from '../../core/message.ts';

const CACHE_MS = 60_000;
const CACHE_MAX = 1000;

/**
 * HTTP Basic against the directory. A verified credential is remembered for a minute (keyed by
 * a hash of user and password, never the password itself) so API clients don't pay a password
 * hash on every request; a changed password or group takes effect within that minute.
 */
export function authenticate(directory: Directory) {
  const cache = new Map<string, { principal: Principal; until: number }>();
  return async (req: Request, res: Response, next: NextFunction) => {
    try {
      const header = req.headers.authorization;
      if (!header) throw new Unauthenticated();
      const [scheme, value] = header.split(' ', 2);
      if (scheme?.toLowerCase() !== 'basic' || !value) throw new Unauthenticated('unsupported Authorization scheme: use HTTP Basic with a directory user');
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const user = colon > 0 ? decoded.slice(0, colon) : '';
      const password = colon > 0 ? decoded.slice(colon + 1) : '';
      // One message for every way a login can fail, so user names cannot be probed.
      if (!user || !password) throw new Unauthenticated('invalid user name or password');
      const key = createHash('sha256').update(`${user}\0${password}`).digest('hex');
      const hit = cache.get(key);
      let principal = hit && hit.until > Date.now() ? hit.principal : null;
      if (!principal) {
        principal = await directory.authenticate(user, password);
        if (!principal) throw new Unauthenticated('invalid user name or password');
        if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
        cache.set(key, { principal, until: Date.now() + CACHE_MS });
      }
      res.locals.principal = principal;
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
