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
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, spawnGateway, startTestGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FROM = 'queue:in.a';
const TO = 'queue:out.b';
const QUEUES = { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' };

let redis: TestRedis | undefined;
const gateways: Gateway[] = [];
const processes: GatewayProcess[] = [];

before(async () => {
  redis = await startTestRedis();
});

after(async () => {
  for (const p of processes) await p.kill('SIGKILL').catch(() => {});
  // A gateway whose Redis is gone waits for it forever (commands queue until a reconnect): bound
  // each stop, so a failed test still gets to stop Redis and end.
  for (const g of gateways.reverse()) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([g.stop().catch(() => {}), new Promise((r) => { timer = setTimeout(r, 15_000); })]);
    clearTimeout(timer);
  }
  await redis?.dispose();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const prefixFor = (name: string) => `${name}${Math.random().toString(36).slice(2, 8)}`;

/** An in-process gateway on `prefix`; observers (no routes) log only fatal errors, routing ones errors too. */
async function startGw(prefix: string, extra: Record<string, unknown> = {}): Promise<Gateway> {
  const level = extra.routes ? 'error' : 'fatal';
  const g = await startTestGateway(redis!.url, { redis: { url: redis!.url, prefix }, log: { level }, ...extra });
  gateways.push(g);
  return g;
}

async function spawnGw(prefix: string, extra: Record<string, unknown>): Promise<GatewayProcess> {
  const p = await spawnGateway(redis!.url, extra, prefix);
  processes.push(p);
  return p;
}

interface QueueState { depth: number; inFlight: number }

async function state(base: string, address: string): Promise<QueueState> {
  const r = await api(base, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  assert.equal(r.status, 200, `browse ${address}: ${JSON.stringify(r.body)}`);
  return { depth: r.body.depth, inFlight: r.body.inFlight };
}

/** Like state(), but undefined while the gateway answers 503 (Redis reconnecting: DESIGN §6). */
async function stateIfUp(base: string, address: string): Promise<QueueState | undefined> {
  const r = await api(base, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  if (r.status === 503) return undefined;
  assert.equal(r.status, 200, `browse ${address}: ${JSON.stringify(r.body)}`);
  return { depth: r.body.depth, inFlight: r.body.inFlight };
}

async function dlqDepth(base: string, address: string): Promise<number> {
  const r = await api(base, 'GET', `/api/dlq/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, `dlq ${address}: ${JSON.stringify(r.body)}`);
  return r.body.depth;
}

/**
 * Sends every id to `to` over the HTTP API with `parallel` requests in flight; each must get 202.
 * Kept below the per-user login limit (10 by default), which counts a request until it succeeds.
 */
async function sendAll(base: string, to: string, ids: string[], parallel = 8): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id, pad: 'x'.repeat(200) } } });
      assert.equal(r.status, 202, `send ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, false, `send ${id} was reported as a duplicate`);
    }
  }));
}

/** Receives and acks `address` until a receive comes back empty; counts the acknowledged ids. */
async function drain(base: string, address: string, counts: Map<string, number>): Promise<void> {
  for (;;) {
    const got = await api(base, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 200, leaseSeconds: 300 } });
    assert.equal(got.status, 200, `receive: ${JSON.stringify(got.body)}`);
    const messages = got.body.messages as { id: string; lease: string }[];
    if (messages.length === 0) return;
    const ack = await api(base, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: messages.map((m) => m.lease) } });
    assert.equal(ack.status, 200, `ack: ${JSON.stringify(ack.body)}`);
    assert.deepEqual(ack.body.expired, [], 'a 300 s lease expired during the drain');
    for (const m of messages) counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  }
}

function assertExactlyOnce(ids: string[], counts: Map<string, number>, context = ''): void {
  const expected = new Set(ids);
  const missing = ids.filter((id) => !counts.has(id));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  assert.ok(
    missing.length === 0 && duplicated.length === 0 && extra.length === 0,
    `expected each of ${ids.length} ids exactly once; received ${counts.size} distinct ids — ` +
      `missing ${missing.length}: ${missing.slice(0, 20).join(', ')}; duplicated ${duplicated.length}: ${duplicated.slice(0, 20).join(', ')}; ` +
      `unknown ${extra.length}: ${extra.slice(0, 20).join(', ')}${context}`,
  );
}

/** Duplicates the gateway caught at ingress (from /metrics), for the diagnostics only. */
async function duplicatesCaught(base: string): Promise<string> {
  const r = await api(base, 'GET', '/metrics');
  const line = String(r.body).split('\n').find((l) => l.startsWith('switchboard_duplicates_total{endpoint="queue"}'));
  return line?.split(' ')[1] ?? '0';
}

/**
 * Polls out.b (through `observer`, a gateway without routes) as fast as it answers until the
 * route has moved some but not all messages. Fails clearly if the route finished first.
 */
async function waitUntilMoving(observer: Gateway, n: number, atLeast: number): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { depth } = await observer.router.browse(TO, 1);
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
  assert.deepEqual(await state(observer.url, FROM), { depth: N, inFlight: 0 });

  const first = await spawnGw(prefix, routeConfig);
  const movedBeforeKill = await waitUntilMoving(observer, N, N / 5);
  const code = await first.kill('SIGKILL');
  const atKill = { from: await state(observer.url, FROM), to: await state(observer.url, TO) };
  t.diagnostic(`killed gateway pid ${first.pid} (exit ${code}) with out.b at ≥${movedBeforeKill}; right after: ${JSON.stringify(atKill)}`);
  assert.ok(atKill.to.depth < N && atKill.from.depth + atKill.from.inFlight > 0, `the kill was not mid-route: ${JSON.stringify(atKill)}`);

  const second = await spawnGw(prefix, routeConfig);
  await waitFor(async () => {
    const s = await state(second.url, FROM);
    return s.depth === 0 && s.inFlight === 0;
  }, 120_000, 'in.a to be empty with nothing in flight after the restart').catch(async (err: Error) => {
    throw new Error(`${err.message}: in.a ${JSON.stringify(await state(second.url, FROM))}, out.b ${JSON.stringify(await state(second.url, TO))}\n--- second gateway output:\n${second.output()}`);
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
  assert.deepEqual(await state(second.url, FROM), { depth: 0, inFlight: 0 });
  assert.deepEqual(await state(second.url, TO), { depth: 0, inFlight: 0 });
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
    assert.deepEqual(await state(observer.url, FROM), { depth: N, inFlight: 0 });

    const routing = await startGw(prefix, { queues: QUEUES, routes: [{ from: FROM, to: TO, concurrency: 50 }] });
    const movedBeforeKill = await waitUntilMoving(observer, N, N / 5);
    const pid = redis!.pid;
    await redis!.kill();
    t.diagnostic(`killed redis-server pid ${pid} with out.b at ≥${movedBeforeKill}`);
    await sleep(downMs);
    await redis!.restart();
    t.diagnostic(`redis-server restarted as pid ${redis!.pid} on the same port and data after ${downMs} ms`);

    await waitFor(async () => {
      const s = await stateIfUp(routing.url, FROM);
      return s !== undefined && s.depth === 0 && s.inFlight === 0;
    }, 120_000, 'in.a to be empty with nothing in flight after the Redis restart').catch(async (err: Error) => {
      throw new Error(`${err.message}: in.a ${JSON.stringify(await stateIfUp(routing.url, FROM))}, out.b ${JSON.stringify(await stateIfUp(routing.url, TO))}`);
    });

    t.diagnostic(`redeliveries the gateway caught as duplicates at out.b: ${await duplicatesCaught(routing.url)}`);

    const counts = new Map<string, number>();
    await drain(routing.url, TO, counts);
    const dlq = { from: await dlqDepth(routing.url, FROM), to: await dlqDepth(routing.url, TO) };
    assertExactlyOnce(ids, counts, `; dead letters ${JSON.stringify(dlq)}`);
    assert.deepEqual(dlq, { from: 0, to: 0 }, 'dead letters');
    assert.deepEqual(await state(routing.url, FROM), { depth: 0, inFlight: 0 });
    assert.deepEqual(await state(routing.url, TO), { depth: 0, inFlight: 0 });
    await routing.stop();
    await observer.stop();
  });
}
