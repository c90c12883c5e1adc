import type { z } from 'zod';
import type { Message } from '../core/message.ts';
import type { Decision, TaskSpec } from '../core/task.ts';

export type { Decision, FieldKind, TaskSpec } from '../core/task.ts';

const FLOW = Symbol.for('switchboard.flow');

export interface SendOptions {
  headers?: Record<string, string>;
  subject?: string;
  correlationId?: string;
  replyTo?: string;
}

/**
 * The only door a flow has to the world. Every call is a numbered, journaled step: after a crash
 * or a long wait the flow runs again from the top and each step returns what it returned the
 * first time, without doing it again. So flow code must be deterministic: use `ctx.now()` and
 * `ctx.uuid()` instead of `Date.now()`/`Math.random()`, and do any other I/O in `ctx.step`.
 */
export interface FlowContext {
  /** This instance's id. */
  readonly id: string;
  /** This flow's name. */
  readonly flow: string;
  /** Who started this instance, as authenticated at the door, e.g. `{kind: 'user', name: 'bob'}`. */
  readonly startedBy: { kind: Message['sender']['kind']; name: string };
  /** Sends a message; resolves when the destination durably accepted it. Its id is `<id>:<step>`. */
  send(to: string, body: unknown, options?: SendOptions): Promise<{ id: string }>;
  /** Sends with `replyTo` this instance and waits for the reply (throws FlowTimeout after `timeout`). */
  request(to: string, body: unknown, options?: SendOptions & { timeout?: string | number }): Promise<Message>;
  /** Waits for a message sent to `flow:<name>/<id>` (optionally matching) or until `timeout`. */
  receive(options?: { timeout?: string | number; match?: MessageMatch }): Promise<Message>;
  /**
   * Creates a task for `person:<user>` or `group:<group>` and waits for the decision. With
   * `fourEyes: true` whoever started this instance may not decide; `notBy` excludes more
   * principals; `approvals: N` waits for N distinct approvers (a reject by any ends the ask).
   */
  ask(to: string, task: TaskSpec, options?: { timeout?: string | number }): Promise<Decision>;
  /** Waits durably (a timer in Redis, nothing in memory). */
  sleep(duration: string | number): Promise<void>;
  /** Runs a side effect once; its (JSON) result is journaled and returned on replay. */
  step<T>(name: string, fn: () => Promise<T> | T): Promise<T>;
  /** The time, journaled: the same value on every replay. */
  now(): Date;
  /** A random UUID, journaled. */
  uuid(): string;
  /**
   * Tags this instance with a business key (journaled: once per instance, however often it
   * replays), so the console and `GET /admin/flows?tag=name=value` find it without a scan.
   * Names are 1-64 letters, digits, `_`, `-` or `.`; values at most 200 characters. Awaiting it
   * is optional (the step is numbered at the call).
   * @example ctx.tag('ref', input.ref);
   */
  tag(name: string, value: string | number): Promise<void>;
  /** Logs only when the flow runs ahead, not while it replays. */
  log(message: string, fields?: Record<string, unknown>): void;
}

/** A partial message to match: every given field must be equal (objects compared part by part). */
export type MessageMatch = Partial<Pick<Message, 'subject' | 'correlationId' | 'from'>> & { headers?: Record<string, string>; body?: unknown; sender?: Partial<Message['sender']> };

export interface FlowOptions<I extends z.ZodType, R> {
  /** Name used in addresses: `flow:<name>`. Letters, digits, _ and -. */
  name: string;
  /** Validates the input; a bad input is refused with a clear error and starts nothing. */
  input: I;
  run(ctx: FlowContext, input: z.infer<I>): Promise<R>;
}

export interface FlowDefinition<I extends z.ZodType = z.ZodType, R = unknown> extends FlowOptions<I, R> {
  readonly [FLOW]: true;
}

/**
 * Defines a durable flow.
 * @example
 * import { defineFlow } from 'switchboard';
 * import { z } from 'zod';
 * export default defineFlow({
 *   name: 'hello',
 *   input: z.object({ to: z.string() }),
 *   async run(ctx, input) {
 *     await ctx.send('queue:greetings', { text: `hello ${input.to}` });
 *     return { greeted: input.to };
 *   },
 * });
 */
export function defineFlow<I extends z.ZodType, R>(options: FlowOptions<I, R>): FlowDefinition<I, R> {
  return { ...options, [FLOW]: true };
}

export function isFlowDefinition(value: unknown): value is FlowDefinition {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[FLOW] === true;
}
