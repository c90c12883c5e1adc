import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { QueueEndpoint } from '../../src/endpoints/queue/queue-endpoint.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 13.5: resources are bounded per caller. A peek-lock receive opens no Redis connection of
// its own, so 1,000 distinct addresses touched with send + receive + ack leave the Redis client
// count flat; queues nobody uses are closed after queues.idleClose; /metrics reports a bounded
// number of switchboard_queue_depth series (routes' queues, the most recent, and "(other)") and a
// scrape stays quick with 10,000 addresses touched.

let redis: TestRedis;
let gw: Gateway;
let admin: Redis;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s', idleClose: '1s', maxOpen: 20_000, depthSeries: 20 },
    routes: [{ from: 'queue:br.route.src', to: 'queue:br.route.dst' }],
  });
  admin = new Redis(redis.url);
});
after(async () => {
  admin?.disconnect();
  await gw?.stop();
  await redis?.dispose();
});

const clients = async () => String(await admin.client('LIST')).trim().split('\n').length;
// The test looks inside the queue transport; the router keeps it private from doors, not from tests.
const queues = () => (gw.router as unknown as { resolve(a: string): { endpoint: unknown } }).resolve('queue:any').endpoint as QueueEndpoint;

/** Runs `fn(i)` for i in [0, n) with `width` calls at a time. */
async function each(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++);
  }));
}

test('1,000 addresses touched with send, receive and ack leave Redis clients flat, and idle queues are closed', async () => {
  const touch = async (address: string) => {
    assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, body: { n: 1 } } })).status, 202);
    const got = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 1 } });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(got.body.messages.length, 1);
    const ack = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: [got.body.messages[0].lease] } });
    assert.equal(ack.body.acked, 1);
  };
  await touch('queue:br.warmup'); // connections made once (producer, route consumer) are in the baseline
  const baseline = await clients();
  let peak = baseline;
  await each(1000, 8, async (i) => {
    await touch(`queue:br.addr.${i}`);
    if (i % 100 === 0) peak = Math.max(peak, await clients());
  });
  peak = Math.max(peak, await clients());
  assert.ok(peak <= baseline + 2, `Redis clients went from ${baseline} to ${peak} for 1,000 addresses`);
  const open = queues().openCounts();
  assert.ok(open.readers > 0, 'the peek-lock readers are open while their leases may still expire');

  // Leases acked and expired, queues.idleClose (1 s) passed: the process lets them go.
  const shrunk = await waitFor(async () => {
    const c = queues().openCounts();
    return c.queues < 50 ? c : undefined;
  }, 90_000, 'idle queues to close');
  assert.ok(shrunk!.queues < open.queues, `open queues ${open.queues} → ${shrunk!.queues}`);
  assert.equal(await clients(), baseline, 'closing readers closes no shared connection either');

  // A closed queue opens again on its next use, with its messages intact.
  await touch('queue:br.addr.7');
});

test('with 10,000 addresses touched, /metrics has a bounded number of queue depth series and answers quickly', async () => {
  await each(10_000, 16, async (i) => {
    const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: `queue:br.many.${i}`, body: i } });
    assert.equal(r.status, 202);
  });
  const started = Date.now();
  const res = await fetch(`${gw.url}/metrics`);
  const text = await res.text();
  const took = Date.now() - started;
  assert.equal(res.status, 200);
  const series = text.split('\n').filter((l) => l.startsWith('switchboard_queue_depth{'));
  // depthSeries (20) recent + the route's two queues + (other).
  assert.ok(series.length <= 20 + 2 + 1, `${series.length} series:\n${series.slice(0, 30).join('\n')}`);
  assert.ok(series.some((l) => l.includes('address="queue:br.route.src"')), 'a route source is always reported');
  assert.ok(series.some((l) => l.includes('address="queue:br.route.dst"')), 'a route destination is always reported');
  // Generous: a scrape is a bounded number of Redis calls; on a shared 2-core machine seconds
  // mean something is per-address again.
  assert.ok(took < 10_000, `scrape took ${took} ms`);
});
