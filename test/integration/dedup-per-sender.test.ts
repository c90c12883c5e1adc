import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { hashPassword } from '../../src/auth/password.ts';
import { DedupStore } from '../../src/core/dedup.ts';
import type { Endpoint, SendResult } from '../../src/core/endpoint.ts';
import { createMessage, type Message } from '../../src/core/message.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { Route } from '../../src/core/route.ts';
import { Router } from '../../src/core/router.ts';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { openRedis } from '../../src/store/redis.ts';
import { api, enc, startTestGateway, testConfig, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Ids cannot be squatted (DESIGN §2): an id deduplicates against earlier messages of the same
// sender on the same address, for queues.dedupTtl. Routes keep the original sender, so a
// redelivery after a hop is still caught; another user's message with the same id is delivered.
// Every dropped repeat is counted in switchboard_duplicates_total.

const BOB = { name: 'bob', password: 'bob-pw' };
const IN = 'queue:in.a';
const OUT = 'queue:out.a';

let redis: TestRedis;
let gw: Gateway;
let receiver: Server;
/** What the webhook receiver got. */
const posts: IncomingMessage['headers'][] = [];

before(async () => {
  redis = await startTestRedis();
  const port = await freePort();
  receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      posts.push(req.headers);
      res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
  // The usual test users, and bob: another user who may send, in a group of his own.
  const base = await testConfig(redis.url);
  const directory = base.directory as { type: string; users: unknown[] };
  gw = await startTestGateway(redis.url, {
    queues: { ...(base.queues as object), dedupTtl: '1h' },
    directory: { ...directory, users: [...directory.users, { name: BOB.name, passwordHash: await hashPassword(BOB.password), groups: ['partners'] }] },
    permissions: [
      ...(base.permissions as unknown[]),
      { group: 'ops', allow: [{ address: 'webhook:**', verbs: ['send'] }] },
      { group: 'partners', allow: [{ address: 'queue:**', verbs: ['send'] }, { address: 'webhook:**', verbs: ['send'] }] },
    ],
    webhooks: { crm: { url: `http://127.0.0.1:${port}/hook`, secret: 'a-shared-secret-of-enough-length', backoff: '100ms', maxAttempts: 4 } },
    routes: [{ from: IN, to: OUT, concurrency: 5 }],
  });
});
after(async () => {
  await gw?.stop();
  await new Promise<void>((r) => receiver?.close(() => r()));
  await redis?.dispose();
});

async function send(user: 'ops' | typeof BOB, to: string, id: string, body: unknown) {
  const r = await api(gw.url, 'POST', '/api/messages', { user, body: { to, id, body } });
  assert.equal(r.status, 202, `send to ${to}: ${JSON.stringify(r.body)}`);
  return r.body as { id: string; duplicate: boolean };
}

async function browse(address: string) {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { depth: number; messages: Message[] };
}

/** switchboard_duplicates_total for one endpoint, from /metrics. */
async function duplicates(endpoint: string): Promise<number> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`switchboard_duplicates_total{endpoint="${endpoint}"}`));
  return line ? Number(line.slice(line.indexOf('}') + 1)) : 0;
}

test('a queue: the same id from two users is two messages; a user repeating their own id is a duplicate, counted', async () => {
  const q = 'queue:q';
  const dupBefore = await duplicates('queue');
  assert.deepEqual(await send('ops', q, 'dup-1', { from: 'ops' }), { id: 'dup-1', duplicate: false });
  assert.deepEqual(await send(BOB, q, 'dup-1', { from: 'bob' }), { id: 'dup-1', duplicate: false }, "ops's id does not swallow bob's message");
  assert.equal((await browse(q)).depth, 2);

  assert.deepEqual(await send('ops', q, 'dup-1', { from: 'ops', again: true }), { id: 'dup-1', duplicate: true });
  assert.deepEqual(await send(BOB, q, 'dup-1', { from: 'bob', again: true }), { id: 'dup-1', duplicate: true });
  const queued = await browse(q);
  assert.equal(queued.depth, 2);
  assert.deepEqual(queued.messages.map((m) => `${m.sender.kind}:${m.sender.name}`).sort(), ['user:bob', 'user:ops']);
  assert.deepEqual(queued.messages.map((m) => m.body).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [{ from: 'bob' }, { from: 'ops' }], 'the first copy of each is kept');
  assert.equal(await duplicates('queue'), dupBefore + 2);
});

test('an outbox (webhook:): the same id from two users is two deliveries; a repeat is a counted duplicate', async () => {
  const dupBefore = await duplicates('webhook');
  const start = posts.length;
  assert.equal((await send('ops', 'webhook:crm', 'wh-dup', 1)).duplicate, false);
  assert.equal((await send(BOB, 'webhook:crm', 'wh-dup', 2)).duplicate, false);
  await waitFor(async () => posts.length >= start + 2, 20_000, 'two POSTs');
  assert.deepEqual(await send('ops', 'webhook:crm', 'wh-dup', 3), { id: 'wh-dup', duplicate: true });
  // Give a wrongly accepted repeat time to be POSTed before counting.
  await new Promise((r) => setTimeout(r, 500));
  const got = posts.slice(start).filter((h) => h['x-switchboard-id'] === 'wh-dup');
  assert.deepEqual(got.map((h) => h['x-switchboard-sender']).sort(), ['user:bob', 'user:ops']);
  assert.equal(await duplicates('webhook'), dupBefore + 1);
});

test('across a route: the original sender is kept, so a redelivery arrives once and another sender arrives too', async () => {
  assert.equal((await send('ops', IN, 'hop-1', { n: 1 })).duplicate, false);
  const moved = (await waitFor(async () => {
    const b = await browse(OUT);
    return b.depth === 1 ? b.messages[0] : undefined;
  }, 20_000, 'the route to move it'))!;
  assert.deepEqual(moved.sender, { kind: 'user', name: 'ops' }, 'the route forwards with its own principal but keeps the sender');
  assert.equal((await browse(IN)).depth, 0);

  // The same message again at the source (a resend by the same sender): caught at the source.
  assert.deepEqual(await send('ops', IN, 'hop-1', { n: 1 }), { id: 'hop-1', duplicate: true });
  // The route handing the same message over again (what a redelivery after a crash does): caught at the destination.
  const dupBefore = await duplicates('queue');
  const route = { principal: { kind: 'route' as const, name: Route.principalName({ from: IN, to: OUT }) }, door: 'route' as const };
  assert.deepEqual(await gw.router.send({ ...moved, to: OUT }, route), { id: 'hop-1', duplicate: true });
  assert.equal(await duplicates('queue'), dupBefore + 1);

  // Bob's message with the same id goes through the same route and arrives.
  assert.equal((await send(BOB, IN, 'hop-1', { n: 2 })).duplicate, false);
  const out = (await waitFor(async () => {
    const b = await browse(OUT);
    return b.depth === 2 ? b : undefined;
  }, 20_000, "bob's message at the destination"))!;
  assert.deepEqual(out.messages.map((m) => `${m.sender.kind}:${m.sender.name}`).sort(), ['user:bob', 'user:ops']);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await browse(OUT)).depth, 2, 'nothing else arrives');
});

test("the router's dedup store (endpoints that cannot check ids themselves) keys on address, sender and id, and counts repeats", async () => {
  const conn: Redis = await openRedis(redis.url);
  const metrics = new Metrics(async () => ({}));
  const delivered: string[] = [];
  // A stand-in for tmp: or mq:, the endpoints the router dedups for.
  const endpoint: Endpoint = {
    scheme: 'tmp',
    dedupsOnIngress: false,
    async send(m: Message): Promise<SendResult> {
      delivered.push(`${m.sender.name} ${m.id}`);
      return { id: m.id, duplicate: false };
    },
    async health() { return { ok: true }; },
    async close() {},
  };
  const router = new Router(new DedupStore(conn, `t-router-${Date.now()}`, 60_000), metrics, pino({ level: 'silent' }));
  router.register(endpoint);
  try {
    const ops = { kind: 'user' as const, name: 'ops' };
    const from = (sender: Message['sender'], to = 'tmp:k3x9q2-7/1') => createMessage({ to, id: 'same', body: null }, sender);
    const caller = { principal: ops, door: 'http' as const };
    assert.equal((await router.send(from(ops), caller)).duplicate, false);
    assert.equal((await router.send(from({ kind: 'user', name: 'bob' }), caller)).duplicate, false, 'another sender');
    assert.equal((await router.send(from(ops, 'tmp:k3x9q2-7/2'), caller)).duplicate, false, 'another address');
    assert.equal((await router.send(from(ops), caller)).duplicate, true, 'the same sender again');
    assert.deepEqual(delivered, ['ops same', 'bob same', 'ops same']);
    const counted = (await metrics.duplicates.get()).values.find((v) => v.labels.endpoint === 'tmp')?.value;
    assert.equal(counted, 1);
  } finally {
    await conn.quit();
  }
});
