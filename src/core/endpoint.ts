import type { Message } from './message.ts';

/** What a destination says when it has durably accepted a message. */
export interface SendResult {
  id: string;
  /** True when the id was seen before at this destination: accepted, not delivered again. */
  duplicate: boolean;
  /** The task a message to person:/group: became (made by the inbox, never taken from the message). */
  taskId?: string;
  /** The flow instance a message to flow:<name> started (or had started before). */
  instanceId?: string;
}

/**
 * Called with each message a consumer takes. Resolving acknowledges the message at the source.
 * Throwing a retryable error (DestinationUnavailable) hands it back without counting an attempt
 * and slows the consumer down; any other error counts as a failed attempt (retry with backoff,
 * then dead-letter).
 */
export type DeliveryHandler = (message: Message) => Promise<void>;

export interface ConsumeOptions {
  /** At most this many messages are in the handler at once: the consumer's credit. */
  maxInFlight: number;
}

export interface Subscription {
  /** Stops taking messages; in-flight ones finish or are handed back. */
  close(): Promise<void>;
}

export interface HealthReport {
  ok: boolean;
  detail?: string;
}

export interface BrowseResult {
  address: string;
  depth: number;
  messages: Message[];
  [extra: string]: unknown;
}

export type LeasedMessage = Message & { lease: string };

export interface AckResult {
  acked: number;
  /** Leases that had already expired (their message is back in the queue or dead-lettered). */
  expired: string[];
}

/** What the console and /metrics show of one queue. */
export interface QueueStats {
  address: string;
  /** Messages waiting (not yet delivered). */
  depth: number;
  /** Messages handed out and not yet acknowledged (leases, consumers working on them). */
  inFlight: number;
  deadLetters: number;
  /** Age of the oldest waiting message, in ms; undefined when none waits. */
  oldestAgeMs?: number;
  /** Messages accepted and acknowledged per second over the last minute, as this process counted them. */
  inPerSecond: number;
  outPerSecond: number;
}

/**
 * One transport (Camel's "component"): knows one scheme. The router never learns a transport's
 * name; adding a transport is adding a folder that implements this and registering it.
 */
export interface Endpoint {
  readonly scheme: string;
  /**
   * True when send() itself is an idempotent receiver (atomic id check and store). Otherwise the
   * router applies its dedup store around send().
   */
  readonly dedupsOnIngress: boolean;
  /**
   * Throws UnknownTarget when the address is well formed but names nothing this transport has
   * (a webhook, broker or peer missing from the config). Called by the router before any send,
   * consume or browse, so every door gets the same clear error.
   */
  checkTarget?(address: string): void;
  send(message: Message): Promise<SendResult>;
  consume?(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription>;
  browse?(address: string, limit: number): Promise<BrowseResult>;
  receive?(address: string, max: number, leaseMs: number): Promise<LeasedMessage[]>;
  ack?(address: string, leases: string[]): Promise<AckResult>;
  deadLetters?(address: string, limit: number): Promise<BrowseResult>;
  /**
   * Moves dead letters (all, or those with these message ids) back for delivery. The endpoint
   * first captures exactly which dead letters it will replay and hands them to `before` (which
   * stores a replay intent, src/core/replay-intents.ts), then replays only those: dead letters
   * arriving meanwhile stay where they are.
   */
  replayDeadLetters?(address: string, ids?: string[], before?: BeforeReplay): Promise<ReplayResult>;
  /** Deletes the dead letters with these message ids for good. */
  discardDeadLetters?(address: string, ids: string[]): Promise<{ discarded: number }>;
  /**
   * Deletes the waiting message with this id for good, atomically against consumers: one a
   * consumer holds (in flight) is not discarded (`MessageInFlight`); one not there is NotFound.
   */
  discardWaiting?(address: string, id: string): Promise<void>;
  /** Depth, in flight, dead letters, oldest age and rates of one queue. */
  stats?(address: string): Promise<QueueStats>;
  health(): Promise<HealthReport>;
  close(): Promise<void>;
}

/** One dead letter as a replay captures it: enough to tell from Redis afterwards whether it was replayed. */
export interface CapturedDeadLetter {
  /** The BullMQ queue name it is a job of (`{queue%3Aorders}`, `{events-out-2}`). */
  queue: string;
  jobId: string;
  /** When it was dead-lettered (its score in the failed set): a later dead-lettering of the same job is another one. */
  finishedOn: number;
  messageId: string;
}

/** Called with the dead letters a replay is about to replay, before the first moves; a rejection stops the replay. */
export type BeforeReplay = (captured: CapturedDeadLetter[]) => Promise<void>;

export interface ReplayResult {
  replayed: number;
  /** Message ids asked for and not found among the dead letters. */
  notFound?: string[];
  /** The job ids of the captured dead letters that were replayed. */
  replayedJobs?: string[];
}
