import { Router as ExpressRouter, type Response } from 'express';
import { BAD_LOGIN } from '../../auth/authenticator.ts';
import { DependencyUnavailable, Unauthenticated } from '../../core/errors.ts';
import type { Principal } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { csrfProtect, csrfToken } from '../middleware/csrf.ts';
import { TooManyAttempts } from '../../auth/login-guard.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { liveStreams, sessionPrincipal } from '../sessions.ts';
import { render } from '../views.ts';

/** Only same-site paths are followed after login (no open redirect). */
function safeNext(v: unknown): string {
  return typeof v === 'string' && v.startsWith('/') && !v.startsWith('//') && !v.startsWith('/\\') ? v : '/';
}

/**
 * Where a user lands after login without an explicit `next`: the inbox when tasks wait for them,
 * the console when they administer something, else the start page. A failing look-up (Redis
 * down) never fails the login: the start page is always there.
 */
async function landingPage(deps: AppDeps, p: Principal): Promise<string> {
  try {
    if (deps.inbox && (await deps.inbox.list(p)).length > 0) return '/inbox';
  } catch (err) {
    deps.log.warn({ user: p.name, err: (err as Error).message }, 'open tasks not known at login: not landing on the inbox');
  }
  return deps.permissions.adminScopes(p).length > 0 ? '/admin' : '/';
}

/** Login, logout and the start page. */
export function pageRoutes(deps: AppDeps): ExpressRouter {
  const { auth, audit, directory, permissions } = deps;
  const r = ExpressRouter();
  const loginPage = (res: Response, status: number, data: { error?: string; next?: string; username?: string; notice?: string }) =>
    render(res, 'login', { title: 'Sign in', next: data.next ?? '/', error: data.error, username: data.username, notice: data.notice }, status);

  r.get('/login', csrfToken, (req, res) => {
    if (req.session.user) return res.redirect(303, safeNext(req.query.next));
    loginPage(res, 200, { next: safeNext(req.query.next), ...(req.query.expired === '1' ? { notice: 'Your session has expired. Please sign in again.' } : {}) });
  });

  r.post('/login', csrfToken, csrfProtect, async (req, res) => {
    const { username, password } = req.body as { username?: unknown; password?: unknown };
    // The form always posts `next` ('/' when the user asked for no page): only another page is a wish to honour.
    const next = safeNext(req.body?.next);
    const name = typeof username === 'string' ? username.trim() : '';
    try {
      const principal = await auth.password(name, typeof password === 'string' ? password : '', { ip: req.ip, door: 'web-login', cache: false });
      // A new session id at login: an id planted before login (session fixation) is worthless.
      await new Promise<void>((ok, fail) => req.session.regenerate((err) => (err ? fail(err) : ok())));
      req.session.user = { name: principal.name, groups: [...(principal.groups ?? [])] };
      req.session.loggedInAt = new Date().toISOString();
      res.redirect(303, next !== '/' ? next : await landingPage(deps, sessionPrincipal(req.session.user)));
    } catch (err) {
      if (err instanceof TooManyAttempts) {
        res.setHeader('Retry-After', String(err.retryAfterSeconds));
        return loginPage(res, 429, { error: `Too many failed sign-ins: ${err.message}.`, next, username: name });
      }
      if (err instanceof Unauthenticated) return loginPage(res, 401, { error: `Sign-in failed: ${BAD_LOGIN}.`, next, username: name });
      if (err instanceof DependencyUnavailable) {
        res.setHeader('Retry-After', '10');
        return loginPage(res, 503, { error: 'Sign-in is not possible right now: the user directory cannot be reached. Please try again in a few minutes.', next, username: name });
      }
      throw err;
    }
  });

  r.post('/logout', csrfToken, csrfProtect, async (req, res) => {
    const who = req.session.user?.name;
    // The session's live inbox streams end with it, here and now (other processes notice
    // within streamSessionCheckMs that the session is gone).
    liveStreams(deps.session).endSession(req.sessionID, 'signed out');
    await new Promise<void>((ok) => req.session.destroy(() => ok()));
    res.clearCookie('sb.sid', { path: '/' });
    if (who) await audit.record({ action: 'logout', actor: `user:${who}`, ip: req.ip, target: 'web' });
    res.redirect(303, '/login');
  });

  r.get('/', requireLogin(directory, permissions), csrfToken, (req, res) => {
    render(res, 'home', { title: 'Home', rules: permissions.rulesFor(res.locals.principal) });
  });

  return r;
}
