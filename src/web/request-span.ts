import type { Request } from 'express';
import { principalId, type Principal } from '../core/message.ts';
import { readTraceContext, TRACEPARENT, TRACESTATE } from '../tracing/trace-context.ts';
import { inSpan, NO_TRACING, type TraceSpan, type Tracing } from '../tracing/tracing.ts';

/**
 * Runs `work` in a server span for this HTTP request, named as OpenTelemetry names HTTP server
 * spans (`POST /api/tasks/{id}/decision`): a child of the request's own `traceparent` header when
 * it is valid (an API client's trace), else the root of a new trace (a browser sends none). For
 * requests whose work other traces should point back to, such as a decision (people/inbox.ts
 * links the two); a message sent over HTTP needs none, its send span already is the server span.
 */
export function inRequestSpan<T>(tracing: Tracing | undefined, req: Request, route: string, principal: Principal, work: (span: TraceSpan) => Promise<T>): Promise<T> {
  const tracestate = req.get(TRACESTATE);
  const parent = readTraceContext({ ...(req.get(TRACEPARENT) !== undefined ? { [TRACEPARENT]: req.get(TRACEPARENT)! } : {}), ...(tracestate !== undefined ? { [TRACESTATE]: tracestate } : {}) });
  return inSpan(tracing ?? NO_TRACING, `${req.method} ${route}`, {
    kind: 'server',
    ...(parent ? { parent } : {}),
    attributes: { 'http.request.method': req.method, 'http.route': route, 'client.address': req.ip, 'enduser.id': principalId(principal) },
  }, work);
}
