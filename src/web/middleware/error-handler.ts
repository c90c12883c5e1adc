import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import type { AuditLog } from '../../auth/audit.ts';
import { TooManyAttempts } from '../../auth/login-guard.ts';
import { PermissionDenied, SwitchboardError } from '../../core/errors.ts';
import { render } from '../views.ts';

/** Browsers on page routes get an HTML page; API clients (and everything under /api) get JSON. */
function wantsPage(req: Request): boolean {
  if (req.path.startsWith('/api/') || req.path === '/api' || req.path.startsWith('/hooks/')) return false;
  return req.accepts(['json', 'html']) === 'html';
}

interface BodyParserError extends Error {
  type?: string;
  status?: number;
  limit?: number;
  body?: string;
}

/**
 * The one place errors become responses: typed errors keep their code and message; body-parser
 * errors get a clear message; anything else is logged and answered as `internal` without
 * details (never a stack trace to a user).
 */
export function errorHandler(log: Logger, bodyLimit: string, audit?: AuditLog) {
  // Express recognises error handlers by their four parameters.
  return (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    let status = 500;
    let code = 'internal';
    let message = 'internal error; the details are in the gateway log';
    const e = err as BodyParserError;
    if (err instanceof SwitchboardError) {
      ({ status, code, message } = err);
      if (err instanceof PermissionDenied && !err.audited) void audit?.record({ action: 'access.denied', actor: err.principal, ip: req.ip, target: err.address, detail: `${err.verb} denied on ${err.address}` });
      else if (status === 403 && !err.audited) {
        // Every other refusal of a known principal (four-eyes, a refused reply) is in the trail too.
        const p = res.locals.principal as { kind: string; name: string } | undefined;
        void audit?.record({ action: 'access.denied', actor: p ? `${p.kind}:${p.name}` : '(unknown)', ip: req.ip, target: req.path, detail: `${err.code}: ${err.message}` });
      }
      if (status === 503) res.setHeader('Retry-After', '5');
      if (err instanceof TooManyAttempts) res.setHeader('Retry-After', String(err.retryAfterSeconds));
    } else if (e?.type === 'entity.too.large') {
      status = 413; code = 'payload_too_large'; message = `request body is larger than the limit of ${bodyLimit}`;
    } else if (e?.type === 'entity.parse.failed') {
      status = 400; code = 'bad_json'; message = `request body is not valid JSON: ${e.message}`;
    } else if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
      status = 415; code = 'unsupported_encoding'; message = e.message;
    } else if (err instanceof URIError || (e as { expose?: boolean })?.expose === true && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      // Malformed percent-encoding in the URL, a body that does not decompress, …: the client's fault.
      status = err instanceof URIError ? 400 : e.status!;
      code = 'bad_request';
      message = err instanceof URIError ? 'the URL is not valid: malformed percent-encoding (encode an address with encodeURIComponent)' : `the request could not be read: ${e.message}`;
    } else {
      log.error({ err, method: req.method, path: req.path }, 'unhandled error');
    }
    if (status >= 500 && status !== 503) log.error({ code, path: req.path }, message);
    if (wantsPage(req)) {
      res.locals.csrfToken ??= '';
      const heading = status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : status === 503 ? 'Temporarily unavailable' : status >= 500 ? 'Something went wrong' : 'That did not work';
      return render(res, 'error', { title: heading, heading, message: message.charAt(0).toUpperCase() + message.slice(1) }, status);
    }
    res.status(status).json({ error: { code, message } });
  };
}
