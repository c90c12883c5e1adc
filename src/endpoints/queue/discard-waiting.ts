import type { Job, Queue } from 'bullmq';
// BullMQ's own removeJob script (its package has no `exports` map, so the file is reachable): it
// knows every key a job lives in (its hash, logs, dedup key, events), which a copy would not
// keep up with across BullMQ versions.
import { removeJob } from 'bullmq/dist/esm/scripts/removeJob-2.js';
import type { Redis } from 'ioredis';
import type { StoredMessage } from '../../core/message.ts';

/**
 * Run before BullMQ's removeJob in the same script: a job that is not waiting (in the wait,
 * paused, prioritized or delayed set) is left alone. removeJob itself refuses only a *locked*
 * job; an active job whose lock has just lapsed (an expired lease on its way back to the queue)
 * would be removed from under its consumer. With the guard, "waiting" is checked and the job
 * removed in one atomic step: a consumer that takes the message first wins, and the discard
 * answers that the message is in flight.
 *
 * KEYS[1] job hash, KEYS[2] repeat key (both as removeJob names them), KEYS[3] wait list,
 * KEYS[4] paused list, KEYS[5] prioritized zset, KEYS[6] delayed zset — all of one queue, so of
 * one hash tag. ARGV as removeJob: job id, remove children (0), the queue's key prefix.
 * Returns NOT_WAITING, or what removeJob returns (1 removed, 0 locked, negative: BullMQ's codes).
 */
const GUARD = `
if not (redis.call('LPOS', KEYS[3], ARGV[1]) or redis.call('LPOS', KEYS[4], ARGV[1])
    or redis.call('ZSCORE', KEYS[5], ARGV[1]) or redis.call('ZSCORE', KEYS[6], ARGV[1])) then
  return -100
end
`;

const NOT_WAITING = -100;
const COMMAND = 'discardWaitingJob';

type WithCommand = Redis & { [COMMAND]: (...args: (string | number)[]) => Promise<number> };

const defined = new WeakSet<object>();

/** What became of one discard. */
export type DiscardJobOutcome = 'discarded' | 'not-waiting';

/**
 * Deletes the job `jobId` of queue `q` for good if, at that moment, it waits to be delivered;
 * otherwise (a consumer holds it, or it is gone) writes nothing and answers `not-waiting`.
 */
export async function discardWaitingJob(redis: Redis, q: Queue<StoredMessage>, jobId: string): Promise<DiscardJobOutcome> {
  if (!defined.has(redis)) {
    redis.defineCommand(COMMAND, { numberOfKeys: 6, lua: GUARD + removeJob.content });
    defined.add(redis);
  }
  const k = q.keys;
  const reply = await (redis as WithCommand)[COMMAND](q.toKey(jobId), q.toKey('repeat'), k.wait!, k.paused!, k.prioritized!, k.delayed!, jobId, 0, q.toKey(''));
  if (reply === 1) return 'discarded';
  if (reply === NOT_WAITING || reply === 0) return 'not-waiting';
  throw new Error(`BullMQ's removeJob answered ${reply} for job ${jobId} of ${q.name}`);
}

/** Waiting jobs (wait, prioritized, delayed) of `q` carrying message id `id`, among the first `limit`. */
export async function waitingJobsWithId(q: Queue<StoredMessage>, id: string, limit: number): Promise<Job<StoredMessage>[]> {
  const found: Job<StoredMessage>[] = [];
  for (let start = 0, page = 500; start < limit; start += page) {
    const jobs = (await q.getJobs(['wait', 'prioritized', 'delayed'], start, Math.min(start + page, limit) - 1, true)).filter(Boolean);
    found.push(...jobs.filter((j) => j.data?.id === id));
    if (jobs.length < page) break;
  }
  return found;
}
