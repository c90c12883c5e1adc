import { Unauthenticated } from './errors.ts';
import type { SendResult } from './endpoint.ts';
import type { Message, Principal } from './message.ts';

/**
 * Where a message entered. Client doors carry what someone outside typed; internal doors carry
 * what the gateway itself built (a flow's step, a route from the config, a notice, a decision the
 * inbox recorded and now delivers — the person chose an action, the inbox wrote the message).
 */
export type Door = 'http' | 'inbox' | 'amqp' | 'peer' | 'webhook' | 'broker' | 'route' | 'flow' | 'system';

export const CLIENT_DOORS: ReadonlySet<Door> = new Set(['http', 'amqp', 'peer', 'webhook', 'broker']);

/** Who hands a message to the router, and through which door. Doors authenticate; the router decides. */
export interface Caller {
  readonly principal: Principal;
  readonly door: Door;
  /** The client's IP, for the audit trail. */
  readonly ip?: string;
  /**
   * W3C trace contexts (`traceparent`, `tracestate`) of work this hand-over comes from without
   * continuing it — the HTTP request whose click decided a task: the send's span links to them
   * (DESIGN §11). The message's own `traceparent` stays what the send continues.
   */
  readonly traceLinks?: readonly { readonly traceparent: string; readonly tracestate?: string }[];
  /**
   * Addresses this caller made and holds for its own use (an AMQP connection's temporary queues):
   * it acts on them without a rule, and nobody else may consume from them.
   */
  readonly owns?: readonly string[];
}

/**
 * What a caller can do at an address (DESIGN §5): each act is decided by the router's guard, once,
 * for every door — the HTTP API, the console, the AMQP endpoint. A message sent is decided by the
 * interceptors; `send` here is the same question asked ahead (an AMQP link attached to send).
 */
export type Action = 'send' | 'stats' | 'browse' | 'deadLetters' | 'receive' | 'ack' | 'consume' | 'discardDeadLetters' | 'replay' | 'discardWaiting';

/**
 * The right each act takes. A queue's numbers (depth, rates, oldest age) are open to its
 * administrators too; its messages are read with `browse` only, so administering the rules of an
 * address never reads what flows through it without a rule saying so. Discarding a dead letter takes
 * it away for good, as consuming does; a replay sends it back into its queue; discarding a waiting
 * message removes what nobody consumed, which only an administrator of the queue may decide.
 */
export const ACTION_VERBS: Readonly<Record<Action, 'browse' | 'consume' | 'send' | 'admin'>> = {
  send: 'send', stats: 'browse', browse: 'browse', deadLetters: 'browse', receive: 'consume', ack: 'consume', consume: 'consume',
  discardDeadLetters: 'consume', replay: 'send', discardWaiting: 'admin',
};

/** Decides the acts; each message sent is decided by the interceptors. */
export interface ActionGuard {
  /** The answer alone (which buttons a page shows, whether an open link may go on): nothing recorded. */
  allows(action: Action, address: string, caller: Caller): boolean;
  /** Resolves when the caller may; otherwise records the refusal in the audit trail and rejects with it. */
  authorize(action: Action, address: string, caller: Caller): Promise<void>;
}

export interface SendInput {
  readonly message: Message;
  readonly caller: Caller;
}

export type SendNext = (input: SendInput) => Promise<SendResult>;

/**
 * One link of the router's chain (Temporal's interceptors): it sees the typed input, may refuse
 * by throwing, may change the input it hands on, and calls `next` to go on. Authorization, header
 * hygiene, audit and metrics are interceptors, so no door or transport re-implements them.
 */
export interface SendInterceptor {
  /** Named in logs and tests, e.g. 'authorize-send'. */
  readonly name: string;
  /** May refuse by throwing or by rejecting: compose hands either on as a rejection. */
  send(input: SendInput, next: SendNext): Promise<SendResult>;
}

/** `send`, whose refusal, thrown or rejected, reaches its caller as a rejection. */
function rejecting(send: SendNext): SendNext {
  return (input) => {
    try {
      return send(input);
    } catch (err) {
      return Promise.reject(err);
    }
  };
}

/**
 * Runs the interceptors in order, then `last` (the endpoint). The checks that only look at the
 * input are plain functions, not async ones: every message passes all of them, and an async
 * wrapper per link cost a promise and a microtask hop each (~0.5 µs a message for the chain).
 */
export function compose(interceptors: readonly SendInterceptor[], last: SendNext): SendNext {
  return interceptors.reduceRight<SendNext>((next, interceptor) => rejecting((input) => interceptor.send(input, next)), rejecting(last));
}

/** Principals only the gateway's own code may act as; a client door handing one over is a bug or an attack. */
export const INTERNAL_KINDS: ReadonlySet<Principal['kind']> = new Set(['flow', 'system']);

/** A message without an authenticated principal goes nowhere; internal principals come only from internal doors. */
export const requirePrincipal: SendInterceptor = {
  name: 'require-principal',
  send(input, next) {
    const p = input.caller?.principal;
    if (!p || typeof p.name !== 'string' || p.name === '') throw new Unauthenticated('a message needs an authenticated sender; none was given');
    if (INTERNAL_KINDS.has(p.kind) && CLIENT_DOORS.has(input.caller.door)) {
      throw new Unauthenticated(`the ${input.caller.door} door cannot act as ${p.kind}:${p.name}`);
    }
    return next(input);
  },
};

const RESERVED = 'switchboard-';
const CLAIMED = 'switchboard-claimed-';

/**
 * Headers named `switchboard-*` are the gateway's own (the task a decision answers, a notice's
 * kind, the sender): from a client they are kept only as `switchboard-claimed-*`, so nothing
 * downstream can mistake a client's claim for the gateway's word.
 */
export const demoteReservedHeaders: SendInterceptor = {
  name: 'demote-reserved-headers',
  send(input, next) {
    if (!CLIENT_DOORS.has(input.caller.door)) return next(input);
    const headers = input.message.headers;
    let changed: Record<string, string> | undefined;
    for (const [k, v] of Object.entries(headers)) {
      const lower = k.toLowerCase();
      if (!lower.startsWith(RESERVED) || lower.startsWith(CLAIMED)) continue;
      changed ??= { ...headers };
      delete changed[k];
      changed[CLAIMED + lower.slice(RESERVED.length)] = v;
    }
    return changed ? next({ ...input, message: { ...input.message, headers: changed } }) : next(input);
  },
};
