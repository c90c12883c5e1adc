import { isRetryable } from './errors.ts';

export interface HoldOptions {
  /**
   * True once the caller is shutting down: a retryable failure is then rethrown instead of held,
   * so the caller can hand the message back to its source.
   */
  stopping: () => boolean;
  /**
   * Pause after the first retryable failure; each further pause doubles.
   * @defaultValue 250
   */
  firstPauseMs?: number;
  /**
   * Longest pause, so a destination that comes back is tried again soon.
   * @defaultValue 5000
   */
  maxPauseMs?: number;
  /**
   * Each pause is spread by ± this fraction, so many holders do not retry in step.
   * @defaultValue 0.25
   */
  jitter?: number;
  /** Called before each pause (for a debug log line). @defaultValue undefined */
  onHold?: (err: unknown, pauseMs: number) => void;
  /** How to wait; tests pass a fake clock. @defaultValue setTimeout */
  sleep?: (ms: number) => Promise<void>;
  /** Source of jitter in [0, 1); tests pass a fixed one. @defaultValue Math.random */
  random?: () => number;
}

const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Holds a message while its destination is unavailable: runs `attempt` until it succeeds,
 * pausing with capped exponential backoff after each retryable failure (`isRetryable`, e.g. a
 * full queue). The caller keeps the message (unacknowledged, no new credit) meanwhile, which is
 * how backpressure reaches the source instead of a failed attempt or a dropped message.
 * Rethrows a failure that is not retryable, and a retryable one once `stopping()` is true.
 */
export async function holdWhileUnavailable<T>(attempt: () => Promise<T>, o: HoldOptions): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    return holdAfterFailure(err, attempt, o);
  }
}

/**
 * holdWhileUnavailable for a first attempt the caller already made, which failed with `err`.
 * A consumer that tries once itself builds no options or closures for the attempt that succeeds,
 * which is nearly every message.
 */
export async function holdAfterFailure<T>(err: unknown, attempt: () => Promise<T>, o: HoldOptions): Promise<T> {
  const max = o.maxPauseMs ?? 5000;
  const jitter = o.jitter ?? 0.25;
  const sleep = o.sleep ?? wait;
  const random = o.random ?? Math.random;
  let pause = Math.min(o.firstPauseMs ?? 250, max);
  let failure = err;
  for (;;) {
    if (!isRetryable(failure) || o.stopping()) throw failure;
    const ms = Math.round(pause * (1 - jitter + 2 * jitter * random()));
    o.onHold?.(failure, ms);
    await sleep(ms);
    pause = Math.min(pause * 2, max);
    try {
      return await attempt();
    } catch (next) {
      failure = next;
    }
  }
}
