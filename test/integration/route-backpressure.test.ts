/**
 * DESIGN §9 backpressure: "when a destination is down the route stops pulling (credit 0) and the
 * messages wait at the source", and §2: nothing lost, nothing duplicated.
 *
 * A route queue:in.a → queue:out.b where out.b is bounded (maxDepth 20): with nobody consuming
 * out.b, every send to it becomes DestinationUnavailable once it is full, the route holds its
 * in-flight messages and stops pulling, and the rest waits in queue:in.a. Draining out.b lets the
 * route resume; at the end every id arrived exactly once and nothing is dead-lettered.
 *
 * Real redis-server (AOF, fsync always), in-process gateway; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { DestinationUnavailable } from '../../src/core/errors.ts';
import { createMessage } from '../../src/core/message.ts';
import { startTestGateway, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, dlqDepth, queueState, receiveBatch, sendAll, type QueueState } from '../support/counting-sink.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FROM = 'queue:in.a';
const TO = 'queue:out.b';
const N = 300;
const MAX_DEPTH = 20;
const CONCURRENCY = 10;
/** Drain out.b in small batches, so the route refills it between them. */
const DRAIN = { max: 50, leaseSeconds: 120 };

/** A bounded queue many senders race for at once. */
const RACED = 'queue:raced.c';
const RACED_DEPTH = 25;

let redis: TestRedis | undefined;
let gw: Gateway | undefined;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s', limits: [{ address: TO, maxDepth: MAX_DEPTH }, { address: RACED, maxDepth: RACED_DEPTH }] },
    routes: [{ from: FROM, to: TO, concurrency: CONCURRENCY }],
    // The router logs every refused send at warn (one line per held message per retry): quiet here.
    log: { level: 'error' },
  });
});

after(async () => {
  await gw?.stop().catch(() => {});
  await redis?.dispose();
});

test('a full destination stops the route pulling; draining it resumes the route with nothing lost or duplicated', async () => {
  const base = gw!.url;
  const ids = Array.from({ length: N }, (_, i) => `bp-${String(i).padStart(4, '0')}`);
  await sendAll(base, FROM, ids, { message: (id) => ({ body: { id } }) });

  // Backpressure: out.b fills up to about maxDepth and the route stops pulling from in.a.
  // "Settled" = two polls 1 s apart see the same waiting count in in.a and out.b.
  let previous = '';
  let settled: { from: QueueState; to: QueueState } | undefined;
  await waitFor(async () => {
    const s = { from: await queueState(base, FROM), to: await queueState(base, TO) };
    const key = JSON.stringify(s);
    const same = key === previous && s.to.depth >= MAX_DEPTH;
    previous = key;
    if (same) settled = s;
    else await new Promise((r) => setTimeout(r, 1000));
    return same;
  }, 60_000, 'out.b to fill up and the route to stop pulling');
  const { from, to } = settled!;
  assert.ok(to.depth >= MAX_DEPTH && to.depth <= MAX_DEPTH + CONCURRENCY, `out.b depth ${to.depth}: expected about maxDepth ${MAX_DEPTH} (at most ${MAX_DEPTH + CONCURRENCY})`);
  assert.equal(to.inFlight, 0, 'nobody consumes out.b yet');
  assert.ok(from.depth > 0, `the rest should wait in in.a, which holds ${from.depth}`);
  assert.ok(from.inFlight <= CONCURRENCY, `in.a has ${from.inFlight} in flight, more than the route's concurrency ${CONCURRENCY}`);
  assert.equal(from.depth + from.inFlight + to.depth, N, `every message is somewhere: in.a ${JSON.stringify(from)}, out.b ${JSON.stringify(to)}`);

  // And it stays stopped: a few more polls while nobody drains see nothing new pulled.
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = { from: await queueState(base, FROM), to: await queueState(base, TO) };
    assert.equal(now.from.depth, from.depth, `the route kept pulling from in.a while out.b was full: ${JSON.stringify(now)}`);
    assert.ok(now.to.depth <= MAX_DEPTH + CONCURRENCY, `out.b grew past the bound: ${JSON.stringify(now)}`);
  }

  // Drain out.b; the route resumes as room appears. Stop when all N were received and both
  // queues are empty with nothing in flight.
  const counts = new Map<string, number>();
  let received = 0;
  await waitFor(async () => {
    const n = (await receiveBatch(base, TO, counts, DRAIN)).length;
    received += n;
    if (n > 0) return false;
    const [a, b] = [await queueState(base, FROM), await queueState(base, TO)];
    return received >= N && a.depth === 0 && a.inFlight === 0 && b.depth === 0 && b.inFlight === 0;
  }, 120_000, `out.b to be drained (received ${received} so far)`).catch((err: Error) => {
    throw new Error(`${err.message}; received ${received}, distinct ${counts.size}`);
  });

  // Anything arriving late would be a duplicate: one more look after the route's longest hold pause.
  await new Promise((r) => setTimeout(r, 1500));
  received += (await receiveBatch(base, TO, counts, DRAIN)).length;

  assertExactlyOnce(ids, counts);
  assert.equal(received, N);
  assert.deepEqual(await queueState(base, FROM), { depth: 0, inFlight: 0 });
  assert.deepEqual(await queueState(base, TO), { depth: 0, inFlight: 0 });
  assert.equal(await dlqDepth(base, FROM), 0, 'dead letters in in.a');
  assert.equal(await dlqDepth(base, TO), 0, 'dead letters in out.b');
});

test('200 senders racing for the last places of a queue with maxDepth 25: exactly 25 are stored, the rest refused as full, and room made later is taken exactly', async () => {
  const base = gw!.url;
  const caller = { principal: { kind: 'system' as const, name: 'race-test' }, door: 'system' as const };
  const send = (id: string) => gw!.router.send(createMessage({ to: RACED, id, body: { id } }, caller.principal), caller);
  // All in one turn: every add is asked for before any is answered, as under a burst.
  const outcomes = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => send(`race-${i}`)));
  const stored = outcomes.filter((o) => o.status === 'fulfilled');
  const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
  assert.equal(stored.length, RACED_DEPTH, `${stored.length} stored: the limit was overshot or not reached`);
  assert.equal(refused.length, 200 - RACED_DEPTH);
  for (const r of refused) {
    assert.ok(r.reason instanceof DestinationUnavailable, `refused with ${String(r.reason)}`);
    assert.match((r.reason as Error).message, /queue:raced\.c cannot accept messages now: the queue is full \(25 messages, maxDepth 25\); try again later/);
  }
  assert.deepEqual(await queueState(base, RACED), { depth: RACED_DEPTH, inFlight: 0 });

  // Five taken off (received and acknowledged): five more of another burst fit, no more.
  const counts = new Map<string, number>();
  assert.equal((await receiveBatch(base, RACED, counts, { max: 5, leaseSeconds: 60 })).length, 5);
  const second = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => send(`again-${i}`)));
  assert.equal(second.filter((o) => o.status === 'fulfilled').length, 5);
  assert.deepEqual(await queueState(base, RACED), { depth: RACED_DEPTH, inFlight: 0 });
  // A repeat of a stored id is answered as the duplicate it is, full queue or not (a sender
  // retrying a message it was not sure of gets its acknowledgement, not a "try later" forever),
  // and stores nothing; a new id is still refused as full.
  const stat = outcomes.findIndex((o) => o.status === 'fulfilled');
  assert.equal((await send(`race-${stat}`)).duplicate, true);
  await assert.rejects(send('race-new'), DestinationUnavailable);
  assert.deepEqual(await queueState(base, RACED), { depth: RACED_DEPTH, inFlight: 0 });
});
