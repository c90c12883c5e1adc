import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor, type USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The HTTP API's happy paths (DESIGN §2, §6): send → browse → peek-lock receive → ack, the
// sender stamped from authentication, dedup on ingress, leases that expire, health and metrics.

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

type User = keyof typeof USERS;

async function send(to: string, body: unknown, extra: Record<string, unknown> = {}, user: User = 'ops') {
  const r = await api(gw.url, 'POST', '/api/messages', { user, body: { to, body, ...extra } });
  assert.equal(r.status, 202, `send to ${to}: ${JSON.stringify(r.body)}`);
  return r.body as { id: string; duplicate: boolean };
}

async function browse(address: string, limit?: number) {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}${limit ? `?limit=${limit}` : ''}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { address: string; depth: number; inFlight?: number; messages: any[] };
}

async function receive(address: string, max: number, leaseSeconds: number) {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max, leaseSeconds } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.messages as any[];
}

async function ack(address: string, leases: string[]) {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { acked: number; expired: string[] };
}

async function metricsText(): Promise<string> {
  const r = await fetch(`${gw.url}/metrics`);
  assert.equal(r.status, 200);
  return r.text();
}

/** The value of one sample in Prometheus text format, or undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf('}');
    const got = line.slice(name.length + 1, close).split(',');
    if (want.every((w) => got.includes(w))) return Number(line.slice(close + 1).trim());
  }
  return undefined;
}

test('send → browse (depth, first messages in order) → receive with leases → ack', async () => {
  const q = 'queue:api.roundtrip';
  const a = await send(q, { n: 1 }, { headers: { kind: 'order' }, correlationId: 'corr-1', replyTo: 'queue:api.replies' });
  const b = await send(q, { n: 2 });
  const c = await send(q, { n: 3 });
  assert.equal(a.duplicate, false);
  assert.equal(typeof a.id, 'string');
  assert.notEqual(a.id, b.id);

  const all = await browse(q);
  assert.equal(all.address, q);
  assert.equal(all.depth, 3);
  assert.deepEqual(all.messages.map((m) => m.id), [a.id, b.id, c.id]);
  const first = all.messages[0];
  assert.equal(first.to, q);
  assert.deepEqual(first.body, { n: 1 });
  assert.deepEqual(first.headers, { kind: 'order' });
  assert.equal(first.correlationId, 'corr-1');
  assert.equal(first.replyTo, 'queue:api.replies');
  assert.equal(first.contentType, 'application/json');
  assert.ok(!Number.isNaN(Date.parse(first.createdAt)), 'createdAt is a date');

  const two = await browse(q, 2);
  assert.equal(two.depth, 3, 'limit shortens the list, not the depth');
  assert.deepEqual(two.messages.map((m) => m.id), [a.id, b.id]);

  const got = await receive(q, 2, 30);
  assert.deepEqual(got.map((m) => m.id), [a.id, b.id]);
  assert.deepEqual(got.map((m) => m.body), [{ n: 1 }, { n: 2 }]);
  for (const m of got) assert.ok(typeof m.lease === 'string' && m.lease.length > 0, 'each message carries a lease');
  assert.notEqual(got[0].lease, got[1].lease);

  // Leased messages are no longer waiting: they are in flight until acked.
  const during = await browse(q);
  assert.equal(during.depth, 1);
  assert.deepEqual(during.messages.map((m) => m.id), [c.id]);
  assert.equal(during.inFlight, 2);

  assert.deepEqual(await ack(q, got.map((m) => m.lease)), { acked: 2, expired: [] });
  const rest = await receive(q, 10, 30);
  assert.deepEqual(rest.map((m) => m.id), [c.id]);
  assert.deepEqual(await ack(q, [rest[0].lease]), { acked: 1, expired: [] });

  const empty = await browse(q);
  assert.equal(empty.depth, 0);
  assert.equal(empty.inFlight, 0);
  assert.deepEqual(empty.messages, []);
  assert.deepEqual(await receive(q, 10, 30), []);

  // Acking the same lease twice is not counted twice.
  assert.deepEqual(await ack(q, [rest[0].lease]), { acked: 0, expired: [rest[0].lease] });
});

test('the sender is stamped from authentication; a sender in the body is ignored', async () => {
  const q = 'queue:in.stamp';
  const forged = { kind: 'user', name: 'mallory' };
  const byOps = await send(q, { x: 1 }, { sender: forged });
  const byClerk = await send(q, { x: 2 }, { sender: { kind: 'flow', name: 'evil' } }, 'clerk');
  const got = await receive(q, 10, 30);
  assert.equal(got.length, 2);
  const m1 = got.find((m) => m.id === byOps.id);
  const m2 = got.find((m) => m.id === byClerk.id);
  assert.deepEqual(m1.sender, { kind: 'user', name: 'ops' });
  assert.deepEqual(m2.sender, { kind: 'user', name: 'clerk' });
  // Groups are for permission checks and are not carried on messages.
  assert.equal(m1.sender.groups, undefined);
  assert.deepEqual(await ack(q, got.map((m) => m.lease)), { acked: 2, expired: [] });
});

test('dedup: the same id twice is accepted twice and delivered once, also after it was consumed', async () => {
  const q = 'queue:api.dedup';
  const id = 'order-42:step-1';
  const first = await send(q, { v: 'first' }, { id });
  assert.deepEqual(first, { id, duplicate: false });
  const second = await send(q, { v: 'second' }, { id });
  assert.deepEqual(second, { id, duplicate: true });

  const queued = await browse(q);
  assert.equal(queued.depth, 1);
  const got = await receive(q, 10, 30);
  assert.equal(got.length, 1);
  assert.equal(got[0].id, id);
  assert.deepEqual(got[0].body, { v: 'first' }, 'the first copy is the one delivered');
  assert.deepEqual(await ack(q, [got[0].lease]), { acked: 1, expired: [] });

  // Consumed and gone: the id is still remembered.
  const third = await send(q, { v: 'third' }, { id });
  assert.deepEqual(third, { id, duplicate: true });
  assert.equal((await browse(q)).depth, 0);
  assert.deepEqual(await receive(q, 10, 30), []);

  // Another id to the same queue, and the same id to another queue, are delivered.
  assert.equal((await send(q, { v: 'other' }, { id: `${id}-b` })).duplicate, false);
  assert.equal((await send('queue:api.dedup2', { v: 'elsewhere' }, { id })).duplicate, false);
  assert.equal((await browse(q)).depth, 1);
  assert.equal((await browse('queue:api.dedup2')).depth, 1);
});

test('an unacknowledged message comes back after its lease; acking the old lease reports it expired', async () => {
  const q = 'queue:api.lease';
  const sent = await send(q, { job: 'slow' });
  const [first] = await receive(q, 1, 1);
  assert.ok(first, 'the message was received');
  assert.equal(first.id, sent.id);
  assert.equal((await browse(q)).depth, 0, 'leased: not waiting');

  // Nobody acks: after the lease (plus a stalled check) it is delivered again.
  const again = await waitFor(async () => (await receive(q, 1, 60))[0], 30_000, 'the message to come back after its lease');
  assert.equal(again.id, sent.id);
  assert.deepEqual(again.body, { job: 'slow' });
  assert.notEqual(again.lease, first.lease, 'a new delivery has a new lease');

  // The old lease no longer settles anything; the new one does.
  assert.deepEqual(await ack(q, [first.lease]), { acked: 0, expired: [first.lease] });
  assert.deepEqual(await ack(q, [again.lease]), { acked: 1, expired: [] });
  const after = await browse(q);
  assert.equal(after.depth, 0);
  assert.equal(after.inFlight, 0);
  assert.deepEqual(await receive(q, 1, 30), []);
});

test('acking a mix of live and unknown leases acks the live ones and lists the rest', async () => {
  const q = 'queue:api.mixed';
  await send(q, 1);
  const [m] = await receive(q, 1, 30);
  const bogus = 'no-such-job.no-such-token';
  assert.deepEqual(await ack(q, [m.lease, bogus]), { acked: 1, expired: [bogus] });
});

test('/healthz answers ok and /readyz answers 200 with its checks', async () => {
  const h = await api(gw.url, 'GET', '/healthz');
  assert.equal(h.status, 200);
  assert.deepEqual(h.body, { status: 'ok' });

  const r = await api(gw.url, 'GET', '/readyz');
  assert.equal(r.status, 200);
  assert.equal(r.body.status, 'ready');
  assert.equal(r.body.checks.redis.ok, true);
  assert.equal(r.body.checks['endpoint:queue'].ok, true);
  assert.equal(r.body.checks.directory.ok, true);
  for (const [name, c] of Object.entries(r.body.checks as Record<string, { ok: boolean }>)) assert.equal(c.ok, true, `check ${name}`);
});

test('/metrics counts accepted messages and duplicates and shows queue depths', async () => {
  const q = 'queue:api.metrics';
  const before = await metricsText();
  assert.match(before, /^# TYPE switchboard_messages_in_total counter$/m);
  assert.match(before, /^# TYPE switchboard_queue_depth gauge$/m);
  const inBefore = sample(before, 'switchboard_messages_in_total', { endpoint: 'queue' }) ?? 0;
  const dupBefore = sample(before, 'switchboard_duplicates_total', { endpoint: 'queue' }) ?? 0;

  await send(q, 1, { id: 'm-1' });
  await send(q, 2, { id: 'm-2' });
  await send(q, 3, { id: 'm-2' }); // a duplicate: accepted, not counted as in

  const text = await metricsText();
  assert.equal(sample(text, 'switchboard_messages_in_total', { endpoint: 'queue' }), inBefore + 2);
  assert.equal(sample(text, 'switchboard_duplicates_total', { endpoint: 'queue' }), dupBefore + 1);
  assert.equal(sample(text, 'switchboard_queue_depth', { address: q }), 2);

  const [m] = await receive(q, 1, 30);
  await ack(q, [m.lease]);
  assert.equal(sample(await metricsText(), 'switchboard_queue_depth', { address: q }), 1);
});
