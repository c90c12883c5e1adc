/**
 * DESIGN §9, memory: the gateway refuses to start on a Redis whose maxmemory-policy can evict, and
 * when Redis nears maxmemory new inbound work is refused with 503 + Retry-After (never evicted or
 * dropped), accepted again by itself once memory frees. Real redis-server with a small maxmemory.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { api, startTestGateway, waitFor, type ApiResponse } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import type { Gateway } from '../../src/gateway.ts';

let redis: TestRedis | undefined;
let client: Redis | undefined;
let gw: Gateway | undefined;

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
});

after(async () => {
  await gw?.stop();
  client?.disconnect();
  await redis?.dispose();
});

const memory = async () => {
  const info = await client!.info('memory');
  const field = (n: string) => Number(new RegExp(`^${n}:(\\d+)`, 'm').exec(info)![1]);
  return { used: field('used_memory'), max: field('maxmemory') };
};

test('a Redis whose maxmemory-policy can evict is refused at start, saying what to set', async () => {
  await client!.config('SET', 'maxmemory-policy', 'allkeys-lru');
  try {
    await assert.rejects(startTestGateway(redis!.url), (err: Error) => {
      assert.match(err.message, /maxmemory-policy allkeys-lru/);
      assert.match(err.message, /CONFIG SET maxmemory-policy noeviction/);
      assert.match(err.message, /maxmemory-policy noeviction` in redis\.conf/);
      return true;
    });
  } finally {
    await client!.config('SET', 'maxmemory-policy', 'noeviction');
  }
});

test('near maxmemory: HTTP sends get 503 + Retry-After and nothing is stored; after memory frees they succeed again; nothing accepted is lost', { timeout: 120_000 }, async (t) => {
  gw = await startTestGateway(redis!.url);
  const send = (id: string) => api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:mg.in', id, body: { id } } });
  const accepted: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await send(`before-${i}`);
    assert.equal(r.status, 202, JSON.stringify(r.body));
    accepted.push(`before-${i}`);
  }

  // A small limit above what is in use, then a filler key (ours) to bring Redis above 90 % of it.
  const base = await memory();
  const max = base.used + 4 * 1_048_576;
  await client!.config('SET', 'maxmemory', String(max));
  // Small pieces: one big SET would need its size twice over (query buffer) and hit OOM itself.
  const piece = 'x'.repeat(32 * 1024);
  let pieces = 0;
  while ((await memory()).used < max * 0.93) await client!.set(`mg-test-filler:${pieces++}`, piece);
  const full = await memory();
  t.diagnostic(`used ${full.used} of maxmemory ${full.max} (${((100 * full.used) / full.max).toFixed(1)} %)`);
  assert.ok(full.used / full.max >= 0.9 && full.used < full.max, `filler should bring memory between 90 % and 100 %: ${JSON.stringify(full)}`);

  const refused = await waitFor(async (): Promise<ApiResponse | undefined> => {
    const r = await send(`during-${Date.now()}`);
    if (r.status === 202) accepted.push((r.body as { id: string }).id);
    return r.status === 503 ? r : undefined;
  }, 10_000, 'the memory guard to refuse sends') as ApiResponse;
  assert.equal(refused.body.error.code, 'unavailable');
  assert.match(refused.body.error.message, /memory is nearly full/);
  assert.ok(Number(refused.headers.get('retry-after')) > 0, 'Retry-After header');
  for (let i = 0; i < 5; i++) assert.equal((await send(`refused-${i}`)).status, 503, 'still refused while memory is full');

  await client!.del(...Array.from({ length: pieces }, (_, i) => `mg-test-filler:${i}`));
  await waitFor(async () => {
    const r = await send(`after-${Date.now()}`);
    if (r.status === 202) accepted.push((r.body as { id: string }).id);
    return r.status === 202;
  }, 10_000, 'sends to be accepted again after memory freed');
  for (let i = 0; i < 5; i++) {
    assert.equal((await send(`after-${i}`)).status, 202);
    accepted.push(`after-${i}`);
  }

  // Every accepted message is in the queue exactly once; none of the refused ones is.
  const received = new Map<string, number>();
  for (;;) {
    const r: ApiResponse = await api(gw.url, 'POST', '/api/queues/queue:mg.in/receive', { user: 'ops', body: { max: 100, leaseSeconds: 60 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const msgs = r.body.messages as { id: string; lease: string }[];
    if (msgs.length === 0) break;
    for (const m of msgs) received.set(m.id, (received.get(m.id) ?? 0) + 1);
    assert.equal((await api(gw.url, 'POST', '/api/queues/queue:mg.in/ack', { user: 'ops', body: { leases: msgs.map((m) => m.lease) } })).status, 200);
  }
  assert.deepEqual([...received.keys()].sort(), [...new Set(accepted)].sort());
  assert.ok([...received.values()].every((n) => n === 1));
  assert.ok(![...received.keys()].some((id) => id.startsWith('refused-')));
  await client!.config('SET', 'maxmemory', '0');
});
