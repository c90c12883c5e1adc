import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver } from 'rhea';
import type { Subscription } from '../../src/core/endpoint.ts';
import type { Message } from '../../src/core/message.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, USERS, waitFor, type ApiResponse } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

// Topics (DESIGN §1, §6): `topic:trades.eu` fans out to every subscription; a durable
// subscription is a queue at `topic:<topic>?subscription=<name>` (receive/ack/browse/dlq through
// the queue routes); subscriptions are listed, created and deleted through /api/topics with
// `admin`; over AMQP a receiver's link name and durable source make a durable subscription, the
// `shared` capability a shared one, and anything else lives as long as its link. A message
// reaches every subscription that existed when it was accepted, or none. Real Redis, real HTTP,
// rhea as the AMQP client.

type User = keyof typeof USERS;

let redis: TestRedis;
let gw: Gateway;
let flowsDir: string;
const subs = new Set<Subscription>();
const rheaConnections: Connection[] = [];

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'topic-publisher',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const sent = await ctx.send('topic:flows.published', { ref: input.ref }, { subject: 'published by a flow' });
    return { sent: sent.id };
  },
});
`;

before(async () => {
  redis = await startTestRedis();
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-topics-'));
  writeFileSync(join(flowsDir, 'topic-publisher.ts'), FLOW);
  gw = await startTestGateway(redis.url, {
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
    amqp: { port: 0, credit: 5 },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'topic:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
      // clerk may publish to trades.* and consume exactly topic:trades.eu (so its subscriptions), nothing else.
      { group: 'clerks', allow: [{ address: 'topic:trades.*', verbs: ['send'] }, { address: 'topic:trades.eu', verbs: ['consume', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});
after(async () => {
  for (const s of subs) await s.close().catch(() => undefined);
  for (const c of rheaConnections) c.close();
  await gw?.stop();
  await redis?.dispose();
  rmSync(flowsDir, { recursive: true, force: true });
});

const sub = (topic: string, name: string) => `topic:${topic}?subscription=${name}`;

async function createSub(topic: string, name: string, extra: Record<string, unknown> = {}, user: User = 'ops'): Promise<ApiResponse> {
  return api(gw.url, 'POST', `/api/topics/${enc(topic)}/subscriptions`, { user, body: { name, ...extra } });
}

async function mustCreate(topic: string, name: string, extra: Record<string, unknown> = {}) {
  const r = await createSub(topic, name, extra);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.subscription;
}

async function publish(to: string, id: string, body: unknown = { id }, user: User = 'ops'): Promise<ApiResponse> {
  return api(gw.url, 'POST', '/api/messages', { user, body: { to, id, body } });
}

async function mustPublish(to: string, id: string, body?: unknown, user: User = 'ops') {
  const r = await publish(to, id, body, user);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body as { id: string; duplicate: boolean };
}

async function receive(address: string, user: User = 'ops', max = 100) {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user, body: { max, leaseSeconds: 60 } });
  assert.equal(r.status, 200, `${address}: ${JSON.stringify(r.body)}`);
  return r.body.messages as (Message & { lease: string })[];
}

async function ack(address: string, leases: string[], user: User = 'ops') {
  const r = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { user, body: { leases } });
  assert.deepEqual(r.body, { acked: leases.length, expired: [] });
}

async function depth(address: string): Promise<number> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.depth as number;
}

/** Receives and acks everything in a subscription; the ids in order. */
async function drain(address: string, user: User = 'ops'): Promise<string[]> {
  const got = await receive(address, user);
  if (got.length > 0) await ack(address, got.map((m) => m.lease), user);
  return got.map((m) => m.id);
}

test('fan-out: two durable subscriptions and a pattern subscription each get one copy; the pattern also gets other topics it matches', async () => {
  await mustCreate('trades.eu', 'risk');
  await mustCreate('trades.eu', 'settlement');
  await mustCreate('trades.*', 'all');
  assert.equal((await mustPublish('topic:trades.eu', 'fan-1', { px: 101 })).duplicate, false);
  await mustPublish('topic:trades.eu', 'fan-2');
  await mustPublish('topic:trades.us', 'fan-us');
  assert.deepEqual(await drain(sub('trades.eu', 'risk')), ['fan-1', 'fan-2']);
  const settlement = await receive(sub('trades.eu', 'settlement'));
  assert.deepEqual(settlement.map((m) => m.id), ['fan-1', 'fan-2']);
  assert.deepEqual(settlement[0]!.body, { px: 101 });
  assert.equal(settlement[0]!.to, 'topic:trades.eu', 'a copy keeps the address it was published to');
  assert.equal(settlement[0]!.sender.name, 'ops');
  await ack(sub('trades.eu', 'settlement'), settlement.map((m) => m.lease));
  assert.deepEqual((await drain(sub('trades.*', 'all'))).sort(), ['fan-1', 'fan-2', 'fan-us']);

  // clerk consumes exactly topic:trades.eu: the subscriptions' addresses are governed by the topic's rule.
  await mustPublish('topic:trades.eu', 'fan-clerk', undefined, 'clerk');
  assert.deepEqual(await drain(sub('trades.eu', 'risk'), 'clerk'), ['fan-clerk']);
  const denied = await api(gw.url, 'POST', `/api/queues/${enc(sub('trades.*', 'all'))}/receive`, { user: 'clerk', body: { max: 1 } });
  assert.equal(denied.status, 403, 'clerk may not consume the pattern subscription');
  const wrong = await publish('topic:trades.*', 'to-a-pattern');
  assert.equal(wrong.status, 400, 'one publishes to a topic, not a pattern');
  const missing = await api(gw.url, 'POST', `/api/queues/${enc(sub('trades.eu', 'nobody-made-this'))}/receive`, { user: 'ops', body: { max: 1 } });
  assert.equal(missing.status, 404, JSON.stringify(missing.body));
  assert.match(missing.body.error.message, /risk/, 'names the subscriptions there are');
});

test('a subscription created after a publish does not get it; one deleted gets nothing more', async () => {
  await mustCreate('news.late', 'early');
  await mustPublish('topic:news.late', 'before-late');
  await mustCreate('news.late', 'late');
  await mustPublish('topic:news.late', 'after-late');
  assert.deepEqual(await drain(sub('news.late', 'early')), ['before-late', 'after-late']);
  assert.deepEqual(await drain(sub('news.late', 'late')), ['after-late']);
  assert.equal((await api(gw.url, 'DELETE', '/api/topics/news.late/subscriptions/early', { user: 'ops' })).status, 200);
  await mustPublish('topic:news.late', 'after-delete');
  assert.deepEqual(await drain(sub('news.late', 'late')), ['after-delete']);
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc(sub('news.late', 'early'))}`, { user: 'ops' })).status, 404);
  // A publication to a topic nobody subscribes to is accepted and goes nowhere.
  assert.equal((await mustPublish('topic:news.nobody', 'lonely')).duplicate, false);
});

test('a bounded subscription that is full refuses the publish with 503, and no subscription gets it (all or none)', async () => {
  await mustCreate('orders.bounded', 'small', { maxDepth: 2 });
  await mustCreate('orders.bounded', 'big');
  await mustCreate('orders.*', 'wide');
  await mustPublish('topic:orders.bounded', 'b-1');
  await mustPublish('topic:orders.bounded', 'b-2');
  const refused = await publish('topic:orders.bounded', 'b-3');
  assert.equal(refused.status, 503, JSON.stringify(refused.body));
  assert.equal(refused.headers.get('retry-after'), '5');
  assert.match(refused.body.error.message, /subscription 'small'.*full/);
  assert.equal(await depth(sub('orders.bounded', 'big')), 2, 'the unbounded subscription did not get the refused message');
  assert.equal(await depth(sub('orders.*', 'wide')), 2, 'nor did the pattern subscription');
  // Room again: the same message is accepted now, by every subscription.
  assert.deepEqual(await drain(sub('orders.bounded', 'small')), ['b-1', 'b-2']);
  await mustPublish('topic:orders.bounded', 'b-3');
  assert.deepEqual(await drain(sub('orders.bounded', 'big')), ['b-1', 'b-2', 'b-3']);
  assert.deepEqual(await drain(sub('orders.*', 'wide')), ['b-1', 'b-2', 'b-3']);
  assert.deepEqual(await drain(sub('orders.bounded', 'small')), ['b-3']);
});

test('dedup per subscription by (address, sender, id): a repeat is accepted, not delivered again; another sender\'s same id is delivered', async () => {
  await mustCreate('trades.dedup', 'one');
  await mustCreate('trades.*', 'dedup-pattern');
  assert.equal((await mustPublish('topic:trades.dedup', 'same-id')).duplicate, false);
  assert.equal((await mustPublish('topic:trades.dedup', 'same-id')).duplicate, true);
  assert.equal((await mustPublish('topic:trades.dedup', 'same-id', undefined, 'clerk')).duplicate, false, "clerk's id is clerk's own");
  const got = await receive(sub('trades.dedup', 'one'));
  assert.deepEqual(got.map((m) => `${m.sender.name}:${m.id}`), ['ops:same-id', 'clerk:same-id']);
  await ack(sub('trades.dedup', 'one'), got.map((m) => m.lease));
  assert.deepEqual(await drain(sub('trades.*', 'dedup-pattern')), ['same-id', 'same-id']);
});

test('a subscription has its dead letters, listed and replayed like a queue\'s', async () => {
  await mustCreate('alerts.dlq', 'pager');
  const address = sub('alerts.dlq', 'pager');
  const calls: string[] = [];
  const consumer = await gw.router.consume(address, async (m) => {
    calls.push(m.id);
    throw new Error(`cannot page for ${m.id}`);
  }, { maxInFlight: 1 }, SYSTEM_CALLER);
  subs.add(consumer);
  await mustPublish('topic:alerts.dlq', 'page-1');
  const dead = await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/dlq/${enc(address)}`, { user: 'ops' });
    return r.body.depth === 1 ? r.body : undefined;
  }, 30_000, 'a dead letter');
  assert.equal(dead.address, `dlq:${address}`);
  assert.equal(dead.messages[0].id, 'page-1');
  assert.match(dead.messages[0].deadLetter.reason, /cannot page/);
  assert.equal(calls.length, 3, 'three deliveries (queues.maxAttempts) before the dead letter');
  await consumer.close();
  subs.delete(consumer);
  const replayed = await api(gw.url, 'POST', `/api/dlq/${enc(address)}/replay`, { user: 'ops', body: { ids: ['page-1'] } });
  assert.deepEqual(replayed.body, { replayed: 1 });
  assert.deepEqual(await drain(address), ['page-1']);
});

test('a flow publishes with ctx.send(\'topic:…\') and every subscription gets it', async () => {
  await mustCreate('flows.published', 'a');
  await mustCreate('flows.*', 'b');
  const started = await api(gw.url, 'POST', '/api/flows/topic-publisher', { user: 'ops', body: { input: { ref: 'F-1' } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const [a] = (await waitFor(async () => { const m = await receive(sub('flows.published', 'a')); return m.length > 0 ? m : undefined; }, 30_000, 'the flow\'s publication'))!;
  assert.deepEqual(a!.body, { ref: 'F-1' });
  assert.equal(a!.sender.kind, 'flow');
  assert.equal(a!.subject, 'published by a flow');
  await ack(sub('flows.published', 'a'), [a!.lease]);
  assert.equal((await drain(sub('flows.*', 'b'))).length, 1);
});

test('API: list, create and delete subscriptions need admin on the topic; without it 403, audited', async () => {
  const created = await mustCreate('api.topic', 'first', { shared: true, maxDepth: 10 });
  assert.deepEqual(created, { name: 'first', durable: true, shared: true, maxDepth: 10, depth: 0, address: sub('api.topic', 'first') });
  await mustCreate('api.*', 'by-pattern');
  assert.equal((await createSub('api.topic', 'first')).status, 409, 'a name is taken once per topic');
  assert.equal((await createSub('api.topic', 'bad name')).status, 400);
  await mustPublish('topic:api.topic', 'api-1');
  const list = await api(gw.url, 'GET', `/api/topics/${enc('topic:api.topic')}/subscriptions`, { user: 'ops' });
  assert.equal(list.status, 200, JSON.stringify(list.body));
  const byName = new Map((list.body.subscriptions as { name: string }[]).map((s) => [s.name, s]));
  assert.deepEqual(byName.get('first'), { name: 'first', durable: true, shared: true, maxDepth: 10, depth: 1, address: sub('api.topic', 'first') });
  assert.deepEqual(byName.get('by-pattern'), { name: 'by-pattern', durable: true, shared: false, pattern: 'topic:api.*', depth: 1, address: sub('api.*', 'by-pattern') });
  // The topic without the scheme names the same topic.
  assert.equal((await api(gw.url, 'GET', '/api/topics/api.topic/subscriptions', { user: 'ops' })).body.subscriptions.length, 2);

  for (const [method, path, body] of [
    ['GET', '/api/topics/api.topic/subscriptions', undefined],
    ['POST', '/api/topics/api.topic/subscriptions', { name: 'clerks-own' }],
    ['DELETE', '/api/topics/api.topic/subscriptions/first', undefined],
  ] as const) {
    const r = await api(gw.url, method, path, { user: 'clerk', ...(body ? { body } : {}) });
    assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
  }
  const audit = await waitFor(async () => {
    const r = await api(gw.url, 'GET', '/api/audit?actor=user:clerk&action=access.denied', { user: 'ops' });
    const entries = (r.body.entries as { target?: string; detail?: string }[]).filter((e) => e.target === 'topic:api.topic');
    return entries.length >= 3 ? entries : undefined;
  }, 10_000, 'the refusals in the audit trail');
  assert.ok(audit!.some((e) => /admin denied/.test(e.detail ?? '')));

  const deleted = await api(gw.url, 'DELETE', '/api/topics/api.topic/subscriptions/first', { user: 'ops' });
  assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
  assert.equal((await api(gw.url, 'DELETE', '/api/topics/api.topic/subscriptions/first', { user: 'ops' })).status, 404);
  const after = await api(gw.url, 'GET', '/api/topics/api.topic/subscriptions', { user: 'ops' });
  assert.deepEqual(after.body.subscriptions.map((s: { name: string }) => s.name), ['by-pattern']);
  const gone = await api(gw.url, 'GET', `/api/queues/${enc(sub('api.topic', 'first'))}`, { user: 'ops' });
  assert.equal(gone.status, 404, 'a deleted subscription is gone with its messages');
  const created2 = await api(gw.url, 'GET', '/api/audit?actor=user:ops&action=topic.subscription.created', { user: 'ops' });
  assert.ok((created2.body.entries as { target?: string }[]).some((e) => e.target === sub('api.topic', 'first')));
});

// ───────────────────────────── AMQP (rhea as the client) ─────────────────────────────

async function rheaConnect(user: User = 'ops'): Promise<Connection> {
  const container = rhea.create_container({ id: `topics-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: gw.amqpPort!, username: user, password: USERS[user], reconnect: false } as ConnectionOptions);
  rheaConnections.push(c);
  for (const e of ['error', 'session_error', 'sender_error', 'receiver_error']) c.on(e, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('connection_error', (ctx: EventContext) => reject(new Error(`connection error: ${JSON.stringify(ctx.connection.error)}`)));
    c.once('disconnected', () => reject(new Error('disconnected')));
  });
  return c;
}

/** A receiver that accepts what it gets (after `delayMs`) and records the ids. */
async function receiver(c: Connection, name: string, source: Record<string, unknown>, delayMs = 0): Promise<{ link: Receiver; ids: string[] }> {
  const ids: string[] = [];
  const link: Receiver = c.open_receiver({ name, source, autoaccept: false, credit_window: 5 } as never);
  link.on('message', (ctx: EventContext) => {
    ids.push(String(ctx.message?.message_id));
    setTimeout(() => (ctx.delivery as Delivery).accept(), delayMs);
  });
  await new Promise<void>((resolve, reject) => {
    link.once('receiver_open', () => resolve());
    link.once('receiver_error', (ctx: EventContext) => reject(new Error(`receiver refused: ${JSON.stringify(ctx.receiver?.error)}`)));
  });
  return { link, ids };
}

function detach(link: Receiver): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 3000);
    link.once('receiver_close', () => { clearTimeout(t); resolve(); });
    link.detach();
  });
}

async function subscriptionsOf(topic: string): Promise<{ name: string; durable: boolean; shared: boolean; depth: number }[]> {
  const r = await api(gw.url, 'GET', `/api/topics/${enc(topic)}/subscriptions`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.subscriptions;
}

const DURABLE = { durable: 2, expiry_policy: 'never' };

/** `switchboard <args>` against the test gateway as `user`: exit code and parsed stdout. */
function cli(args: string[], user: User = 'ops'): Promise<{ code: number; out: any; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SWITCHBOARD_URL', 'SWITCHBOARD_USER', 'SWITCHBOARD_PASSWORD', 'SWITCHBOARD_CONFIG', 'SWITCHBOARD_TOKEN', 'NODE_OPTIONS']) delete env[k];
  Object.assign(env, { SWITCHBOARD_URL: gw.url, SWITCHBOARD_USER: user, SWITCHBOARD_PASSWORD: USERS[user] });
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [bin, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      if (code === -1) return reject(new Error(`the CLI did not run: ${err?.message}\n${stderr}`));
      resolve({ code, out: stdout.trim() ? JSON.parse(stdout) : undefined, stderr });
    });
  });
}

test('CLI: topics create, ls and rm through the API, with the same admin rule', { timeout: 120_000 }, async () => {
  const created = await cli(['topics', 'create', 'cli.topic', 'from-cli', '--shared', '--max-depth', '5']);
  assert.equal(created.code, 0, created.stderr);
  assert.deepEqual(created.out.subscription, { name: 'from-cli', durable: true, shared: true, maxDepth: 5, depth: 0, address: sub('cli.topic', 'from-cli') });
  await mustPublish('topic:cli.topic', 'cli-1');
  const listed = await cli(['topics', 'ls', 'topic:cli.topic']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(listed.out.subscriptions.map((s: { name: string; depth: number }) => [s.name, s.depth]), [['from-cli', 1]]);
  const refused = await cli(['topics', 'rm', 'cli.topic', 'from-cli'], 'clerk');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /403: user:clerk may not admin on topic:cli\.topic/);
  const removed = await cli(['topics', 'rm', 'cli.topic', 'from-cli']);
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual((await cli(['topics', 'ls', 'cli.topic'])).out.subscriptions, []);
});

test('AMQP: a receiver whose link name is the subscription, with a durable source, survives detaching and gets what was published meanwhile', { timeout: 60_000 }, async () => {
  const c = await rheaConnect();
  const first = await receiver(c, 'amqp-risk', { address: 'topic:amqp.trades', ...DURABLE, capabilities: ['topic'] });
  await waitFor(async () => (await subscriptionsOf('amqp.trades')).some((s) => s.name === 'amqp-risk' && s.durable), 10_000, 'the durable subscription');
  await mustPublish('topic:amqp.trades', 'amqp-1');
  await waitFor(async () => first.ids.includes('amqp-1'), 10_000, 'amqp-1 over AMQP');
  // Settled before the detach (else it rightly comes back to the subscription).
  await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/queues/${enc(sub('amqp.trades', 'amqp-risk'))}`, { user: 'ops' });
    return r.body.depth === 0 && r.body.inFlight === 0;
  }, 10_000, 'amqp-1 settled');
  await detach(first.link);
  await mustPublish('topic:amqp.trades', 'amqp-2');
  await mustPublish('topic:amqp.trades', 'amqp-3');
  const kept = (await subscriptionsOf('amqp.trades')).find((s) => s.name === 'amqp-risk');
  assert.deepEqual(kept && { durable: kept.durable, depth: kept.depth }, { durable: true, depth: 2 }, 'the subscription kept the messages published while no link was attached');
  const again = await receiver(c, 'amqp-risk', { address: 'topic:amqp.trades', ...DURABLE, capabilities: ['topic'] });
  await waitFor(async () => again.ids.length === 2, 10_000, 'the two messages published meanwhile');
  assert.deepEqual(again.ids, ['amqp-2', 'amqp-3']);
  await detach(again.link);
});

test('AMQP: a receiver without a durable source has a subscription of its own, gone when the link detaches', { timeout: 60_000 }, async () => {
  const c = await rheaConnect();
  const r = await receiver(c, 'amqp-volatile', { address: 'topic:amqp.volatile' });
  const mine = (await waitFor(async () => (await subscriptionsOf('amqp.volatile')).find((s) => !s.durable), 10_000, 'the non-durable subscription'))!;
  await mustPublish('topic:amqp.volatile', 'v-1');
  await waitFor(async () => r.ids.includes('v-1'), 10_000, 'v-1 over AMQP');
  await detach(r.link);
  await waitFor(async () => !(await subscriptionsOf('amqp.volatile')).some((s) => s.name === mine.name), 10_000, 'the subscription to go with its link');
  // What is published now goes to nobody; a new link starts from now.
  await mustPublish('topic:amqp.volatile', 'v-2');
  const later = await receiver(c, 'amqp-volatile', { address: 'topic:amqp.volatile' });
  await waitFor(async () => (await subscriptionsOf('amqp.volatile')).length === 1, 10_000, 'the new link\'s subscription');
  await mustPublish('topic:amqp.volatile', 'v-3');
  await waitFor(async () => later.ids.includes('v-3'), 10_000, 'v-3 over AMQP');
  assert.deepEqual(later.ids, ['v-3']);
  await detach(later.link);
});

test('AMQP: a shared durable subscription (capability shared) with two receivers splits the messages between them', { timeout: 60_000 }, async () => {
  const one = await rheaConnect();
  const two = await rheaConnect();
  const source = { address: 'topic:amqp.shared', ...DURABLE, capabilities: ['topic', 'shared', 'global'] };
  const a = await receiver(one, 'amqp-shared|global', source, 30);
  const b = await receiver(two, 'amqp-shared|global2', source, 30);
  const [s] = (await waitFor(async () => { const l = await subscriptionsOf('amqp.shared'); return l.length === 1 ? l : undefined; }, 10_000, 'one subscription'))!;
  assert.deepEqual({ name: s!.name, durable: s!.durable, shared: s!.shared }, { name: 'amqp-shared', durable: true, shared: true });
  await new Promise((r) => setTimeout(r, 500)); // both consumers pulling
  const N = 30;
  for (let i = 0; i < N; i++) await mustPublish('topic:amqp.shared', `sh-${i}`);
  await waitFor(async () => a.ids.length + b.ids.length >= N, 20_000, `${N} messages over the two links`);
  await new Promise((r) => setTimeout(r, 300));
  const all = [...a.ids, ...b.ids];
  assert.equal(all.length, N, 'each message once');
  assert.equal(new Set(all).size, N);
  assert.ok(a.ids.length > 0 && b.ids.length > 0, `split between the receivers: ${a.ids.length} and ${b.ids.length}`);
  await detach(a.link);
  await detach(b.link);
});
