import { parseAddress } from '../core/address.ts';
import { PermissionDenied, SwitchboardError, Unauthenticated } from '../core/errors.ts';
import { principalId } from '../core/message.ts';
import { ACTION_VERBS, CLIENT_DOORS, INTERNAL_KINDS, type Action, type ActionGuard, type Caller, type SendInterceptor } from '../core/pipeline.ts';
import type { AuditLog } from './audit.ts';
import type { Permissions, Verb } from './permissions.ts';

/**
 * The router's authorization interceptors (DESIGN §5, "one pipeline"). Doors authenticate and
 * hand over a principal; whether that principal may send there is decided here, once, for every
 * door — the HTTP API, the inbox, the AMQP endpoint, peers, webhooks, brokers, routes and flows.
 */

/** A message to `flow:<name>` starts an instance: that takes `start`; anything else takes `send`. */
export function verbFor(to: string): Verb {
  return /^flow:[^/]+$/.test(to) ? 'start' : 'send';
}

/** The right to send there (or start). Flows are deployed code and pass (Permissions says so, in one place). */
export function authorizeSend(permissions: Permissions): SendInterceptor {
  return {
    name: 'authorize-send',
    send(input, next) {
      permissions.require(input.caller.principal, verbFor(input.message.to), input.message.to);
      return next(input);
    },
  };
}

/** Thrown when a reply address is not one the sender may name. */
export class ReplyAddressRefused extends SwitchboardError {
  constructor(readonly principal: string, readonly replyTo: string, reason: string) {
    super('forbidden', `${principal} may not ask for replies at ${replyTo}: ${reason}`, 403);
  }
}

/**
 * A reply address is a send the sender asks someone else to make on its behalf, so it needs the
 * same right as sending there: a flow's result or a task's decision goes only where the client
 * could have sent itself. A peer's or a broker's reply address lies in its own address space (the
 * door rewrites it to `peer:<alias>/…` or `mq:<broker>/…`), never a local address.
 */
export function authorizeReplyTo(permissions: Permissions): SendInterceptor {
  return {
    name: 'authorize-reply-to',
    send(input, next) {
      const replyTo = input.message.replyTo;
      // Checked where a message enters from outside; a route or a flow moving it on carries a
      // reply address that was checked then (or that the flow set to itself).
      if (replyTo === undefined || !CLIENT_DOORS.has(input.caller.door)) return next(input);
      const p = input.caller.principal;
      const who = principalId(p);
      if (p.kind === 'peer' && !replyTo.startsWith(`peer:${p.alias ?? p.name}/`)) throw new ReplyAddressRefused(who, replyTo, `a peer's replies go back to that peer (peer:${p.alias ?? p.name}/…)`);
      if (p.kind === 'broker' && !replyTo.startsWith(`mq:${p.name}/`)) throw new ReplyAddressRefused(who, replyTo, `a broker's replies go back to that broker (mq:${p.name}/…)`);
      if (p.kind === 'peer' || p.kind === 'broker') return next(input);
      if (!permissions.check(p, 'send', replyTo).allowed) throw new ReplyAddressRefused(who, replyTo, 'no permission rule lets it send there');
      return next(input);
    },
  };
}

/** Every refusal by a later interceptor is written to the audit trail with who, where and why. */
export function auditDenials(audit: AuditLog): SendInterceptor {
  return {
    name: 'audit-denials',
    async send(input, next) {
      try {
        return await next(input);
      } catch (err) {
        if (err instanceof SwitchboardError && (err.status === 401 || err.status === 403) && !err.audited) {
          err.audited = true;
          const p = input.caller?.principal;
          await audit.record({
            action: 'access.denied',
            actor: p ? principalId(p) : '(none)',
            ...(input.caller?.ip ? { ip: input.caller.ip } : {}),
            target: input.message.to,
            // A peer is named by its network identity; its local alias goes beside it.
            detail: `${input.caller?.door ?? 'unknown'} door, message ${input.message.id}: ${err.message}${p?.alias !== undefined ? ` (peer alias ${p.alias})` : ''}`,
          });
        }
        throw err;
      }
    },
  };
}

/** What the rules are checked on: a topic subscription (`topic:t?subscription=s`) is governed by its topic's rules. */
function ruleAddress(address: string): string {
  const q = address.indexOf('?');
  return q < 0 ? address : address.slice(0, q);
}

/** The verb an act takes there: a send to `flow:<name>` is a start. */
function verbOf(action: Action, address: string): Verb {
  return action === 'send' ? verbFor(address) : ACTION_VERBS[action];
}

/**
 * The router's guard for every act on an address (DESIGN §5): stats, browse, dead letters,
 * receive, ack, consume, replay, discard, and an AMQP link's send right asked at attach, whichever
 * door asks (each message sent is still decided by the interceptors above). Refusals name the
 * missing right and are audited here, so no door checks permissions or writes the trail itself.
 */
export function actionGuard(permissions: Permissions, audit: AuditLog): ActionGuard {
  const refusal = (action: Action, address: string, caller: Caller): SwitchboardError | undefined => {
    const p = caller?.principal;
    if (!p || typeof p.name !== 'string' || p.name === '') return new Unauthenticated(`${action} needs an authenticated caller; none was given`);
    const client = CLIENT_DOORS.has(caller.door);
    if (client && INTERNAL_KINDS.has(p.kind)) return new Unauthenticated(`the ${caller.door} door cannot act as ${p.kind}:${p.name}`);
    if (caller.owns?.includes(address)) return undefined;
    const verb = verbOf(action, address);
    const who = principalId(p);
    // A temporary queue is its connection's inbox for replies: no rule lets anyone else read it.
    if (client && (verb === 'consume' || verb === 'browse') && parseAddress(address).scheme === 'tmp') {
      return new PermissionDenied(who, verb, `${address} (only the connection that created a temporary queue may ${verb} it)`);
    }
    const rule = ruleAddress(address);
    if (permissions.check(p, verb, rule).allowed) return undefined;
    if (action === 'stats' && permissions.check(p, 'admin', rule).allowed) return undefined;
    return new PermissionDenied(who, verb, rule);
  };
  return {
    allows: (action, address, caller) => refusal(action, address, caller) === undefined,
    async authorize(action, address, caller) {
      const err = refusal(action, address, caller);
      if (!err) return;
      const p = caller?.principal;
      await audit.record({
        action: 'access.denied',
        actor: p?.name ? principalId(p) : '(none)',
        ...(caller?.ip ? { ip: caller.ip } : {}),
        target: address,
        // As the HTTP error handler words a refusal, with the door and the act beside it; a
        // refusal that is not about a missing right (a client door presenting an internal principal) says why.
        detail: `${verbOf(action, address)} denied on ${address} (${caller?.door ?? 'unknown'} door, ${action})${err instanceof PermissionDenied ? '' : `: ${err.message}`}`,
      });
      err.audited = true;
      throw err;
    },
  };
}
