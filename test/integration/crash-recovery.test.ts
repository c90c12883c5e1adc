/**
 * DESIGN §2 and §9 under crashes: at-least-once on every hop plus dedup on every ingress must give
 * exactly once even when a process dies mid-route.
 *
 * 1. kill -9 of a gateway process (`switchboard start`) while its route queue:in.a → queue:out.b
 *    moves 2,000 messages; a new process on the same Redis and prefix finishes the work.
 * 2. kill -9 of Redis itself (AOF, fsync always) while an in-process gateway's route moves 1,000
 *    messages; Redis comes back on the same port and data, the gateway reconnects by itself. Run
 *    twice: a quick restart, and an outage longer than the lock timeout (every in-flight lock
 *    expires, so the messages are redelivered and the destination's dedup must catch them).
 *
 * Both end by draining out.b with peek-lock receive/ack and counting by id: every id exactly
 * once, no unknown ids, no dead letters. Real redis-server; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import { waitFor } from '../support/gateway.ts';
import type { Gateway } from '../../src/gateway.ts';
import { assertExactlyOnce, dlqDepth, drain, duplicatesCaught, queueState, queueStateIfUp, sendAll } from '../support/counting-sink.ts';
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

/** An in-process gateway on `prefix`; observers (no routes) log only fatal errors, routing ones errors too. */
const startGw = (prefix: string, extra: Record<string, unknown> = {}) => fleet.start(prefix, { log: { level: extra.routes ? 'error' : 'fatal' }, ...extra });

/**
 * Polls out.b (through `observer`, a gateway without routes) as fast as it answers until the
 * route has moved some but not all messages. Fails clearly if the route finished first.
 */
async function waitUntilMoving(observer: Gateway, n: number, atLeast: number): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { depth } = await observer.router.browse(TO, 1, SYSTEM_CALLER);
    if (depth >= n) throw new Error(`the route moved all ${n} messages before the fault could be injected: raise N`);
    if (depth >= atLeast) return depth;
    if (Date.now() > deadline) throw new Error(`the route did not start moving within 60 s (out.b depth ${depth})`);
    await sleep(5);
  }
}

test('kill -9 of the gateway mid-route: a new process finishes, every one of 2,000 ids exactly once', { timeout: 240_000 }, async (t: TestContext) => {
  const N = 2000;
  const prefix = prefixFor('crash');
  const ids = Array.from({ length: N }, (_, i) => `crash-${String(i).padStart(5, '0')}`);
  const routeConfig = { queues: QUEUES, routes: [{ from: FROM, to: TO, concurrency: 50 }] };

  // A gateway without routes on the same prefix: the HTTP door for the load, and an observer
  // that keeps answering while the routing processes die and start.
  const observer = await startGw(prefix);
  await sendAll(observer.url, FROM, ids);
  assert.deepEqual(await queueState(observer.url, FROM), { depth: N, inFlight: 0 });

  const first = await fleet.spawn(prefix, routeConfig);
  const movedBeforeKill = await waitUntilMoving(observer, N, N / 5);
  const code = await first.kill('SIGKILL');
  const atKill = { from: await queueState(observer.url, FROM), to: await queueState(observer.url, TO) };
  t.diagnostic(`killed gateway pid ${first.pid} (exit ${code}) with out.b at ≥${movedBeforeKill}; right after: ${JSON.stringify(atKill)}`);
  assert.ok(atKill.to.depth < N && atKill.from.depth + atKill.from.inFlight > 0, `the kill was not mid-route: ${JSON.stringify(atKill)}`);

  const second = await fleet.spawn(prefix, routeConfig);
  await waitFor(async () => {
    const s = await queueState(second.url, FROM);
    return s.depth === 0 && s.inFlight === 0;
  }, 120_000, 'in.a to be empty with nothing in flight after the restart').catch(async (err: Error) => {
    throw new Error(`${err.message}: in.a ${JSON.stringify(await queueState(second.url, FROM))}, out.b ${JSON.stringify(await queueState(second.url, TO))}\n--- second gateway output:\n${second.output()}`);
  });

  t.diagnostic(`redeliveries the restarted gateway caught as duplicates at out.b: ${await duplicatesCaught(second.url)}`);

  const counts = new Map<string, number>();
  await drain(second.url, TO, counts).catch((err: Error) => {
    const cause = (err as { cause?: unknown }).cause;
    throw new Error(`drain of out.b through the restarted gateway (pid ${second.pid}) failed after ${[...counts.values()].reduce((a, b) => a + b, 0)} messages: ${err.message}${cause ? ` (${String(cause)})` : ''}\n--- its output:\n${second.output()}`);
  });
  const dlq = { from: await dlqDepth(second.url, FROM), to: await dlqDepth(second.url, TO) };
  assertExactlyOnce(ids, counts, `; dead letters ${JSON.stringify(dlq)}; state at kill ${JSON.stringify(atKill)}`);
  assert.deepEqual(dlq, { from: 0, to: 0 }, 'dead letters');
  assert.deepEqual(await queueState(second.url, FROM), { depth: 0, inFlight: 0 });
  assert.deepEqual(await queueState(second.url, TO), { depth: 0, inFlight: 0 });
  await second.kill('SIGTERM');
  await observer.stop();
});

for (const { label, downMs } of [
  { label: 'a quick restart (down 0.5 s)', downMs: 500 },
  { label: 'down longer than the lock timeout (4 s > 3 s: every in-flight lock expires)', downMs: 4000 },
]) {
  test(`kill -9 of Redis mid-route, ${label}: the gateway reconnects by itself, every one of 1,000 ids exactly once`, { timeout: 240_000 }, async (t: TestContext) => {
    const N = 1000;
    const prefix = prefixFor('rkill');
    const ids = Array.from({ length: N }, (_, i) => `rkill-${String(i).padStart(5, '0')}`);

    const observer = await startGw(prefix);
    await sendAll(observer.url, FROM, ids);
    assert.deepEqual(await queueState(observer.url, FROM), { depth: N, inFlight: 0 });

    const routing = await startGw(prefix, { queues: QUEUES, routes: [{ from: FROM, to: TO, concurrency: 50 }] });
    const movedBeforeKill = await waitUntilMoving(observer, N, N / 5);
    const pid = redis!.pid;
    await redis!.kill();
    t.diagnostic(`killed redis-server pid ${pid} with out.b at ≥${movedBeforeKill}`);
    await sleep(downMs);
    await redis!.restart();
    t.diagnostic(`redis-server restarted as pid ${redis!.pid} on the same port and data after ${downMs} ms`);

    await waitFor(async () => {
      const s = await queueStateIfUp(routing.url, FROM);
      return s !== undefined && s.depth === 0 && s.inFlight === 0;
    }, 120_000, 'in.a to be empty with nothing in flight after the Redis restart').catch(async (err: Error) => {
      throw new Error(`${err.message}: in.a ${JSON.stringify(await queueStateIfUp(routing.url, FROM))}, out.b ${JSON.stringify(await queueStateIfUp(routing.url, TO))}`);
    });

    t.diagnostic(`redeliveries the gateway caught as duplicates at out.b: ${await duplicatesCaught(routing.url)}`);

    const counts = new Map<string, number>();
    await drain(routing.url, TO, counts);
    const dlq = { from: await dlqDepth(routing.url, FROM), to: await dlqDepth(routing.url, TO) };
    assertExactlyOnce(ids, counts, `; dead letters ${JSON.stringify(dlq)}`);
    assert.deepEqual(dlq, { from: 0, to: 0 }, 'dead letters');
    assert.deepEqual(await queueState(routing.url, FROM), { depth: 0, inFlight: 0 });
    assert.deepEqual(await queueState(routing.url, TO), { depth: 0, inFlight: 0 });
    await routing.stop();
    await observer.stop();
  });
}
