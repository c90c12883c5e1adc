import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Subscription } from '../../src/core/endpoint.ts';
import type { Message } from '../../src/core/message.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor, type USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

// Dead letters (DESIGN §1 `dlq:<address>`, §6 /api/dlq): a message whose processing keeps failing
// is dead-lettered after queues.maxAttempts deliveries (3 in the test config, backoff 100ms), can
// be listed with why and how often it failed, and replayed (all, or by id) to be received again.
//
// Processing fails for real: a consumer on the queue (what a route uses) whose handler throws a
// non-retryable error, so BullMQ counts a failed attempt and, after the last, moves the message
// to the failed set, which is the address's dead-letter queue.

const MAX_ATTEMPTS = 3;

let redis: TestRedis;
let gw: Gateway;
const subs = new Set<Subscription>();
before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
});
after(async () => {
  for (const s of subs) await s.close();
  await gw?.stop();
  await redis?.dispose();
});

type User = keyof typeof USERS;

/** A consumer that fails every message it gets; records the ids it was handed. */
async function failingConsumer(address: string): Promise<{ calls: string[]; close: () => Promise<void> }> {
  const calls: string[] = [];
  const sub = await gw.router.consume(address, async (m: Message) => {
    calls.push(m.id);
    throw new Error(`cannot process ${m.id}: the downstream system rejected it`);
  }, { maxInFlight: 1 }, SYSTEM_CALLER);
  subs.add(sub);
  return { calls, close: async () => { subs.delete(sub); await sub.close(); } };
}

async function send(to: string, id: string, body: unknown, user: User = 'ops') {
  const r = await api(gw.url, 'POST', '/api/messages', { user, body: { to, id, body, headers: { origin: 'dlq-test' } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.duplicate, false);
}

async function dlq(address: string, user: User = 'ops') {
  const r = await api(gw.url, 'GET', `/api/dlq/${enc(address)}`, { user });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { address: string; depth: number; messages: (Message & { deadLetter: { reason: string; attempts: number; at?: string } })[] };
}

async function replay(address: string, body: unknown, user: User = 'ops') {
  return api(gw.url, 'POST', `/api/dlq/${enc(address)}/replay`, { user, body });
}

async function queue(address: string) {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { depth: number; inFlight: number; messages: Message[] };
}

async function receiveAll(address: string) {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 100, leaseSeconds: 60 } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.messages as (Message & { lease: string })[];
}

async function ackAll(address: string, leases: string[]) {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases } });
  assert.deepEqual(r.body, { acked: leases.length, expired: [] });
}

const deadLettered = async (address: string, n: number) =>
  waitFor(async () => ((await dlq(address)).depth === n ? true : undefined), 30_000, `${n} dead letter(s) in ${address}`);

test('a message that keeps failing is dead-lettered after maxAttempts, with its reason and attempts', async () => {
  const q = 'queue:dlq.orders';
  assert.deepEqual(await dlq(q), { address: `dlq:${q}`, depth: 0, messages: [] });
  await send(q, 'poison-1', { order: 1 });

  const consumer = await failingConsumer(q);
  await deadLettered(q, 1);
  await consumer.close();

  // Delivered exactly maxAttempts times, then no more.
  assert.deepEqual(consumer.calls, Array(MAX_ATTEMPTS).fill('poison-1'));

  const list = await dlq(q);
  assert.equal(list.address, `dlq:${q}`);
  assert.equal(list.messages.length, 1);
  const [dead] = list.messages;
  assert.equal(dead!.id, 'poison-1');
  assert.equal(dead!.to, q);
  assert.deepEqual(dead!.body, { order: 1 });
  assert.deepEqual(dead!.headers, { origin: 'dlq-test' });
  assert.deepEqual(dead!.sender, { kind: 'user', name: 'ops' });
  assert.match(dead!.deadLetter.reason, /downstream system rejected it/);
  assert.equal(dead!.deadLetter.attempts, MAX_ATTEMPTS);
  assert.ok(dead!.deadLetter.at && !Number.isNaN(Date.parse(dead!.deadLetter.at)), 'deadLetter.at is a date');

  // It left the queue: nothing waiting, nothing in flight.
  const left = await queue(q);
  assert.equal(left.depth, 0);
  assert.equal(left.inFlight, 0);
  assert.deepEqual(await receiveAll(q), []);

  await waitFor(async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('switchboard_dead_lettered_total{endpoint="queue"}'));
    return line && Number(line.split(' ').pop()) >= 1;
  }, 10_000, 'switchboard_dead_lettered_total to count it');
});

test('replay by ids puts exactly those back; replay without ids puts back the rest; they can be received again', async () => {
  const q = 'queue:dlq.replay';
  const consumer = await failingConsumer(q);
  for (const id of ['r-1', 'r-2', 'r-3']) await send(q, id, { id });
  await deadLettered(q, 3);
  await consumer.close();
  assert.equal((await queue(q)).depth, 0);

  const one = await replay(q, { ids: ['r-2'] });
  assert.equal(one.status, 200, JSON.stringify(one.body));
  assert.deepEqual(one.body, { replayed: 1 });
  assert.deepEqual((await dlq(q)).messages.map((m) => m.id).sort(), ['r-1', 'r-3']);
  assert.deepEqual((await queue(q)).messages.map((m) => m.id), ['r-2']);

  const got = await receiveAll(q);
  assert.deepEqual(got.map((m) => m.id), ['r-2']);
  assert.deepEqual(got[0]!.body, { id: 'r-2' }, 'the replayed message is the original');
  assert.deepEqual(got[0]!.sender, { kind: 'user', name: 'ops' });
  assert.equal(got[0]!.to, q);
  await ackAll(q, got.map((m) => m.lease));

  // An id that is not a dead letter here moves nothing.
  const none = await replay(q, { ids: ['no-such-id', 'r-2'] });
  assert.ok(none.status < 500, JSON.stringify(none.body));
  assert.equal((await dlq(q)).depth, 2);
  assert.equal((await queue(q)).depth, 0);

  const rest = await replay(q, {});
  assert.equal(rest.status, 200, JSON.stringify(rest.body));
  assert.deepEqual(rest.body, { replayed: 2 });
  assert.deepEqual(await dlq(q), { address: `dlq:${q}`, depth: 0, messages: [] });
  const again = await receiveAll(q);
  assert.deepEqual(again.map((m) => m.id).sort(), ['r-1', 'r-3']);
  await ackAll(q, again.map((m) => m.lease));
  assert.equal((await queue(q)).depth, 0);

  // Replaying an empty dead-letter queue is a no-op.
  const empty = await replay(q, {});
  assert.deepEqual(empty.body, { replayed: 0 });
});

test('a replayed message gets a full set of attempts again before it is dead-lettered again', async () => {
  const q = 'queue:dlq.again';
  await send(q, 'again-1', 'x');
  const first = await failingConsumer(q);
  await deadLettered(q, 1);
  await first.close();
  assert.equal(first.calls.length, MAX_ATTEMPTS);

  assert.deepEqual((await replay(q, { ids: ['again-1'] })).body, { replayed: 1 });
  assert.equal((await dlq(q)).depth, 0);
  const second = await failingConsumer(q);
  await deadLettered(q, 1);
  await second.close();
  assert.equal(second.calls.length, MAX_ATTEMPTS, 'attempts were reset by the replay');
  assert.equal((await dlq(q)).messages[0]!.deadLetter.attempts, MAX_ATTEMPTS);
});

test('a replayed message keeps its id, so a resend of that id is still a duplicate', async () => {
  const q = 'queue:dlq.dedup';
  await send(q, 'keep-id', 1);
  const c = await failingConsumer(q);
  await deadLettered(q, 1);
  await c.close();
  await replay(q, {});
  const dup = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: q, id: 'keep-id', body: 2 } });
  assert.equal(dup.status, 202);
  assert.equal(dup.body.duplicate, true);
  const got = await receiveAll(q);
  assert.deepEqual(got.map((m) => [m.id, m.body]), [['keep-id', 1]]);
  await ackAll(q, got.map((m) => m.lease));
});

test('dead-letter endpoints check permissions: browse to list, send to replay', async () => {
  const q = 'queue:out.failed'; // clerk may browse queue:out.*, but not send there
  await send(q, 'perm-1', 'p');
  const c = await failingConsumer(q);
  await deadLettered(q, 1);
  await c.close();

  const anon = await api(gw.url, 'GET', `/api/dlq/${enc(q)}`);
  assert.equal(anon.status, 401);
  assert.equal(anon.body.error.code, 'unauthenticated');

  const nobodyList = await api(gw.url, 'GET', `/api/dlq/${enc(q)}`, { user: 'nobody' });
  assert.equal(nobodyList.status, 403);
  assert.equal(nobodyList.body.error.code, 'forbidden');
  assert.match(nobodyList.body.error.message, /user:nobody may not browse on queue:out\.failed/);

  const nobodyReplay = await replay(q, {}, 'nobody');
  assert.equal(nobodyReplay.status, 403);
  assert.match(nobodyReplay.body.error.message, /user:nobody may not send on queue:out\.failed/);

  // clerk may list (browse) but not replay (send).
  const clerkList = await dlq(q, 'clerk');
  assert.deepEqual(clerkList.messages.map((m) => m.id), ['perm-1']);
  const clerkReplay = await replay(q, { ids: ['perm-1'] }, 'clerk');
  assert.equal(clerkReplay.status, 403);
  assert.equal(clerkReplay.body.error.code, 'forbidden');
  assert.match(clerkReplay.body.error.message, /user:clerk may not send on queue:out\.failed/);

  // clerk has no right at all on queue:dlq.orders.
  const other = await api(gw.url, 'GET', `/api/dlq/${enc('queue:dlq.orders')}`, { user: 'clerk' });
  assert.equal(other.status, 403);
  assert.match(other.body.error.message, /user:clerk may not browse on queue:dlq\.orders/);

  // The refused replays moved nothing; ops may replay.
  assert.equal((await dlq(q)).depth, 1);
  assert.equal((await queue(q)).depth, 0);
  assert.deepEqual((await replay(q, {})).body, { replayed: 1 });
  assert.equal((await dlq(q)).depth, 0);
  assert.equal((await queue(q)).depth, 1);
});

test('bad input on dead-letter endpoints → 400 saying what was wrong, nothing replayed', async () => {
  const q = 'queue:dlq.badinput';
  await send(q, 'bad-1', 'b');
  const c = await failingConsumer(q);
  await deadLettered(q, 1);
  await c.close();

  for (const ids of ['bad-1', [1], { id: 'bad-1' }]) {
    const r = await replay(q, { ids });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'bad_request');
    assert.match(r.body.error.message, /'ids' must be an array of message ids/);
  }
  const badAddress = await api(gw.url, 'GET', `/api/dlq/${enc('queue:not valid')}`, { user: 'ops' });
  assert.equal(badAddress.status, 400);
  assert.equal(badAddress.body.error.code, 'bad_address');
  assert.match(badAddress.body.error.message, /invalid address 'queue:not valid'/);

  assert.equal((await dlq(q)).depth, 1);
  assert.equal((await queue(q)).depth, 0);
});

test('a peek-lock consumer that never acknowledges: the message is handed out maxAttempts times, then dead-lettered', async () => {
  const address = 'queue:dlq.peek';
  await send(address, 'peek-1', { n: 1 });
  let deliveries = 0;
  await waitFor(async () => {
    const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 1 } });
    assert.equal(r.status, 200);
    deliveries += r.body.messages.length;
    return (await dlq(address)).depth === 1 ? true : undefined;
  }, 60_000, 'the never-acknowledged message in the dead-letter queue');
  assert.equal(deliveries, MAX_ATTEMPTS, `delivered ${deliveries} times`);
  const dead = (await dlq(address)).messages;
  assert.equal(dead[0]!.id, 'peek-1');
  assert.match(dead[0]!.deadLetter.reason, /stalled/);
  assert.equal((await queue(address)).depth, 0);
});

test('replaying an id that is not a dead letter answers 404 naming it; a mix replays what exists and names the rest', async () => {
  const address = 'queue:dlq.unknown';
  const consumer = await failingConsumer(address);
  await send(address, 'u-1', 1);
  await deadLettered(address, 1);
  await consumer.close();
  const none = await replay(address, { ids: ['no-such-id'] });
  assert.equal(none.status, 404);
  assert.match(none.body.error.message, /no-such-id/);
  const mixed = await replay(address, { ids: ['u-1', 'also-missing'] });
  assert.equal(mixed.status, 200);
  assert.deepEqual(mixed.body, { replayed: 1, notFound: ['also-missing'] });
});
