import { SwitchboardError } from '../core/errors.ts';
import type { Message } from '../core/message.ts';
import { principalId } from '../core/message.ts';
import { CLIENT_DOORS, type SendInterceptor } from '../core/pipeline.ts';

/** Thrown when a client hands in a message posing as one of the gateway's lifecycle events. */
export class ForgedEvent extends SwitchboardError {
  constructor(readonly principal: string, readonly type: string) {
    super('forged_event', `${principal} may not send a '${type}' event: switchboard.* lifecycle events are emitted by the gateway only`, 403);
  }
}

/** The CloudEvents type a message claims, in either content mode and any common property spelling. */
export function claimedEventType(m: Pick<Message, 'headers' | 'contentType' | 'body'>): string | undefined {
  for (const [k, v] of Object.entries(m.headers)) {
    if (/^(cloudevents[:_]|ce[-_])type$/i.test(k)) return v;
  }
  if (/^application\/cloudevents/i.test(m.contentType) && m.body && typeof m.body === 'object' && !Buffer.isBuffer(m.body)) {
    const type = (m.body as { type?: unknown }).type;
    if (typeof type === 'string') return type;
  }
  return undefined;
}

/**
 * A consumer of an events address trusts a `switchboard.*` type to come from the gateway. A
 * client (HTTP, AMQP, webhook, broker) claiming one is refused here, in the router's pipeline, and
 * the refusal audited; a peer gateway's own events stay allowed (its identity is proven by mutual
 * TLS and the envelope's signature, and its `source` names it).
 */
export const refuseForgedEvents: SendInterceptor = {
  name: 'refuse-forged-events',
  send(input, next) {
    if (!CLIENT_DOORS.has(input.caller.door) || input.caller.door === 'peer') return next(input);
    const type = claimedEventType(input.message);
    if (type !== undefined && /^switchboard\./i.test(type.trim())) throw new ForgedEvent(principalId(input.caller.principal), type);
    return next(input);
  },
};
