/**
 * What the topic scripts answer, named: the Lua files return these values, the endpoint compares
 * against the names, never a bare literal.
 */

/** Reply of `acceptPublication` (otherwise the id of the fan-out log entry, or '' for none). */
export const AcceptCode = {
  /** The registry changed since the caller read it: nothing was written; read it again. */
  Stale: 'stale',
  /** The same sender published this id to this topic before: nothing was written. */
  Duplicate: 'duplicate',
  /** Accepted, and no subscription matched: nothing to copy. */
  NoSubscription: '',
} as const;
