import { Job, type JobsOptions, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { corkForTurn } from '../../store/corked-turn.ts';
import { guardedClient, type AddGuard, type Duplicate } from './guarded-add.ts';

interface Pending {
  data: unknown;
  opts: JobsOptions;
  /** The dedup key and the depth limit, checked in the same script as the add (guarded-add.ts). */
  guard: AddGuard;
  resolve: (id: string | Duplicate) => void;
  reject: (err: unknown) => void;
}

function jobJson(q: Queue, p: Pending) {
  return new Job(q, 'm', p.data, p.opts, p.opts.jobId).asJSON();
}

/**
 * Adds to one queue that are asked for in the same turn of the event loop go to Redis together,
 * in one socket write (corkForTurn), instead of one write each. A route or a flow
 * runner with 50 messages in flight gets their replies in one socket read and so asks for its
 * adds together; on this path the socket write was the largest single cost of a message.
 *
 * Each add is BullMQ's own add script inside the guarded add (dedup and depth checked in the
 * same script), atomic on its own and answered on its own: one
 * that fails (its data would not serialize, say) fails only its caller; a lost connection
 * holds them all until Redis is back, as it does any command. Nothing waits for a batch to
 * fill: the batch is sent when the current turn's callbacks have run. (Corking the adds where
 * they are asked for, without gathering them here first, measured 0.56× raw on the route
 * benchmark against 0.66–0.70× with this.)
 */
export class BatchedAdds {
  private readonly pending = new Map<Queue, Pending[]>();

  /** `redis`: the connection the queues are opened with (the guarded add runs on it). */
  constructor(private readonly redis: Redis) {}

  /** Resolves to the new job's id, or to `Duplicate` when the message is a repeat. */
  add(q: Queue, data: unknown, opts: JobsOptions, guard: AddGuard): Promise<string | Duplicate> {
    return new Promise<string | Duplicate>((resolve, reject) => {
      let list = this.pending.get(q);
      if (!list) {
        list = [];
        this.pending.set(q, list);
        // After the microtasks of this turn: every handler woken by the same read has asked by then.
        process.nextTick(() => void this.flush(q));
      }
      list.push({ data, opts, guard, resolve, reject });
    });
  }

  private async flush(q: Queue): Promise<void> {
    const list = this.pending.get(q)!;
    this.pending.delete(q);
    try {
      await q.backend.client; // the queue's connection is up (or this waits, as any command would)
      corkForTurn(this.redis);
      for (const p of list) {
        try {
          // No id: BullMQ numbers the job itself (its script reads '' so).
          q.backend.addJobToTransaction(guardedClient(this.redis, q, p.guard) as never, jobJson(q, p), p.opts.jobId ?? '').then(p.resolve as (id: unknown) => void, p.reject);
        } catch (err) {
          p.reject(err); // this add only (its data would not serialize, say); the others go on
        }
      }
    } catch (err) {
      // No client: none of them was written.
      for (const p of list) p.reject(err);
    }
  }
}
