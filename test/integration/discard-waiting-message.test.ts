// Discarding a waiting message (the console's "discard", issue 18.3) against a real Redis and
// BullMQ: the message is gone for good; one a consumer holds is never discarded (it is delivered
// and acked as usual); an id that waits in another queue is not found here and stays there; and
// with consumers taking messages at the same moment as discards run, every message is either
// discarded or delivered, never both and never neither.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { discardWaitingJob } from '../../src/endpoints/queue/discard-waiting.ts';
import { bullQueueName } from '../../src/endpoints/queue/names.ts';
import { MessageInFlight, NotFound } from '../../src/core/errors.ts';
import { api, enc, startTestGateway } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
});

after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

const send = async (to: string, id: string) => assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { id, to, body: { id } } })).status, 202);
const waiting = async (address: string) => (await gw.router.browse(address, 1000, SYSTEM_CALLER)).messages.map((m) => m.id);

test('a waiting message is discarded for good; one a consumer holds is not; an id of another queue is not found and stays', { timeout: 60_000 }, async () => {
  const Q = 'queue:discard.a';
  const OTHER = 'queue:discard.b';
  for (const id of ['a1', 'a2', 'a3']) await send(Q, id);
  await send(OTHER, 'b1');

  await gw.router.discardWaiting(Q, 'a2', SYSTEM_CALLER);
  assert.deepEqual((await waiting(Q)).sort(), ['a1', 'a3']);
  await assert.rejects(gw.router.discardWaiting(Q, 'a2', SYSTEM_CALLER), NotFound, 'discarded once, it is not there a second time');

  // Another queue's message, named through this queue: not found, and still waiting where it is.
  await assert.rejects(gw.router.discardWaiting(Q, 'b1', SYSTEM_CALLER), (err: unknown) => err instanceof NotFound && /no message 'b1' waiting in queue:discard\.a/.test((err as Error).message));
  assert.deepEqual(await waiting(OTHER), ['b1']);

  // A consumer holds a1 (peek-lock): the discard is refused and the consumer's ack still works.
  const [held] = await gw.router.receive(Q, 1, 30_000, SYSTEM_CALLER);
  assert.equal(held!.id, 'a1');
  await assert.rejects(gw.router.discardWaiting(Q, 'a1', SYSTEM_CALLER), (err: unknown) => err instanceof MessageInFlight && err.status === 409 && /being delivered right now/.test((err as Error).message));
  assert.equal((await gw.router.ack(Q, [held!.lease], SYSTEM_CALLER)).acked, 1, 'the held message was delivered and acknowledged normally');
  assert.deepEqual(await waiting(Q), ['a3']);

  // Only queue: addresses, and not their dead letters through dlq:.
  await assert.rejects(gw.router.discardWaiting(`dlq:${Q}`, 'a3', SYSTEM_CALLER), /cannot be discarded here/);
  assert.deepEqual(await waiting(Q), ['a3']);
});

test('consumers taking messages while discards run: each message is discarded or delivered, never both, never lost', { timeout: 120_000 }, async () => {
  const Q = 'queue:discard.race';
  const ids = Array.from({ length: 200 }, (_, i) => `r${i}`);
  for (const id of ids) await send(Q, id);

  const received = new Set<string>();
  const discarded = new Set<string>();
  const refused = new Map<string, string>();
  let discarding = true;
  const consumer = (async () => {
    for (;;) {
      const batch = await gw.router.receive(Q, 5, 30_000, SYSTEM_CALLER);
      for (const m of batch) {
        assert.ok(!received.has(m.id), `${m.id} delivered twice`);
        received.add(m.id);
      }
      if (batch.length > 0) assert.equal((await gw.router.ack(Q, batch.map((m) => m.lease), SYSTEM_CALLER)).acked, batch.length);
      else if (!discarding) return;
      else await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // Discards from the end of the queue backwards, so they meet the consumer in the middle.
  const order = [...ids].reverse();
  await Promise.all(Array.from({ length: 4 }, async (_, lane) => {
    for (let i = lane; i < order.length; i += 4) {
      const id = order[i]!;
      try {
        await gw.router.discardWaiting(Q, id, SYSTEM_CALLER);
        discarded.add(id);
      } catch (err) {
        assert.ok(err instanceof MessageInFlight || err instanceof NotFound, `unexpected ${(err as Error).message}`);
        refused.set(id, (err as Error).name);
      }
    }
  }));
  discarding = false;
  await consumer;

  for (const id of discarded) assert.ok(!received.has(id), `${id} was discarded and delivered`);
  for (const id of ids) assert.ok(discarded.has(id) || received.has(id), `${id} was neither discarded nor delivered`);
  for (const id of refused.keys()) assert.ok(received.has(id), `${id} was refused as ${refused.get(id)} but never delivered`);
  assert.ok(discarded.size > 0 && received.size > 0, `both sides won some (discarded ${discarded.size}, delivered ${received.size})`);
  const stats = await gw.router.queueStats(Q, SYSTEM_CALLER);
  assert.deepEqual([stats.depth, stats.inFlight, stats.deadLetters], [0, 0, 0]);
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc(Q)}`, { user: 'ops' })).body.depth, 0);
});

test('the atomic step refuses a message taken by a consumer even once its lock has lapsed, where BullMQ\'s removeJob alone would delete it', { timeout: 60_000 }, async () => {
  const Q = 'queue:discard.lapsed';
  await send(Q, 'l1');
  await send(Q, 'l2');
  const client = new Redis(redis.url);
  const name = bullQueueName(Q);
  // The gateway's key prefix (random per test gateway), read from the queue's own keys.
  const [, keys] = await client.scan('0', 'MATCH', `*:${name}:meta`, 'COUNT', 10_000);
  const prefix = keys[0]!.slice(0, keys[0]!.indexOf(`:${name}:meta`));
  const q = new Queue(name, { connection: client, prefix });
  try {
    const taken = await gw.router.receive(Q, 2, 30_000, SYSTEM_CALLER);
    assert.deepEqual(taken.map((m) => m.id), ['l1', 'l2']);
    const jobIds = taken.map((m) => m.lease.slice(0, m.lease.indexOf('.')));
    // Both locks lapse (a consumer that stalled): the jobs are active without a lock.
    for (const id of jobIds) assert.equal(await client.del(q.toKey(`${id}:lock`)), 1);
    assert.equal(await discardWaitingJob(client, q as never, jobIds[0]!), 'not-waiting');
    assert.ok(await q.getJob(jobIds[0]!), 'the message is still there');
    // BullMQ's own remove, without the guard, deletes such a job: what the guard is there for.
    await (await q.getJob(jobIds[1]!))!.remove();
    assert.equal(await q.getJob(jobIds[1]!), undefined);
  } finally {
    await q.close();
    client.disconnect();
  }
});
