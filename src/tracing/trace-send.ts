import { principalId } from '../core/message.ts';
import type { SendResult } from '../core/endpoint.ts';
import { CLIENT_DOORS, type SendInput, type SendInterceptor, type SendNext } from '../core/pipeline.ts';
import { readTraceContext, withTraceContext, type TraceContext } from './trace-context.ts';
import type { SpanKind, Tracing } from './tracing.ts';

/** `flow:approval/<instance>` → `flow:approval/{instance}`: span names stay few, the address is an attribute. */
function spanName(to: string): string {
  return `send ${to.startsWith('flow:') && to.includes('/') ? `${to.slice(0, to.indexOf('/'))}/{instance}` : to}`;
}

/**
 * The router's tracing interceptor, first in the chain: every message that enters the router is
 * one span, a child of the trace context the message carries (put there by the door it came in
 * by, or by the hop before), and the message goes on carrying this span's context — so whatever
 * the destination does next (a broker, a webhook, a peer, a task, a flow) continues the trace.
 * A carried value that breaks the W3C spec is dropped here, once for every door, and the span
 * starts a new trace. Off, no span is made; a valid context passes on unchanged.
 */
export function traceSend(tracing: Tracing): SendInterceptor {
  return {
    name: 'trace-send',
    send(input, next) {
      const { message } = input;
      const parent = readTraceContext(message.headers);
      if (!tracing.enabled) {
        const headers = withTraceContext(message.headers, parent);
        return next(headers === message.headers ? input : { ...input, message: { ...message, headers } });
      }
      return traced(input, next, parent);
    },
  };

  async function traced(input: SendInput, next: SendNext, parent: TraceContext | undefined): Promise<SendResult> {
    const { message, caller } = input;
    const fromOutside = CLIENT_DOORS.has(caller.door);
    const kind: SpanKind = !fromOutside ? 'producer' : caller.door === 'http' || caller.door === 'webhook' ? 'server' : 'consumer';
    const span = tracing.startSpan(spanName(message.to), {
      kind,
      ...(parent ? { parent } : {}),
      ...(caller.traceLinks?.length ? { links: caller.traceLinks.map((l) => readTraceContext({ traceparent: l.traceparent, ...(l.tracestate !== undefined ? { tracestate: l.tracestate } : {}) })).filter((l) => l !== undefined) } : {}),
      attributes: {
        'messaging.system': 'switchboard',
        'messaging.operation.type': 'send',
        'messaging.destination.name': message.to,
        'messaging.message.id': message.id,
        'messaging.message.conversation_id': message.correlationId,
        'switchboard.door': caller.door,
        'switchboard.sender': principalId(message.sender),
        'client.address': caller.ip,
      },
    });
    try {
      const result = await next({ ...input, message: { ...message, headers: withTraceContext(message.headers, span.context) } });
      span.setAttribute('switchboard.duplicate', result.duplicate);
      return result;
    } catch (err) {
      span.fail(err);
      throw err;
    } finally {
      span.end();
    }
  }
}
