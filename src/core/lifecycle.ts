/**
 * A lifecycle event as the code that made the state change reports it (DESIGN §11): which kind
 * of change, what it happened to, and a few plain facts. `src/events` turns it into a CloudEvent
 * and routes it; the reporter only states what happened, after the change is durable.
 */
export interface LifecycleEvent {
  /** e.g. `switchboard.flow.completed` (the list is in src/events/event-types.ts). */
  type: string;
  /** The instance, task or address it happened to, e.g. `flow:payment-approval/<id>`. */
  subject: string;
  /**
   * Fixed per change (e.g. the instance id for its completion), so reporting the same change
   * twice — a retry, a second process — yields the same event id, and the copy is deduplicated.
   */
  key: string;
  /** Plain facts about the change; never tokens, passwords, secrets or message bodies. */
  data: Record<string, unknown>;
}

/**
 * Reports a lifecycle event. Never throws and never waits on the event's destination: an event
 * is news about a change already made, and must not fail or slow the change itself.
 */
export type ReportLifecycle = (event: LifecycleEvent) => void;
