/**
 * Dead-letter events of BullMQ-owned dead letters come from BullMQ's failed set, not from the
 * process that failed the job (src/core/dead-letter-events.ts): a job dead-lettered by a worker
 * nobody told anything (as after a kill -9 right after BullMQ's move) still gets its event, once;
 * a pass that fails to store an event leaves the checkpoint where it was; a replayed dead letter
 * failing again is a second event; one replayed or discarded before a pass read it has its event
 * recorded first (recordLeaving). Real redis-server and BullMQ.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { DeadLetterEvents } from '../../src/core/dead-letter-events.ts';
import type { LifecycleEvent } from '../../src/core/lifecycle.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const log = pino({ level: 'silent' });
const PREFIX = 'dle';
const QUEUE = '{queue%3Awork.dl}';
let server: TestRedis;
let redis: Redis;

before(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: null });
});

after(async () => {
  redis?.disconnect();
  await server?.dispose();
});

/** Adds a job that its worker refuses at once, and waits until BullMQ has it in the failed set. */
async function deadLetter(queue: Queue, id: string): Promise<string> {
  const job = await queue.add('m', { id, to: 'queue:work.dl', body: {} }, { attempts: 1, removeOnFail: false });
  const worker = new Worker(QUEUE, async () => { throw new UnrecoverableError(`refused ${id}`); }, { connection: redis, prefix: PREFIX, autorun: true });
  try {
    for (let i = 0; i < 200 && !(await job.isFailed()); i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(await job.isFailed(), `${id} is dead-lettered`);
  } finally {
    await worker.close();
  }
  return job.id!;
}

/** The test queue with no jobs and no checkpoint left by an earlier test. */
async function emptyQueue(): Promise<Queue> {
  const queue = new Queue(QUEUE, { connection: redis, prefix: PREFIX });
  await queue.obliterate({ force: true });
  await redis.del(`${PREFIX}:dead-letter-events:${QUEUE}`);
  return queue;
}

/** A reconciler of the test queue recording into `recorded`; its store fails while `store.refuse`. */
function reconcilerInto(recorded: LifecycleEvent[], store: { refuse: boolean }): DeadLetterEvents {
  return new DeadLetterEvents({
    redis, prefix: PREFIX, transport: 'queue', log,
    queues: async () => [{ address: 'queue:work.dl', queue: QUEUE }],
    record: async (e) => {
      if (store.refuse) throw new Error('events outbox unreachable');
      recorded.push(e);
    },
  });
}

test('dead letters nobody reported get their event from the failed set, once; a failed store keeps the checkpoint; a replay that fails again is a new event', { timeout: 60_000 }, async () => {
  const queue = new Queue(QUEUE, { connection: redis, prefix: PREFIX });
  const recorded: LifecycleEvent[] = [];
  const store = { refuse: false };
  const reconciler = () => reconcilerInto(recorded, store);
  try {
    const first = reconciler();
    await first.pass(); // the first look sets the checkpoint (a minute back) and reports nothing older
    assert.equal(recorded.length, 0);
    const jobA = await deadLetter(queue, 'msg-a');

    // The store fails: nothing recorded, the checkpoint stays, so the next pass sees it again.
    store.refuse = true;
    const checkpoint = await redis.get(`${PREFIX}:dead-letter-events:${QUEUE}`);
    await assert.rejects(first.pass(), /unreachable/);
    assert.equal(await redis.get(`${PREFIX}:dead-letter-events:${QUEUE}`), checkpoint);
    store.refuse = false;

    // Another process (a new reconciler: nothing in memory) finds it, once, however often it looks.
    const second = reconciler();
    await second.pass();
    await second.pass();
    assert.equal(recorded.length, 1, JSON.stringify(recorded));
    const [e] = recorded;
    assert.equal(e!.type, 'switchboard.message.dead-lettered');
    assert.equal(e!.subject, 'queue:work.dl');
    assert.deepEqual({ ...e!.data }, { address: 'queue:work.dl', messageId: 'msg-a', transport: 'queue', reason: 'refused msg-a' });
    assert.ok(Number(await redis.get(`${PREFIX}:dead-letter-events:${QUEUE}`)) > Number(checkpoint), 'the checkpoint moved on');

    // A third reconciler reads the overlap again: the same dead-lettering has the same key (deduplicated downstream).
    const third = reconciler();
    await third.pass();
    assert.equal(recorded.length, 2);
    assert.equal(recorded[1]!.key, recorded[0]!.key);

    // Replayed and refused again: a new dead-lettering, a new key.
    const job = await queue.getJob(jobA);
    await job!.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    const worker = new Worker(QUEUE, async () => { throw new UnrecoverableError('refused again'); }, { connection: redis, prefix: PREFIX });
    for (let i = 0; i < 200 && !(await (await queue.getJob(jobA))!.isFailed()); i++) await new Promise((r) => setTimeout(r, 25));
    await worker.close();
    await new Promise((r) => setTimeout(r, 5)); // a later finishedOn than the first failure
    await third.pass();
    assert.equal(recorded.length, 3, JSON.stringify(recorded.map((r) => r.data.reason)));
    assert.notEqual(recorded[2]!.key, recorded[0]!.key);
    assert.equal(recorded[2]!.data.reason, 'refused again');
  } finally {
    await queue.close();
  }
});

test('a dead letter about to be replayed before any pass read it: recordLeaving records its event, keyed as a pass keys it, once; a store that fails refuses the move', { timeout: 60_000 }, async () => {
  const queue = await emptyQueue();
  const recorded: LifecycleEvent[] = [];
  const store = { refuse: false };
  const reconciler = reconcilerInto(recorded, store);
  try {
    await reconciler.pass(); // the checkpoint: from now on
    const jobId = await deadLetter(queue, 'msg-leaving');

    store.refuse = true;
    await assert.rejects(reconciler.recordLeaving({ address: 'queue:work.dl', queue: QUEUE }, [jobId]), /unreachable/);
    assert.equal(recorded.length, 0);
    store.refuse = false;

    await reconciler.recordLeaving({ address: 'queue:work.dl', queue: QUEUE }, [jobId, 'no-such-job']);
    assert.equal(recorded.length, 1, 'one event; a job that is gone has none');
    assert.deepEqual({ ...recorded[0]!.data }, { address: 'queue:work.dl', messageId: 'msg-leaving', transport: 'queue', reason: 'refused msg-leaving' });

    // A pass of another process that still finds it has the same key (deduplicated downstream) …
    const other = reconcilerInto(recorded, { refuse: false });
    await other.pass();
    assert.equal(recorded.length, 2);
    assert.equal(recorded[1]!.key, recorded[0]!.key);
    // … and this process records it once however often it is asked.
    await reconciler.recordLeaving({ address: 'queue:work.dl', queue: QUEUE }, [jobId]);
    await reconciler.pass();
    assert.equal(recorded.length, 2);
  } finally {
    await queue.close();
  }
});

test('a dead letter removed from the failed set while a pass pages through it (a replay, a discard) does not make the pass skip the next one', { timeout: 60_000 }, async () => {
  const queue = await emptyQueue();
  const recorded: LifecycleEvent[] = [];
  let removeFirst: string | undefined;
  // No overlap and pages of 2: what one pass skips is never read again, so a skip shows.
  const reconciler = new DeadLetterEvents({
    redis, prefix: PREFIX, transport: 'queue', log, overlapMs: 0, batch: 2,
    queues: async () => [{ address: 'queue:work.dl', queue: QUEUE }],
    record: async (e) => {
      recorded.push(e);
      // While the first page is being read, an operator replays the first dead letter.
      if (removeFirst) await queue.remove(removeFirst);
      removeFirst = undefined;
    },
  });
  try {
    await reconciler.pass(); // sets the checkpoint: now
    await new Promise((r) => setTimeout(r, 5));
    const ids = ['page-1', 'page-2', 'page-3', 'page-4', 'page-5'];
    const jobs: string[] = [];
    for (const id of ids) {
      jobs.push(await deadLetter(queue, id));
      await new Promise((r) => setTimeout(r, 3)); // distinct finishedOn: no ties to hide behind
    }
    removeFirst = jobs[0];
    await reconciler.pass();
    await reconciler.pass();
    // A re-read of the checkpoint's own dead letter is the same key (deduplicated downstream).
    const byKey = new Map(recorded.map((e) => [e.key, e.data.messageId]));
    assert.deepEqual([...byKey.values()].sort(), ids, 'every dead letter has its event');
  } finally {
    await queue.close();
  }
});

test('a dead letter stamped by a gateway whose clock runs ahead does not move the checkpoint past the others', { timeout: 60_000 }, async () => {
  const queue = await emptyQueue();
  const recorded: LifecycleEvent[] = [];
  const reconciler = new DeadLetterEvents({
    redis, prefix: PREFIX, transport: 'queue', log, overlapMs: 1000,
    queues: async () => [{ address: 'queue:work.dl', queue: QUEUE }],
    record: async (e) => { recorded.push(e); },
  });
  try {
    await reconciler.pass(); // sets the checkpoint
    // BullMQ stamps finishedOn (the failed set's score) with the failing worker's clock: as a
    // gateway whose clock is ten minutes ahead would have.
    const ahead = await deadLetter(queue, 'from-the-future');
    const future = Date.now() + 600_000;
    await redis.zadd(`${PREFIX}:${QUEUE}:failed`, 'XX', future, ahead);
    await redis.hset(`${PREFIX}:${QUEUE}:${ahead}`, 'finishedOn', String(future));
    await reconciler.pass();
    assert.deepEqual(recorded.map((e) => e.data.messageId), ['from-the-future']);

    // A gateway with a right clock dead-letters one now: it still gets its event.
    await deadLetter(queue, 'on-time');
    await reconciler.pass();
    assert.deepEqual(recorded.map((e) => e.data.messageId).sort(), ['from-the-future', 'on-time']);
    assert.ok(Number(await redis.get(`${PREFIX}:dead-letter-events:${QUEUE}`)) < future, 'the checkpoint is not in the future');
  } finally {
    await queue.close();
  }
});

test('dead letters of one millisecond (same score) spread over several pages are each read once', { timeout: 60_000 }, async () => {
  const queue = await emptyQueue();
  const recorded: LifecycleEvent[] = [];
  const reconciler = new DeadLetterEvents({
    redis, prefix: PREFIX, transport: 'queue', log, overlapMs: 0, batch: 2,
    queues: async () => [{ address: 'queue:work.dl', queue: QUEUE }],
    record: async (e) => { recorded.push(e); },
  });
  try {
    await reconciler.pass(); // sets the checkpoint: now
    const ids = ['tie-1', 'tie-2', 'tie-3', 'tie-4', 'tie-5'];
    const jobs: string[] = [];
    for (const id of ids) jobs.push(await deadLetter(queue, id));
    // All failed in one millisecond, as a busy fleet does.
    const at = Number(await redis.zscore(`${PREFIX}:${QUEUE}:failed`, jobs[0]!));
    for (const job of jobs) await redis.zadd(`${PREFIX}:${QUEUE}:failed`, 'XX', at, job);
    await reconciler.pass();
    assert.deepEqual(recorded.map((e) => e.data.messageId).sort(), ids, 'each once, none skipped');
  } finally {
    await queue.close();
  }
});
