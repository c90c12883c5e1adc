/**
 * Commands asked for in one turn of the event loop after `corkForTurn` leave in one socket write
 * (src/store/corked-turn.ts: the flow store's hot path), and so do queue adds asked for in one
 * turn (src/endpoints/queue/batched-adds.ts); batching changes nothing else: each add is stored,
 * deduplicated and answered on its own, and one that cannot be stored fails only its caller.
 *
 * Real redis-server, real BullMQ queues through the QueueEndpoint. The socket's writes are counted
 * on the client's own stream (`_write` for one chunk, `_writev` for a corked batch).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { registerScheme } from '../../src/core/address.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { parsePattern, type AddressPattern } from '../../src/core/pattern.ts';
import { systemMessage } from '../../src/core/system-message.ts';
import { BatchedAdds } from '../../src/endpoints/queue/batched-adds.ts';
import { bullQueueName, dedupId } from '../../src/endpoints/queue/names.ts';
import { QueueEndpoint } from '../../src/endpoints/queue/queue-endpoint.ts';
import { queueScheme } from '../../src/endpoints/queue/scheme.ts';
import { corkForTurn } from '../../src/store/corked-turn.ts';
import { openRedis } from '../../src/store/redis.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

registerScheme(queueScheme);

const PREFIX = 'sbba';
let server: TestRedis | undefined;
let redis: Redis | undefined;
let queues: QueueEndpoint | undefined;

before(async () => {
  server = await startTestRedis();
  redis = await openRedis(server.url);
  queues = queueEndpoint();
});

/** A queue endpoint on the test's Redis (dedup window 60 s), with these depth limits. */
function queueEndpoint(limits: { pattern: AddressPattern; maxDepth: number }[] = []): QueueEndpoint {
  return new QueueEndpoint({
    redis: redis!, prefix: PREFIX, maxAttempts: 3, backoffMs: 50, dedupTtlMs: 60_000, lockMs: 5000, stalledCheckMs: 1000, limits,
    metrics: new Metrics(async () => ({})), log: pino({ level: 'silent' }),
  });
}

/** Runs `fn` with the BullMQ queue of `address` open, and closes it after. */
async function withQueue<T>(address: string, fn: (q: Queue) => Promise<T>): Promise<T> {
  const q = new Queue(bullQueueName(address), { connection: redis!, prefix: PREFIX });
  try {
    return await fn(q);
  } finally {
    await q.close();
  }
}

after(async () => {
  await queues?.close();
  redis?.disconnect();
  await server?.dispose();
});

/** Counts the socket writes of `client` while `fn` runs. */
async function countWrites<T>(client: Redis, fn: () => Promise<T>): Promise<{ result: T; writes: number }> {
  const stream = (client as unknown as { stream: { _write: (...a: unknown[]) => unknown; _writev: (...a: unknown[]) => unknown } }).stream;
  const { _write, _writev } = stream;
  let writes = 0;
  stream._write = function (...a: unknown[]) { writes++; return _write.apply(this, a); };
  stream._writev = function (...a: unknown[]) { writes++; return _writev.apply(this, a); };
  try {
    return { result: await fn(), writes };
  } finally {
    stream._write = _write;
    stream._writev = _writev;
  }
}

async function waitingIds(address: string): Promise<string[]> {
  return withQueue(address, async (q) => (await q.getJobs(['wait'], 0, -1)).map((j) => (j.data as { id: string }).id).sort());
}

test('50 sends to one queue in one turn are stored, each once, with one socket write', async () => {
  const address = 'queue:ba.many';
  await queues!.depth(address); // opened and its scripts loaded before the writes are counted
  const ids = Array.from({ length: 50 }, (_, i) => `m-${String(i).padStart(2, '0')}`);
  const { result, writes } = await countWrites(redis!, () => Promise.all(ids.map((id) => queues!.send(systemMessage({ id, to: address, body: { id } })))));
  assert.deepEqual(result.map((r) => r.duplicate), ids.map(() => false));
  assert.equal(writes, 1, 'the 50 adds leave in one write');
  assert.deepEqual(await waitingIds(address), ids);
});

test('a repeat of an id in the same batch is a duplicate: stored once, the repeat answered as such', async () => {
  const address = 'queue:ba.dup';
  const sends = ['x', 'y', 'x', 'z', 'y'].map((id) => queues!.send(systemMessage({ id, to: address, body: { id } })));
  const results = await Promise.all(sends);
  assert.deepEqual(results.map((r) => [r.id, r.duplicate]), [['x', false], ['y', false], ['x', true], ['z', false], ['y', true]]);
  assert.deepEqual(await waitingIds(address), ['x', 'y', 'z']);
});

test("every send takes BullMQ's own job id (no id of ours for BullMQ to check); a repeat is stored once and told, a flow's too", async () => {
  const address = 'queue:ba.flow';
  await queues!.depth(address);
  const fromFlow = (id: string) => ({ ...systemMessage({ id, to: address, body: { id } }), sender: { kind: 'flow' as const, name: 'orders' } });
  const calls = async () => Number(/calls=(\d+)/.exec((await redis!.info('commandstats')).split('\n').find((l) => l.startsWith('cmdstat_exists:')) ?? '')?.[1] ?? 0);
  const before = await calls();
  // A replayed run sends the same ids again: in the same batch and in a later one.
  const first = await Promise.all(['i1:0', 'i1:2', 'i1:0'].map((id) => queues!.send(fromFlow(id))));
  const later = await queues!.send(fromFlow('i1:2'));
  assert.deepEqual([...first, later].map((r) => r.duplicate), [false, false, true, true]);
  assert.deepEqual(await waitingIds(address), ['i1:0', 'i1:2']);
  const again = await queues!.send(systemMessage({ id: 'sys-1', to: address, body: {} }));
  const repeat = await queues!.send(systemMessage({ id: 'sys-1', to: address, body: {} }));
  assert.deepEqual([again.duplicate, repeat.duplicate], [false, true]);
  assert.equal(await calls(), before, 'no EXISTS: BullMQ checks only ids it was given');
  const ids = await withQueue(address, async (q) => (await q.getJobs(['wait'], 0, -1)).map((j) => j.id!));
  assert.ok(ids.every((id) => /^\d+$/.test(id)), `BullMQ numbered the jobs itself: ${ids}`);
});

test("the dedup key is BullMQ's own (`<queue>:de:<id>`, the window as TTL): a key written through BullMQ's deduplication option is honoured", async () => {
  const address = 'queue:ba.compat';
  await withQueue(address, async (q) => {
    // As an earlier version of Switchboard wrote it: through BullMQ's own option.
    const old = systemMessage({ id: 'old-1', to: address, body: {} });
    const job = await q.add('m', { id: 'old-1' }, { deduplication: { id: dedupId(old), ttl: 60_000 } });
    assert.equal((await queues!.send(old)).duplicate, true, 'the key written by BullMQ catches the repeat');
    const fresh = systemMessage({ id: 'new-1', to: address, body: {} });
    assert.equal((await queues!.send(fresh)).duplicate, false);
    const ttl = await redis!.pttl(`${q.keys.de}:${dedupId(fresh)}`);
    assert.ok(ttl > 55_000 && ttl <= 60_000, `the key lives for the window (dedupTtl 60 s): ${ttl} ms`);
    assert.deepEqual((await q.getJobs(['wait'], 0, -1)).map((j) => j.id).sort(), [job.id, String(Number(job.id) + 1)].sort(), 'the old message and the new one, each once');
  });
});

test('a refused add writes nothing: a queue at its depth limit keeps no dedup key, so the same message is taken once there is room', async () => {
  const address = 'queue:ba.full';
  const limited = queueEndpoint([{ pattern: parsePattern(address), maxDepth: 1 }]);
  try {
    assert.equal((await limited.send(systemMessage({ id: 'f1', to: address, body: {} }))).duplicate, false);
    const second = systemMessage({ id: 'f2', to: address, body: {} });
    await assert.rejects(limited.send(second), /the queue is full \(1 messages, maxDepth 1\)/);
    await withQueue(address, async (q) => {
      assert.equal(await redis!.exists(`${q.keys.de}:${dedupId(second)}`), 0, 'no dedup key for a message not stored');
      const [job] = await q.getJobs(['wait'], 0, -1);
      await job!.remove();
    });
    assert.equal((await limited.send(second)).duplicate, false, 'sent again when there is room: stored, not taken for a repeat');
  } finally {
    await limited.close();
  }
});

test('an add that fails inside the script (a queue key of the wrong type) leaves no dedup key: the message is taken when it is sent again', async () => {
  const address = 'queue:ba.broken';
  await withQueue(address, async (q) => {
    await redis!.set(q.keys.wait!, 'not a list'); // BullMQ's LPUSH onto it fails: WRONGTYPE
    const m = systemMessage({ id: 'b1', to: address, body: {} });
    await assert.rejects(queues!.send(m), /WRONGTYPE/);
    assert.equal(await redis!.exists(`${q.keys.de}:${dedupId(m)}`), 0, 'the failed add left no dedup key');
    await redis!.del(q.keys.wait!);
    assert.equal((await queues!.send(m)).duplicate, false, 'sent again: stored, not taken for a repeat');
    assert.deepEqual(await waitingIds(address), ['b1']);
  });
});

test('an add that cannot be stored fails only its own caller; the rest of its batch is stored', async () => {
  const q = new Queue(bullQueueName('queue:ba.partial'), { connection: redis!, prefix: PREFIX });
  try {
    const adds = new BatchedAdds(redis!);
    const opts = (jobId: string) => ({ jobId, removeOnComplete: true });
    const outcomes = await Promise.allSettled([
      adds.add(q, { n: 1 }, opts('mj1'), {}),
      adds.add(q, { n: 2n }, opts('mj2'), {}), // a BigInt: not JSON, never written
      adds.add(q, { n: 3 }, opts('mj3'), {}),
    ]);
    assert.deepEqual(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'fulfilled']);
    assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /BigInt/);
    assert.deepEqual((await q.getJobs(['wait'], 0, -1)).map((j) => j.id).sort(), ['mj1', 'mj3']);
  } finally {
    await q.close();
  }
});

test('adds to different queues in one turn each reach their own queue', async () => {
  const results = await Promise.all(['queue:ba.one', 'queue:ba.two', 'queue:ba.one'].map((to, i) => queues!.send(systemMessage({ id: `k${i}`, to, body: {} }))));
  assert.equal(results.filter((r) => r.duplicate).length, 0);
  assert.deepEqual(await waitingIds('queue:ba.one'), ['k0', 'k2']);
  assert.deepEqual(await waitingIds('queue:ba.two'), ['k1']);
});

test('corkForTurn: the commands of one turn leave in one write, in order, each with its own reply; the next turn writes anew', async () => {
  const r = redis!;
  const { result, writes } = await countWrites(r, async () => {
    corkForTurn(r);
    const first = await Promise.all([r.set('sbba:c1', 'a'), r.incr('sbba:n'), r.get('sbba:c1'), r.incr('sbba:n')]);
    // A later turn: corked again, its own write.
    await new Promise((resolve) => setImmediate(resolve));
    corkForTurn(r);
    const second = await Promise.all([r.incr('sbba:n'), r.get('sbba:missing')]);
    return [first, second];
  });
  assert.deepEqual(result, [['OK', 1, 'a', 2], [3, null]]);
  assert.equal(writes, 2, 'one write per turn');
});

test('corkForTurn: without it each command is its own write (what the count above is measured against)', async () => {
  const r = redis!;
  const { writes } = await countWrites(r, () => Promise.all([r.incr('sbba:m'), r.incr('sbba:m'), r.incr('sbba:m')]));
  assert.equal(writes, 3);
});

test('corkForTurn on a client that is not connected does nothing; its commands wait for the connection as before', async () => {
  const r = redis!.duplicate({ lazyConnect: true });
  try {
    corkForTurn(r); // not connected: no stream to cork
    const reply = r.incr('sbba:lazy');
    await r.connect().catch(() => undefined);
    assert.equal(await reply, 1);
  } finally {
    r.disconnect();
  }
});

test('a receive of 100 takes them 1, 2, 4, … at a time: all 100 in queue order, each once, in a handful of writes instead of 200', async () => {
  const address = 'queue:ba.receive';
  const ids = Array.from({ length: 100 }, (_, i) => `r-${String(i).padStart(3, '0')}`);
  for (const id of ids) await queues!.send(systemMessage({ id, to: address, body: { id } }));
  await queues!.receive('queue:ba.warm', 1, 1000); // the reader's scripts loaded before counting
  const { result, writes } = await countWrites(redis!, () => queues!.receive(address, 150, 30_000));
  assert.deepEqual(result.map((m) => m.id), ids, 'every message once, in the order sent');
  assert.equal(new Set(result.map((m) => m.lease)).size, 100, 'each with its own lease');
  // Rounds of 1, 2, 4, 8, 16, 32, 64 (the last one short: 37 of 64), then one write for the leases' locks.
  assert.ok(writes <= 10, `${writes} writes`);
  assert.deepEqual(await queues!.receive(address, 10, 30_000), [], 'nothing left to hand out while the leases live');
  const acked = await queues!.ack(address, result.map((m) => m.lease));
  assert.equal(acked.acked, 100);
});
