/**
 * What the auth scripts in this folder answer, named (BullMQ's `enums/error-code.ts` habit): the
 * Lua files return these values, the stores compare against the names, never a bare literal.
 */

/** Replies of `changeRule` other than the new version (which is always > 0). */
export const ChangeRuleCode = {
  /** An add of a rule id that is already there; nothing was written. */
  RuleExists: -1,
  /** A remove of a rule id that is not there (any more); nothing was written. */
  NoSuchRule: -2,
} as const;
