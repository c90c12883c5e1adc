import type { NextFunction, Request, Response } from 'express';
import { csrfSync } from 'csrf-sync';
import { SwitchboardError } from '../../core/errors.ts';

/**
 * Synchronizer-token CSRF protection: a random token kept in the session, sent back in every
 * form's hidden `_csrf` field. Every state-changing page request (POST) is checked, the login
 * form included (login CSRF).
 */
const { generateToken, isRequestValid } = csrfSync({
  getTokenFromRequest: (req) => (req.body as { _csrf?: string } | undefined)?._csrf,
});

export class CsrfRejected extends SwitchboardError {
  constructor() {
    super('csrf', 'this form has expired or did not come from this site; reload the page and try again', 403);
  }
}

/** Makes the session's token available to templates as `csrfToken`. */
export function csrfToken(req: Request, res: Response, next: NextFunction): void {
  res.locals.csrfToken = generateToken(req);
  next();
}

export function csrfProtect(req: Request, _res: Response, next: NextFunction): void {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return next();
  next(isRequestValid(req) ? undefined : new CsrfRejected());
}

/** After login the session is new: it needs a token of its own. */
export function rotateCsrfToken(req: Request): string {
  return generateToken(req, true);
}
