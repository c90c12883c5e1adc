/**
 * Graceful stop (gateway.ts: "routes hand back or finish in-flight messages, then Redis"): SIGTERM
 * to a `switchboard start` process while its route queue:in.a → queue:out.b moves messages must
 * exit with code 0 and leave nothing locked in flight; a new process finishes the work and every
 * id arrives exactly once (DESIGN §2), nothing dead-lettered.
 *
 * Also while the route is holding messages for a full destination (DESIGN §9 backpressure): the
 * held messages go back to in.a rather than being lost, failed or stuck.
 *
 * Real redis-server; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import { waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, dlqDepth, queueState, receiveBatch, sendAll } from '../support/counting-sink.ts';
import { GatewayFleet, prefixFor, sleep } from '../support/fleet.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

const FROM = 'queue:in.a';
const TO = 'queue:out.b';
const QUEUES = { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' };

let redis: TestRedis | undefined;
const fleet = new GatewayFleet(() => redis!.url);

before(async () => {
  redis = await startTestRedis();
});

after(async () => {
  await fleet.stopAll();
  await redis?.dispose();
});

const startGw = (prefix: string) => fleet.start(prefix, { log: { level: 'error' } });

test('SIGTERM mid-route: exit code 0, nothing left locked, a new gateway finishes with every id exactly once', { timeout: 240_000 }, async (t: TestContext) => {
  const N = 2000;
  const prefix = prefixFor('term');
  const ids = Array.from({ length: N }, (_, i) => `term-${String(i).padStart(5, '0')}`);
  const routeConfig = { queues: QUEUES, routes: [{ from: FROM, to: TO, concurrency: 50 }] };

  // A gateway without routes on the same prefix: loads over HTTP and observes throughout.
  const observer = await startGw(prefix);
  await sendAll(observer.url, FROM, ids);

  const first = await fleet.spawn(prefix, routeConfig);
  // Wait until the route is moving (some but not all in out.b), polling as fast as Redis answers.
  let moved = 0;
  for (const deadline = Date.now() + 60_000; moved < N / 5; await sleep(5)) {
    moved = (await observer.router.browse(TO, 1, SYSTEM_CALLER)).depth;
    if (moved >= N) throw new Error(`the route moved all ${N} messages before SIGTERM could be sent: raise N`);
    if (Date.now() > deadline) throw new Error(`the route did not start moving within 60 s (out.b depth ${moved})`);
  }
  const code = await first.kill('SIGTERM');
  const afterExit = { from: await queueState(observer.url, FROM), to: await queueState(observer.url, TO) };
  t.diagnostic(`SIGTERM with out.b at ≥${moved}; exit code ${code}; right after exit: ${JSON.stringify(afterExit)}`);
  assert.equal(code, 0, `exit code after SIGTERM; output:\n${first.output()}`);
  assert.equal(afterExit.from.inFlight, 0, `in.a messages still locked after a graceful stop (they wait for the stalled check): ${JSON.stringify(afterExit)}`);
  assert.equal(afterExit.from.depth + afterExit.to.depth, N, `after a graceful stop every message is in in.a or out.b: ${JSON.stringify(afterExit)}`);
  assert.ok(afterExit.from.depth > 0, `SIGTERM was not mid-route: ${JSON.stringify(afterExit)}`);

  const second = await fleet.spawn(prefix, routeConfig);
  await waitFor(async () => {
    const s = await queueState(second.url, FROM);
    return s.depth === 0 && s.inFlight === 0;
  }, 120_000, 'in.a to be empty with nothing in flight').catch(async (err: Error) => {
    throw new Error(`${err.message}: in.a ${JSON.stringify(await queueState(second.url, FROM))}, out.b ${JSON.stringify(await queueState(second.url, TO))}\n--- second gateway output:\n${second.output()}`);
  });

  const counts = new Map<string, number>();
  while ((await receiveBatch(second.url, TO, counts)).length > 0);
  const dlq = { from: await dlqDepth(second.url, FROM), to: await dlqDepth(second.url, TO) };
  assertExactlyOnce(ids, counts, `; dead letters ${JSON.stringify(dlq)}`);
  assert.deepEqual(dlq, { from: 0, to: 0 }, 'dead letters');
  assert.deepEqual(await queueState(second.url, FROM), { depth: 0, inFlight: 0 });
  assert.deepEqual(await queueState(second.url, TO), { depth: 0, inFlight: 0 });
  assert.equal(await second.kill('SIGTERM'), 0, `exit code of the second gateway; output:\n${second.output()}`);
  await observer.stop();
});

test('SIGTERM while the route holds messages for a full destination: exit code 0, held messages handed back, every id exactly once', { timeout: 240_000 }, async (t: TestContext) => {
  const N = 300;
  const MAX_DEPTH = 20;
  const CONCURRENCY = 10;
  const prefix = prefixFor('termbp');
  const ids = Array.from({ length: N }, (_, i) => `termbp-${String(i).padStart(5, '0')}`);
  const routeConfig = {
    queues: { ...QUEUES, limits: [{ address: TO, maxDepth: MAX_DEPTH }] },
    routes: [{ from: FROM, to: TO, concurrency: CONCURRENCY }],
  };

  const observer = await startGw(prefix);
  await sendAll(observer.url, FROM, ids);

  const first = await fleet.spawn(prefix, routeConfig);
  // Held: out.b full and the route's slots busy with messages it cannot deliver.
  await waitFor(async () => {
    const [a, b] = [await queueState(observer.url, FROM), await queueState(observer.url, TO)];
    return b.depth >= MAX_DEPTH && a.inFlight === CONCURRENCY;
  }, 60_000, 'out.b to fill up and the route to hold its messages');
  const code = await first.kill('SIGTERM');
  const afterExit = { from: await queueState(observer.url, FROM), to: await queueState(observer.url, TO) };
  t.diagnostic(`exit code ${code}; right after exit: ${JSON.stringify(afterExit)}`);
  assert.equal(code, 0, `exit code after SIGTERM; output:\n${first.output()}`);
  assert.equal(afterExit.from.inFlight, 0, `held in.a messages still locked after a graceful stop: ${JSON.stringify(afterExit)}`);
  assert.equal(afterExit.from.depth + afterExit.to.depth, N, `after a graceful stop every message is in in.a or out.b: ${JSON.stringify(afterExit)}`);
  assert.equal(await dlqDepth(observer.url, FROM), 0, 'held messages were dead-lettered by the stop');

  // A new gateway resumes; drain out.b until everything has arrived and both queues are empty.
  const second = await fleet.spawn(prefix, routeConfig);
  const counts = new Map<string, number>();
  let received = 0;
  await waitFor(async () => {
    const n = (await receiveBatch(second.url, TO, counts, { max: 50 })).length;
    received += n;
    if (n > 0) return false;
    const [a, b] = [await queueState(second.url, FROM), await queueState(second.url, TO)];
    return received >= N && a.depth === 0 && a.inFlight === 0 && b.depth === 0 && b.inFlight === 0;
  }, 120_000, 'the route to resume and out.b to be drained').catch((err: Error) => {
    throw new Error(`${err.message}; received ${received}, distinct ${counts.size}\n--- second gateway output:\n${second.output()}`);
  });
  await sleep(1500); // a late arrival would be a duplicate
  received += (await receiveBatch(second.url, TO, counts)).length;

  const dlq = { from: await dlqDepth(second.url, FROM), to: await dlqDepth(second.url, TO) };
  assertExactlyOnce(ids, counts, `; dead letters ${JSON.stringify(dlq)}`);
  assert.equal(received, N);
  assert.deepEqual(dlq, { from: 0, to: 0 }, 'dead letters');
  assert.equal(await second.kill('SIGTERM'), 0, `exit code of the second gateway; output:\n${second.output()}`);
  await observer.stop();
});
