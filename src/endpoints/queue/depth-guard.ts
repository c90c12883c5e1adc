import type { Queue } from 'bullmq';
// BullMQ's own add script (its package has no `exports` map, so the file is reachable), run after
// the guard below in one script: the add stays exactly BullMQ's, whatever its version writes.
import { addStandardJob } from 'bullmq/dist/esm/scripts/addStandardJob-9.js';
import type { Redis } from 'ioredis';
import { DestinationUnavailable } from '../../core/errors.ts';
import { addressFromBullQueueName } from './names.ts';

/**
 * Run before BullMQ's addStandardJob in the same script: a queue that already holds `maxDepth`
 * waiting messages (wait, paused, prioritized, delayed: what the depth limit counts) takes no
 * more, so senders racing for the last places cannot push it past its limit, however many add at
 * once. KEYS[1..9] as addStandardJob names them (KEYS[1] wait, KEYS[2] paused, KEYS[6] delayed),
 * KEYS[10] the prioritized set of the same queue (one hash tag); ARGV[1..3] as addStandardJob,
 * ARGV[4] the limit. Returns {'full', depth}, or what addStandardJob returns.
 */
const GUARD = `
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('ZCARD', KEYS[6]) + redis.call('ZCARD', KEYS[10])
if depth >= tonumber(ARGV[4]) then
  return {'full', depth}
end
`;

const COMMAND = 'addJobWithinDepth';
const ADD = 'addStandardJob:';

type RunCommand = (name: string, args: (string | number | Buffer)[]) => Promise<unknown>;
type WithCommand = Redis & { [COMMAND]: (args: (string | number | Buffer)[]) => Promise<unknown> };

const defined = new WeakSet<object>();

/**
 * The BullMQ client `client` of queue `q`, but whose standard add is refused with
 * DestinationUnavailable when the queue holds `maxDepth` waiting messages: checked and added in
 * one script on `redis` (the connection the queue was opened with). Hand it to BullMQ's
 * addJobToTransaction in place of the queue's own client. Every other command goes through as is.
 */
export function withinDepth<C extends { runCommand: RunCommand }>(redis: Redis, client: C, q: Queue, maxDepth: number): C {
  if (!defined.has(redis)) {
    redis.defineCommand(COMMAND, { numberOfKeys: 10, lua: GUARD + addStandardJob.content });
    defined.add(redis);
  }
  const runCommand: RunCommand = async (name, args) => {
    if (!name.startsWith(ADD)) return client.runCommand(name, args);
    // addStandardJob's 9 keys, then the prioritized set, then its 3 arguments and the limit.
    const reply = await (redis as WithCommand)[COMMAND]([...args.slice(0, 9), q.keys.prioritized!, ...args.slice(9), maxDepth]);
    if (Array.isArray(reply) && reply[0] === 'full') {
      throw new DestinationUnavailable(addressFromBullQueueName(q.name), `the queue is full (${String(reply[1])} messages, maxDepth ${maxDepth}); try again later`);
    }
    return reply;
  };
  return new Proxy(client, { get: (target, p, receiver) => (p === 'runCommand' ? runCommand : Reflect.get(target, p, receiver)) });
}
