/**
 * A lifecycle event as the code that makes the state change states it (DESIGN §11): which kind
 * of change, what it happened to, and a few plain facts. `src/events` turns it into a CloudEvent
 * and routes it. Stores whose changes are scripts hand it over before the change and the script
 * journals it only if the change happens (`EventJournal`), so it is emitted exactly when the
 * change is durable; other reporters record it (`RecordLifecycle`) or report it (`ReportLifecycle`).
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

/**
 * Where a store records the lifecycle events of a change in the same atomic step as the change
 * (see src/core/event-journal.ts): the store's script writes `entries(...)` into a journal key of
 * the change's own hash tag, and only when the change really happens.
 */
export interface EventJournal {
  /** The journal entries (id, JSON, id, JSON, …) of the events some `events:` mapping wants; empty when none does. */
  entries(events: LifecycleEvent[]): string[];
  /** Announces, before the change, that `journalKey` may get entries: a crash after the change cannot hide them. */
  expect(journalKey: string): Promise<void>;
  /** Told after the change: drains `journalKey` now, in the background. */
  written(journalKey: string): void;
}

/** The lifecycle events of a change, built only when they are recorded (see `withEvents`). */
export type ChangeEvents = () => LifecycleEvent[];

/** A change without lifecycle events. */
export const NO_EVENTS: ChangeEvents = () => [];

/**
 * Runs `change` with the journal entries of its events (none when events are off or nobody maps
 * them: then no Redis command or byte is added). `events` is called only when there is a journal.
 */
export async function withEvents<T>(journal: EventJournal | undefined, journalKey: string, events: ChangeEvents, change: (entries: string[]) => Promise<T>): Promise<T> {
  const entries = journal ? journal.entries(events()) : [];
  if (entries.length === 0) return change(entries);
  await journal!.expect(journalKey);
  const result = await change(entries);
  journal!.written(journalKey);
  return result;
}

/**
 * Stores a lifecycle event durably where it is delivered from (the events outbox) and resolves
 * once it is; rejects when it could not be stored, so the caller can hold back what the event
 * reports and try again. For changes made outside our scripts (a broker's reject, a BullMQ
 * failed set), whose events must be recorded before the change or from its durable trace after.
 */
export type RecordLifecycle = (event: LifecycleEvent) => Promise<void>;
