/**
 * What the task scripts in this folder answer, named (BullMQ's `enums/error-code.ts` habit): the
 * Lua files return these values, the store compares against the names, never a bare literal.
 */

/** Reply of `createTask`. */
export const CreateTaskCode = {
  Created: 1,
  /** A task with this id exists; nothing was written. */
  Exists: 0,
} as const;

/** First element of the `[code, holder]` reply of `decideTask`, `claimTask`, `releaseTask` and `reassignTask`. */
export const TaskCode = {
  Ok: 'ok',
  Missing: 'missing',
  /** Decided already; the holder is who decided. */
  Decided: 'decided',
  /** Someone else holds it; the holder is who (or '' for a release of a task nobody holds). */
  Claimed: 'claimed',
  /**
   * The task's person or group is not the one the caller named, so the open-task index key it
   * passed is not the task's: nothing was written. Read the owner again and call again.
   */
  StaleIndex: 'stale_index',
} as const;

export type TaskCode = (typeof TaskCode)[keyof typeof TaskCode];

/** First element of the `[code, detail]` reply of `approveTask` (besides Missing, Decided, Claimed). */
export const ApproveCode = {
  /** Recorded; the detail is how many approvals the task has now. */
  Recorded: 'ok',
  /** This approval completes the count; nothing written, the detail is the earlier approvals (JSON). */
  Final: 'final',
  /** This principal approved before; nothing written. */
  ApprovedAlready: 'approved_already',
} as const;
