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
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FROM = 'queue:in.a';
const TO = 'queue:out.b';
const N = 300;
const MAX_DEPTH = 20;
const CONCURRENCY = 10;

let redis: TestRedis | undefined;
let gw: Gateway | undefined;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s', limits: [{ address: TO, maxDepth: MAX_DEPTH }] },
    routes: [{ from: FROM, to: TO, concurrency: CONCURRENCY }],
    // The router logs every refused send at warn (one line per held message per retry): quiet here.
    log: { level: 'error' },
  });
});

after(async () => {
  await gw?.stop().catch(() => {});
  await redis?.dispose();
});

interface QueueState { depth: number; inFlight: number }

async function state(base: string, address: string): Promise<QueueState> {
  const r = await api(base, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
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
      const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id } } });
      assert.equal(r.status, 202, `send ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, false, `send ${id} was reported as a duplicate`);
    }
  }));
}

/** Peek-lock receive + ack of one batch; counts the acknowledged ids. Returns how many were taken. */
async function receiveBatch(base: string, address: string, counts: Map<string, number>, max = 50): Promise<number> {
  const got = await api(base, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max, leaseSeconds: 120 } });
  assert.equal(got.status, 200, `receive: ${JSON.stringify(got.body)}`);
  const messages = got.body.messages as { id: string; lease: string }[];
  if (messages.length === 0) return 0;
  const ack = await api(base, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: messages.map((m) => m.lease) } });
  assert.equal(ack.status, 200, `ack: ${JSON.stringify(ack.body)}`);
  assert.deepEqual(ack.body.expired, [], 'a 120 s lease expired during the test');
  for (const m of messages) counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  return messages.length;
}

function assertExactlyOnce(ids: string[], counts: Map<string, number>): void {
  const expected = new Set(ids);
  const missing = ids.filter((id) => !counts.has(id));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  assert.ok(
    missing.length === 0 && duplicated.length === 0 && extra.length === 0,
    `expected each of ${ids.length} ids exactly once; received ${counts.size} distinct ids — ` +
      `missing ${missing.length}: ${missing.slice(0, 20).join(', ')}; duplicated ${duplicated.length}: ${duplicated.slice(0, 20).join(', ')}; ` +
      `unknown ${extra.length}: ${extra.slice(0, 20).join(', ')}`,
  );
}

test('a full destination stops the route pulling; draining it resumes the route with nothing lost or duplicated', async () => {
  const base = gw!.url;
  const ids = Array.from({ length: N }, (_, i) => `bp-${String(i).padStart(4, '0')}`);
  await sendAll(base, FROM, ids);

  // Backpressure: out.b fills up to about maxDepth and the route stops pulling from in.a.
  // "Settled" = two polls 1 s apart see the same waiting count in in.a and out.b.
  let previous = '';
  let settled: { from: QueueState; to: QueueState } | undefined;
  await waitFor(async () => {
    const s = { from: await state(base, FROM), to: await state(base, TO) };
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
    const now = { from: await state(base, FROM), to: await state(base, TO) };
    assert.equal(now.from.depth, from.depth, `the route kept pulling from in.a while out.b was full: ${JSON.stringify(now)}`);
    assert.ok(now.to.depth <= MAX_DEPTH + CONCURRENCY, `out.b grew past the bound: ${JSON.stringify(now)}`);
  }

  // Drain out.b; the route resumes as room appears. Stop when all N were received and both
  // queues are empty with nothing in flight.
  const counts = new Map<string, number>();
  let received = 0;
  await waitFor(async () => {
    const n = await receiveBatch(base, TO, counts);
    received += n;
    if (n > 0) return false;
    const [a, b] = [await state(base, FROM), await state(base, TO)];
    return received >= N && a.depth === 0 && a.inFlight === 0 && b.depth === 0 && b.inFlight === 0;
  }, 120_000, `out.b to be drained (received ${received} so far)`).catch((err: Error) => {
    throw new Error(`${err.message}; received ${received}, distinct ${counts.size}`);
  });

  // Anything arriving late would be a duplicate: one more look after the route's longest hold pause.
  await new Promise((r) => setTimeout(r, 1500));
  received += await receiveBatch(base, TO, counts);

  assertExactlyOnce(ids, counts);
  assert.equal(received, N);
  assert.deepEqual(await state(base, FROM), { depth: 0, inFlight: 0 });
  assert.deepEqual(await state(base, TO), { depth: 0, inFlight: 0 });
  assert.equal(await dlqDepth(base, FROM), 0, 'dead letters in in.a');
  assert.equal(await dlqDepth(base, TO), 0, 'dead letters in out.b');
});
