import type { Queue } from 'bullmq';
// BullMQ's own add script (its package has no `exports` map, so the file is reachable), run inside
// the script below: the add stays exactly BullMQ's, whatever its version writes.
import { addStandardJob } from 'bullmq/dist/esm/scripts/addStandardJob-9.js';
import type { Redis } from 'ioredis';
import { DestinationUnavailable } from '../../core/errors.ts';
import { addressFromBullQueueName } from './names.ts';

/**
 * One script around BullMQ's addStandardJob, so what guards an add cannot race it:
 * - the dedup check: the message's dedup key is set for the dedup window only if it is not held
 *   (one SET NX); a held key means a repeat, not added again. The key is the one BullMQ's own
 *   `deduplication` option uses (`<queue>:de:<id>`), so keys written either way are honoured.
 *   Done here instead of through that option because BullMQ's dedup also writes the id into the
 *   job and checks the key again when the job finishes: ~11 µs of Redis a message against ~3
 *   here (INFO commandstats, 10,000 adds and consumes), on every message through a queue;
 * - the depth limit: a queue that already holds `maxDepth` waiting messages (wait, paused,
 *   prioritized, delayed: what the limit counts) takes no more, so senders racing for the last
 *   places cannot push it past its limit. A repeat is answered as such even then: it is stored.
 * An add refused as full, or one that fails, leaves no dedup key behind: the same message sent
 * again is taken, not mistaken for a repeat.
 * KEYS[1..9] as addStandardJob names them (KEYS[1] wait, KEYS[2] paused, KEYS[6] delayed),
 * KEYS[10] the prioritized set, KEYS[11] the dedup key (all of one queue: one hash tag);
 * ARGV[1..3] as addStandardJob, ARGV[4] the limit (-1: none), ARGV[5] the dedup window in ms
 * (0: no dedup). Returns {'duplicate'}, {'full', depth}, or what addStandardJob returns.
 */
const BEFORE = `
local dedupMs = tonumber(ARGV[5])
if dedupMs > 0 and not redis.call('SET', KEYS[11], '1', 'PX', dedupMs, 'NX') then return {'duplicate'} end
local function unmark()
  if dedupMs > 0 then redis.call('DEL', KEYS[11]) end
end
local maxDepth = tonumber(ARGV[4])
if maxDepth >= 0 then
  local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[6]) + redis.call('ZCARD', KEYS[10])
  if depth >= maxDepth then
    unmark()
    return {'full', depth}
  end
end
local function bullmqAdd()
`;
const AFTER = `
end
local ok, jobId = pcall(bullmqAdd)
if not ok then
  unmark()
  error(jobId, 0)
end
if type(jobId) ~= 'string' then unmark() end
return jobId
`;

const COMMAND = 'addJobGuarded';
const ADD = 'addStandardJob:';

type RunCommand = (name: string, args: (string | number | Buffer)[]) => Promise<unknown>;
type WithCommand = Redis & { [COMMAND]: (args: (string | number | Buffer)[]) => Promise<unknown> };

/** What guards one add: the dedup id and its window (none: no dedup), the depth limit (none: unlimited). */
export interface AddGuard {
  dedup?: { id: string; ms: number };
  maxDepth?: number;
}

/** The answer of an add the dedup key refused: the message is stored already. */
export interface Duplicate {
  duplicate: true;
}

const defined = new WeakSet<object>();

/**
 * A stand-in for the BullMQ client of queue `q` that runs its standard add as the guarded script
 * on `redis` (the connection the queue was opened with); hand it to BullMQ's addJobToTransaction.
 * A full queue is refused with DestinationUnavailable; a repeat resolves to `Duplicate`
 * instead of a job id. Only standard adds are guarded: any other script is refused, so an add
 * with a delay or a priority cannot go around the dedup check unnoticed.
 */
export function guardedClient(redis: Redis, q: Queue, guard: AddGuard): { runCommand: RunCommand } {
  if (!defined.has(redis)) {
    if (addStandardJob.content.startsWith('#!')) throw new Error('BullMQ\'s addStandardJob declares script flags; it cannot run inside the guarded add');
    redis.defineCommand(COMMAND, { numberOfKeys: 11, lua: BEFORE + addStandardJob.content + AFTER });
    defined.add(redis);
  }
  return {
    runCommand: async (name, args) => {
      if (!name.startsWith(ADD)) throw new Error(`a guarded add runs BullMQ's addStandardJob only, not ${name}`);
      // addStandardJob's 9 keys, the prioritized set, the dedup key, its 3 arguments, the limit,
      // the window: BullMQ's array is extended in place (it is made for this call alone).
      const { dedup } = guard;
      const own = args.splice(9);
      args.push(q.keys.prioritized!, dedup ? `${q.keys.de}:${dedup.id}` : q.keys.de!, ...own, guard.maxDepth ?? -1, dedup?.ms ?? 0);
      const reply = await (redis as WithCommand)[COMMAND](args);
      if (Array.isArray(reply) && reply[0] === 'duplicate') return { duplicate: true } satisfies Duplicate;
      if (Array.isArray(reply) && reply[0] === 'full') {
        throw new DestinationUnavailable(addressFromBullQueueName(q.name), `the queue is full (${String(reply[1])} messages, maxDepth ${guard.maxDepth}); try again later`);
      }
      return reply;
    },
  };
}
