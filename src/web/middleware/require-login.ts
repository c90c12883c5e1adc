import type { NextFunction, Request, Response } from 'express';
import type { Directory } from '../../auth/directory.ts';
import type { Permissions } from '../../auth/permissions.ts';
import { DependencyUnavailable } from '../../core/errors.ts';
import { sessionPrincipal } from '../sessions.ts';

/**
 * Pages need a session. Groups are refreshed from the directory (it caches for its TTL), so a
 * membership change reaches a logged-in user; while the directory is down the session keeps the
 * groups it had, so existing sessions keep working until they expire. A user removed from the
 * directory is logged out.
 */
export function requireLogin(directory: Directory, permissions: Permissions) {
  return async (req: Request, res: Response, next: NextFunction) => {
    let user = req.session.user;
    if (!user) {
      // A session cookie whose session is gone from the store (a brand-new one took its place):
      // it expired or was ended elsewhere; say so at the login.
      const expired = /(?:^|;\s*)sb\.sid=/.test(req.headers.cookie ?? '') && req.session.csrfToken === undefined;
      res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}${expired ? '&expired=1' : ''}`);
      return;
    }
    try {
      const fresh = await directory.lookup(user.name);
      if (!fresh) {
        req.session.destroy(() => res.redirect(303, '/login'));
        return;
      }
      user = { name: fresh.name, groups: [...(fresh.groups ?? [])] };
      req.session.user = user;
    } catch (err) {
      if (!(err instanceof DependencyUnavailable)) return next(err);
    }
    const principal = sessionPrincipal(user);
    res.locals.principal = principal;
    res.locals.isAdmin = permissions.rules.some((r) => r.verbs.includes('admin') && permissions.check(principal, 'admin', r.address).allowed);
    next();
  };
}
