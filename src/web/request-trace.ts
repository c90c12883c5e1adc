import type { Request } from 'express';
import type { Message } from '../core/message.ts';
import { TRACEPARENT, TRACESTATE } from '../tracing/trace-context.ts';

/**
 * The HTTP door's part of tracing: a request's `traceparent`/`tracestate` headers become the
 * message's, replacing any the JSON body named (the request's own headers are the HTTP carrier,
 * W3C Trace Context). Validity is checked once for every door at the router (`traceSend`): an
 * invalid value is dropped there and a new trace starts, so it is never an error here.
 */
export function withRequestTrace(req: Request, message: Message): Message {
  const traceparent = req.get(TRACEPARENT);
  if (traceparent === undefined) return message;
  const { [TRACEPARENT]: _p, [TRACESTATE]: _s, ...headers } = message.headers;
  const tracestate = req.get(TRACESTATE);
  return { ...message, headers: { ...headers, [TRACEPARENT]: traceparent, ...(tracestate !== undefined ? { [TRACESTATE]: tracestate } : {}) } };
}
