import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { bullQueueName } from '../../src/endpoints/queue/names.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Timers that keep their word (issue 16 point 6): a peek-lock lease that expires returns its
// message within about a second of expiring — not at the next stalled check, which here is 30 s
// away — and the expiry counts as a delivery (expired leases count towards maxAttempts). An
// acked lease never comes back.

const PREFIX = 'tlease';
let redis: TestRedis;
let gw: Gateway;
let client: Redis;
before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, { redis: { url: redis.url, prefix: PREFIX }, queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '30s' } });
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
});
after(async () => {
  client?.disconnect();
  await gw?.stop();
  await redis?.dispose();
});

async function send(to: string, body: unknown): Promise<string> {
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to, body } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

async function receive(address: string, max: number, leaseSeconds: number): Promise<{ id: string; lease: string }[]> {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max, leaseSeconds } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.messages;
}

async function ack(address: string, leases: string[]): Promise<{ acked: number; expired: string[] }> {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** How often BullMQ saw the job's lease or lock expire (its stalled counter). */
async function expiries(address: string, lease: string): Promise<number> {
  const q = new Queue(bullQueueName(address), { connection: client, prefix: PREFIX });
  try {
    const job = await Job.fromId(q, lease.slice(0, lease.indexOf('.')));
    return job?.stalledCounter ?? -1;
  } finally {
    await q.close();
  }
}

test('a 1 s lease that is not acked comes back within about a second of expiring, counted as a delivery', async () => {
  const q = 'queue:lease.expiry';
  const id = await send(q, { job: 'slow' });
  const t0 = Date.now();
  const [first] = await receive(q, 1, 1);
  assert.equal(first?.id, id);
  assert.equal(await expiries(q, first.lease), 0);

  const [again] = await waitFor(async () => {
    const got = await receive(q, 1, 60);
    return got.length > 0 ? got : (undefined as never);
  }, 10_000, 'the message to come back after its lease');
  const back = Date.now() - t0;
  assert.ok(again);
  assert.equal(again.id, id);
  // 1 s lease + ~0.25 s check, generous for a loaded machine; the stalled check is 30 s away.
  assert.ok(back < 3_000, `came back after ${back} ms (lease 1,000 ms)`);
  assert.equal(await expiries(q, again.lease), 1, 'the expired lease counted as a delivery');
  assert.deepEqual(await ack(q, [first.lease]), { acked: 0, expired: [first.lease] });
  assert.deepEqual(await ack(q, [again.lease]), { acked: 1, expired: [] });
});

test('an acked lease does not come back', async () => {
  const q = 'queue:lease.acked';
  const id = await send(q, { job: 'quick' });
  const [m] = await receive(q, 1, 1);
  assert.equal(m?.id, id);
  assert.deepEqual(await ack(q, [m.lease]), { acked: 1, expired: [] });
  await new Promise((r) => setTimeout(r, 2_000));
  assert.deepEqual(await receive(q, 1, 60), []);
});

test('leases that keep expiring dead-letter the message after maxAttempts deliveries', async () => {
  const q = 'queue:lease.poison';
  const id = await send(q, { job: 'never acked' });
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) {
    const [m] = await waitFor<{ id: string; lease: string }[]>(async () => {
      const got = await receive(q, 1, 1);
      return got.length > 0 ? got : (undefined as never);
    }, 10_000, `delivery ${i + 1}`);
    assert.equal(m!.id, id);
  }
  // The third lease expires too: the message is dead-lettered when it is next taken.
  const dlq = await waitFor(async () => {
    await receive(q, 1, 1);
    const r = await api(gw.url, 'GET', `/api/dlq/${enc(q)}`, { user: 'ops' });
    return r.body.depth === 1 ? r.body : undefined;
  }, 10_000, 'the message to be dead-lettered');
  assert.equal(dlq.messages[0].id, id);
  assert.ok(Date.now() - t0 < 15_000, 'three 1 s leases and a dead letter well before one 30 s stalled check');
});
