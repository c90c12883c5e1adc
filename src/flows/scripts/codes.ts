/**
 * What the flow-instance scripts in this folder answer, named (BullMQ's `enums/error-code.ts`
 * habit): the Lua files return these values, the store and the runtime compare against the names.
 */

/** Reply of `createInstance`. */
export const CreateInstanceCode = {
  Created: 1,
  /** An instance with this id exists; nothing was written. */
  Exists: 0,
} as const;

/** Reply of `deliverMessage`. */
export const DeliverCode = {
  Delivered: 1,
  /** This message id was delivered before; nothing was written. */
  Duplicate: 0,
  NoInstance: -1,
  /** The instance completed or was cancelled; it takes no more messages. */
  Finished: -2,
} as const;

export type DeliverCode = (typeof DeliverCode)[keyof typeof DeliverCode];

/** Reply of `refreshLock` and `releaseLock`. */
export const LockCode = {
  Done: 1,
  /** The lock expired or another process holds it now. */
  NotHeld: 0,
} as const;

/** First element of the reply of `beginRun`. */
export const BeginRunCode = {
  Begun: 1,
  /** Another run holds the instance's lock. */
  Busy: 0,
  /** The instance has ended; its last run's lock has not expired yet (nothing to run). */
  Finished: 2,
} as const;
