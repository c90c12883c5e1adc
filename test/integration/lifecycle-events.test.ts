/**
 * Lifecycle events as CloudEvents 1.0 (issue 18.1, DESIGN §11), consumed by each kind of consumer
 * an ops team runs, all real:
 * - a Qpid Proton client (Debian's python3-qpid-proton) reading RabbitMQ, where `mq:legacy/…`
 *   events arrive in binary mode (`cloudEvents:*` application properties, data as the body);
 * - a webhook receiver (an HTTP server in this test) checking X-Switchboard-Signature;
 * - a rhea client on the embedded AMQP endpoint consuming `queue:ops.events` (structured mode).
 * Plus: a down destination loses nothing and does not hold up the change, dedup by event id, no
 * event for a refused change, no secrets, and a client forging a `switchboard.*` event is refused.
 *
 * Real redis-server, RabbitMQ and Proton; the gateway in this process; every child stopped by PID.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import rhea, { type Connection, type ConnectionOptions, type EventContext, type Receiver, type Sender } from 'rhea';
import { toAmqp } from '../../src/amqp/mapping.ts';
import { createMessage } from '../../src/core/message.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { LifecycleEvents } from '../../src/events/lifecycle-events.ts';
import type { Gateway } from '../../src/gateway.ts';
import { verify } from '../../src/network/webhook-signature.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { createLogger } from '../../src/log.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

const PYTHON = '/usr/bin/python3';
const PREFIX = `ev${Math.random().toString(36).slice(2, 8)}`;
const SIEM_SECRET = 'siem-secret-0123456789abcdef';
const SOURCE = 'https://switchboard.test';
const SECRET_INPUT = 'hunter2-must-not-leak';

const FLOWS: Record<string, string> = {
  'approve.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'approve',
  input: z.object({ ref: z.string(), password: z.string() }),
  async run(ctx, input) {
    const d = await ctx.ask('group:ops', { title: 'Approve ' + input.ref, actions: ['approve', 'reject'] });
    return { action: d.action, password: input.password };
  },
});
`,
  'quick.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({ name: 'quick', input: z.object({ n: z.number() }), async run(_ctx, input) { return { n: input.n }; } });
`,
  'escalate.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'escalate',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const d = await ctx.ask('group:ops', { title: 'Overdue ' + input.ref, actions: ['ok'], due: '1s', escalateTo: 'group:seniors' });
    return d.action;
  },
});
`,
  'boom.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({ name: 'boom', input: z.object({}), async run() { throw new Error('boom on purpose'); } });
`,
};

/** A Proton client: takes up to N messages from a RabbitMQ queue, prints each as a JSON line. */
const PROTON_CONSUMER = `
import json, sys
from proton.utils import BlockingConnection
from proton import Timeout
url, address, n, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
conn = BlockingConnection(url, user='guest', password='guest', allowed_mechs='PLAIN')
r = conn.create_receiver(address, credit=n)
got = 0
while got < n:
    try:
        m = r.receive(timeout=wait)
    except Timeout:
        break
    body = m.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode('utf-8')
    print(json.dumps({'id': str(m.id), 'content_type': m.content_type, 'properties': {str(k): str(v) for k, v in (m.properties or {}).items()}, 'body': body}), flush=True)
    r.accept()
    got += 1
conn.close()
`;

interface AmqpEvent { id: string; contentType: string; sender: string; props: Record<string, unknown>; body: any }
interface Hook { headers: Record<string, string>; body: string; verified: string | undefined }

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
let gw: Gateway | undefined;
let dir: string | undefined;
let hooks: Server | undefined;
let consumer: Connection | undefined;
const amqpEvents: AmqpEvent[] = [];
const posted: Hook[] = [];
const connections: Connection[] = [];

function rheaConnect(user: keyof typeof USERS): Promise<Connection> {
  const container = rhea.create_container({ id: `ev-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: gw!.amqpPort!, username: user, password: USERS[user], reconnect: false } as ConnectionOptions);
  connections.push(c);
  for (const ev of ['error', 'session_error', 'sender_error', 'receiver_error']) c.on(ev, () => {});
  return new Promise((resolve, reject) => {
    c.once('connection_open', () => resolve(c));
    c.once('disconnected', (ctx: EventContext) => reject(new Error(`disconnected: ${(ctx as { error?: Error }).error?.message ?? 'no reason'}`)));
  });
}

/** Runs the Proton consumer against RabbitMQ; the messages it printed. */
function protonTake(queue: string, n: number, waitSec = 5): Promise<{ id: string; content_type: string; properties: Record<string, string>; body: string }[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(dir!, 'consume.py'), `amqp://127.0.0.1:${rabbit!.port}`, `/amq/queue/${queue}`, String(n), String(waitSec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`proton consumer exited ${code}: ${err}`));
      resolve(out.split('\n').filter(Boolean).map((l) => JSON.parse(l)));
    });
  });
}

const eventsOf = (type: string, subject?: string) => amqpEvents.filter((e) => e.body?.type === type && (subject === undefined || e.body.subject === subject));

async function startFlow(name: string, input: unknown): Promise<string> {
  const r = await api(gw!.url, 'POST', `/api/flows/${name}`, { user: 'ops', body: { input } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.instanceId;
}

async function flowStatus(name: string, id: string): Promise<string> {
  return (await api(gw!.url, 'GET', `/api/flows/${name}/${id}`, { user: 'ops' })).body.status;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-events-'));
  for (const [f, text] of Object.entries(FLOWS)) writeFileSync(join(dir, f), text);
  writeFileSync(join(dir, 'consume.py'), PROTON_CONSUMER);
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
  const hookPort = await freePort();
  hooks = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const h = req.headers as Record<string, string>;
      if (req.url === '/refuse') { res.statusCode = 400; res.end(); return; }
      const verified = verify(SIEM_SECRET, { direction: 'outbound', timestamp: h['x-switchboard-timestamp'], id: h['x-switchboard-id'], correlationId: h['x-switchboard-correlation-id'], subject: h['x-switchboard-subject'], sender: h['x-switchboard-sender'] }, h['x-switchboard-signature'], body);
      posted.push({ headers: h, body: body.toString('utf8'), verified });
      res.statusCode = verified === undefined ? 200 : 401;
      res.end();
    });
  });
  await new Promise<void>((r) => hooks!.listen(hookPort, '127.0.0.1', () => r()));
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    http: { port: 0, host: '127.0.0.1', baseUrl: SOURCE },
    amqp: { port: 0, credit: 20 },
    flows: { dir, lockTimeout: '5s', stalledCheck: '1s' },
    brokers: { legacy: { url: rabbit.url, addressFormat: 'rabbitmq', maxAttempts: 3, sendTimeout: '3s' } },
    // A broker queue whose messages go to a flow that refuses them: poison, rejected to RabbitMQ.
    routes: [{ from: 'mq:legacy/ev.poison', to: 'flow:quick', concurrency: 2 }],
    webhooks: {
      siem: { url: `http://127.0.0.1:${hookPort}/siem`, secret: SIEM_SECRET, backoff: '100ms', maxAttempts: 5 },
      refusing: { url: `http://127.0.0.1:${hookPort}/refuse`, secret: 'refusing-secret-0123456789', backoff: '100ms', maxAttempts: 2 },
    },
    events: [
      { types: ['switchboard.flow.*'], to: 'mq:legacy/ops.events' },
      { types: ['switchboard.flow.completed', 'switchboard.task.*', 'switchboard.permission.changed'], to: 'webhook:siem' },
      { types: ['switchboard.**'], to: 'queue:ops.events' },
      // A consumer that refuses every event: were dead letters of events events, this would never end.
      { types: ['switchboard.flow.completed', 'switchboard.message.dead-lettered'], to: 'queue:ops.reject' },
    ],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'mq:legacy/ev.poison', verbs: ['send'] }, { address: 'group:ops', verbs: ['consume'] }, { address: 'group:seniors', verbs: ['consume'] }, { address: 'webhook:**', verbs: ['send', 'browse'] }] },
      // clerk may publish to the events queue (as itself), which is where a forgery would be tried.
      { group: 'clerks', allow: [{ address: 'queue:ops.events', verbs: ['send'] }, { address: 'group:ops', verbs: ['consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    log: { level: 'error' },
  });
  consumer = await rheaConnect('ops');
  const receiver: Receiver = consumer.open_receiver({ source: { address: 'queue:ops.events' }, credit_window: 50 });
  receiver.on('message', (ctx: EventContext) => {
    const m = ctx.message as any;
    const raw = m.body?.content ?? m.body;
    const body = Buffer.isBuffer(raw) ? JSON.parse(raw.toString('utf8')) : raw;
    amqpEvents.push({ id: String(m.message_id), contentType: m.content_type, sender: m.application_properties?.['switchboard-sender'], props: m.application_properties ?? {}, body });
  });
});

after(async () => {
  for (const c of connections) c.close();
  await gw?.stop().catch(() => {});
  await new Promise<void>((r) => (hooks ? hooks.close(() => r()) : r()));
  await rabbit?.dispose();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('one approval: flow, task and completion events reach RabbitMQ (Proton, binary mode), the webhook (signed) and the embedded endpoint (rhea, structured)', { timeout: 120_000 }, async () => {
  const id = await startFlow('approve', { ref: 'INV-1', password: SECRET_INPUT });
  const subject = `flow:approve/${id}`;
  const task = await waitFor(async () => (await api(gw!.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: any) => t.title === 'Approve INV-1'), 30_000, 'the task');
  assert.equal((await api(gw!.url, 'POST', `/api/tasks/${task.id}/claim`, { user: 'ops' })).status, 200);
  const decided = await api(gw!.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  await waitFor(async () => (await flowStatus('approve', id)) === 'completed', 30_000, 'the flow to complete');

  // rhea on the embedded endpoint: every type, structured, sent by the gateway itself.
  const want = ['switchboard.flow.started', 'switchboard.flow.waiting', 'switchboard.task.created', 'switchboard.task.claimed', 'switchboard.task.decided', 'switchboard.flow.completed'];
  await waitFor(async () => want.every((t) => amqpEvents.some((e) => e.body?.type === t && (e.body.subject === subject || e.body.subject === `task:${task.id}`))), 30_000, `events ${want.join(', ')}`);
  const mine = amqpEvents.filter((e) => e.body.subject === subject || e.body.subject === `task:${task.id}`);
  for (const e of mine) {
    assert.equal(e.contentType, 'application/cloudevents+json');
    assert.equal(e.sender, 'system:switchboard', 'events are sent by the gateway itself');
    assert.equal(e.body.specversion, '1.0');
    assert.equal(e.body.source, SOURCE);
    assert.equal(e.body.datacontenttype, 'application/json');
    assert.equal(e.id, e.body.id, 'the event id is the message id');
    assert.ok(!Number.isNaN(Date.parse(e.body.time)));
  }
  assert.equal(new Set(mine.map((e) => e.id)).size, mine.length, 'every event has its own id');
  assert.deepEqual(eventsOf('switchboard.flow.completed', subject)[0]!.body.data, { flow: 'approve', instanceId: id, startedBy: 'user:ops' });
  const decision = eventsOf('switchboard.task.decided', `task:${task.id}`)[0]!.body.data;
  assert.equal(decision.by, 'user:ops');
  assert.equal(decision.action, 'approve');
  assert.equal(eventsOf('switchboard.flow.waiting', subject)[0]!.body.data.kind, 'ask');
  // No secrets: not the flow's input or result, not the task's reply token.
  const everything = JSON.stringify(amqpEvents);
  assert.ok(!everything.includes(SECRET_INPUT), 'the flow input password must not be in any event');
  assert.ok(!/"(password|token|secret|nonce|correlationId|replyTo)"/i.test(everything), everything);

  // Proton reading RabbitMQ: the flow events in binary mode.
  await waitFor(async () => ((await rabbit!.queues())['ops.events']?.ready ?? 0) >= 3, 30_000, 'three flow events in RabbitMQ');
  const fromRabbit = await protonTake('ops.events', 10, 3);
  const types = fromRabbit.filter((m) => m.properties['cloudEvents:subject'] === subject).map((m) => m.properties['cloudEvents:type']).sort();
  assert.deepEqual(types, ['switchboard.flow.completed', 'switchboard.flow.started', 'switchboard.flow.waiting']);
  for (const m of fromRabbit) {
    assert.equal(m.properties['cloudEvents:specversion'], '1.0');
    assert.equal(m.properties['cloudEvents:source'], SOURCE);
    assert.equal(m.properties['cloudEvents:id'], m.id);
    assert.equal(m.properties['switchboard-sender'], 'system:switchboard');
    assert.equal(m.content_type, 'application/json', 'binary mode: datacontenttype is the AMQP content-type');
    assert.equal(JSON.parse(m.body).instanceId, id, 'binary mode: the body is the data');
  }
  assert.ok(!JSON.stringify(fromRabbit).includes(SECRET_INPUT));

  // The webhook receiver: signed, structured, only the types mapped there.
  await waitFor(async () => posted.filter((p) => JSON.parse(p.body).subject === subject || JSON.parse(p.body).subject === `task:${task.id}`).length >= 4, 30_000, 'four events at the webhook');
  const atHook = posted.map((p) => ({ ...p, event: JSON.parse(p.body) })).filter((p) => p.event.subject === subject || p.event.subject === `task:${task.id}`);
  for (const p of atHook) {
    assert.equal(p.verified, undefined, `signature: ${p.verified}`);
    assert.equal(p.headers['content-type'], 'application/cloudevents+json');
    assert.equal(p.headers['x-switchboard-id'], p.event.id);
  }
  assert.deepEqual(atHook.map((p) => p.event.type).sort(), ['switchboard.flow.completed', 'switchboard.task.claimed', 'switchboard.task.created', 'switchboard.task.decided']);
});

test('a failed flow is an event; a refused change (bad input, a non-admin granting) makes none', { timeout: 60_000 }, async () => {
  const boom = await startFlow('boom', {});
  await waitFor(async () => eventsOf('switchboard.flow.failed', `flow:boom/${boom}`).length === 1, 30_000, 'flow.failed');
  const failed = eventsOf('switchboard.flow.failed', `flow:boom/${boom}`)[0]!.body.data;
  assert.equal(failed.error.message, 'boom on purpose');
  assert.equal(failed.attempt, 0);

  const startedBefore = eventsOf('switchboard.flow.started').length;
  const bad = await api(gw!.url, 'POST', '/api/flows/quick', { user: 'ops', body: { input: { n: 'not a number' } } });
  assert.equal(bad.status, 400);
  const refused = await api(gw!.url, 'POST', '/api/permissions', { user: 'clerk', body: { user: 'clerk', address: 'queue:**', verbs: ['consume'], force: true } });
  assert.equal(refused.status, 403);
  const granted = await api(gw!.url, 'POST', '/api/permissions', { user: 'ops', body: { user: 'clerk', address: 'queue:extra.*', verbs: ['browse'], force: true } });
  assert.equal(granted.status, 201, JSON.stringify(granted.body));
  // A later change is the marker: once its events are in, the refused ones would have been too.
  const marker = await startFlow('quick', { n: 1 });
  await waitFor(async () => eventsOf('switchboard.flow.completed', `flow:quick/${marker}`).length === 1 && eventsOf('switchboard.permission.changed').length >= 1, 30_000, 'the marker events');
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(eventsOf('switchboard.flow.started').length, startedBefore + 1, 'only the valid start is an event');
  const changes = eventsOf('switchboard.permission.changed');
  assert.equal(changes.length, 1, JSON.stringify(changes.map((c) => c.body.data)));
  assert.equal(changes[0]!.body.data.change, 'added');
  assert.equal(changes[0]!.body.data.by, 'user:ops');
  assert.equal(changes[0]!.body.data.rule.address, 'queue:extra.*');
});

test('delegation, escalation, cancellation and a retried failure are events, each with who and what', { timeout: 90_000 }, async () => {
  const id = await startFlow('approve', { ref: 'INV-2', password: SECRET_INPUT });
  const task = await waitFor(async () => (await api(gw!.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: any) => t.title === 'Approve INV-2'), 30_000, 'the task');
  const delegated = await api(gw!.url, 'POST', `/api/tasks/${task.id}/delegate`, { user: 'ops', body: { to: 'clerk' } });
  assert.equal(delegated.status, 200, JSON.stringify(delegated.body));
  const cancelled = await api(gw!.url, 'POST', `/api/flows/approve/${id}/cancel`, { user: 'ops' });
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  await waitFor(async () => eventsOf('switchboard.task.delegated', `task:${task.id}`).length === 1 && eventsOf('switchboard.flow.cancelled', `flow:approve/${id}`).length === 1, 30_000, 'delegated and cancelled');
  const d = eventsOf('switchboard.task.delegated', `task:${task.id}`)[0]!.body.data;
  assert.equal(d.by, 'user:ops');
  assert.equal(d.assignee, 'clerk');
  assert.deepEqual(d.previous, { group: 'ops' });
  assert.deepEqual(eventsOf('switchboard.flow.cancelled', `flow:approve/${id}`)[0]!.body.data, { flow: 'approve', instanceId: id, by: 'user:ops' });

  const late = await startFlow('escalate', { ref: 'L-1' });
  await waitFor(async () => eventsOf('switchboard.task.escalated').some((e) => e.body.data.group === 'seniors'), 30_000, 'task.escalated');
  const esc = eventsOf('switchboard.task.escalated').find((e) => e.body.data.group === 'seniors')!.body.data;
  assert.deepEqual(esc.previous, { group: 'ops' });
  assert.equal(esc.by, 'system:switchboard');
  assert.equal(eventsOf('switchboard.flow.waiting', `flow:escalate/${late}`).length, 1);

  const boom = await startFlow('boom', {});
  await waitFor(async () => eventsOf('switchboard.flow.failed', `flow:boom/${boom}`).length === 1, 30_000, 'the first failure');
  const retried = await api(gw!.url, 'POST', `/api/flows/boom/${boom}/retry`, { user: 'ops' });
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
  await waitFor(async () => eventsOf('switchboard.flow.failed', `flow:boom/${boom}`).length === 2, 30_000, 'the failure of the retry');
  assert.deepEqual(eventsOf('switchboard.flow.failed', `flow:boom/${boom}`).map((e) => e.body.data.attempt).sort(), [0, 1]);
});

test('a dead letter and its replay are events', { timeout: 60_000 }, async () => {
  const sent = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:refusing', id: 'to-be-refused', body: { x: 1 } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'webhook:refusing').length === 1, 30_000, 'message.dead-lettered');
  const dl = eventsOf('switchboard.message.dead-lettered', 'webhook:refusing')[0]!.body.data;
  assert.equal(dl.messageId, 'to-be-refused');
  assert.equal(dl.transport, 'webhook');
  assert.match(dl.reason, /400/);
  const replay = await api(gw!.url, 'POST', `/api/dlq/${enc('webhook:refusing')}/replay`, { user: 'ops', body: {} });
  assert.equal(replay.status, 200, JSON.stringify(replay.body));
  await waitFor(async () => eventsOf('switchboard.message.replayed', 'webhook:refusing').length === 1, 30_000, 'message.replayed');
  assert.equal(eventsOf('switchboard.message.replayed', 'webhook:refusing')[0]!.body.data.replayed, 1);
  // The replayed message is refused again: a second dead-lettering, a second event.
  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'webhook:refusing').length === 2, 30_000, 'the second dead letter');

  // A queue's dead letter: a message past its expiry when a consumer asks for it.
  const expired = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:work.expiring', id: 'too-late', expiresAt: new Date(Date.now() + 300).toISOString(), body: { x: 2 } } });
  assert.equal(expired.status, 202, JSON.stringify(expired.body));
  await new Promise((r) => setTimeout(r, 600));
  const got = await api(gw!.url, 'POST', `/api/queues/${enc('queue:work.expiring')}/receive`, { user: 'ops', body: { max: 5, leaseSeconds: 30 } });
  assert.equal(got.status, 200, JSON.stringify(got.body));
  assert.deepEqual(got.body.messages, []);
  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'queue:work.expiring').length === 1, 30_000, 'the queue dead letter');
  const q = eventsOf('switchboard.message.dead-lettered', 'queue:work.expiring')[0]!.body.data;
  assert.equal(q.transport, 'queue');
  assert.equal(q.messageId, 'too-late');
  assert.match(q.reason, /expired at/);
});

test('a queue dead letter replayed or discarded at once, before the reconciler looked, still has its dead-lettered event, once', { timeout: 60_000 }, async () => {
  // Dead-lettered by the receive itself: the message is past its expiry when it is asked for.
  const deadLetterNow = async (address: string, id: string) => {
    const sent = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, expiresAt: new Date(Date.now() + 200).toISOString(), body: { id } } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    await new Promise((r) => setTimeout(r, 400));
    const got = await api(gw!.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 5, leaseSeconds: 30 } });
    assert.deepEqual(got.body.messages, []);
  };
  await deadLetterNow('queue:work.quickreplay', 'replayed-at-once');
  const replay = await api(gw!.url, 'POST', `/api/dlq/${enc('queue:work.quickreplay')}/replay`, { user: 'ops', body: {} });
  assert.equal(replay.status, 200, JSON.stringify(replay.body));
  assert.equal(replay.body.replayed, 1);
  await deadLetterNow('queue:work.quickdiscard', 'discarded-at-once');
  assert.deepEqual(await gw!.router.discardDeadLetters('queue:work.quickdiscard', ['discarded-at-once'], SYSTEM_CALLER), { discarded: 1 });

  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'queue:work.quickreplay').length === 1 && eventsOf('switchboard.message.dead-lettered', 'queue:work.quickdiscard').length === 1, 30_000, 'both dead-lettered events');
  // Two reconciler passes later (every 2 s) there is still one of each.
  await new Promise((r) => setTimeout(r, 4500));
  const replayed = eventsOf('switchboard.message.dead-lettered', 'queue:work.quickreplay');
  const discarded = eventsOf('switchboard.message.dead-lettered', 'queue:work.quickdiscard');
  assert.equal(replayed.length, 1);
  assert.equal(discarded.length, 1);
  assert.equal(replayed[0]!.body.data.messageId, 'replayed-at-once');
  assert.equal(discarded[0]!.body.data.messageId, 'discarded-at-once');
  assert.match(discarded[0]!.body.data.reason, /expired at/);
});

test('a poison message rejected to the broker (mq:) is a dead-lettered event, recorded before the reject, once', { timeout: 90_000 }, async () => {
  const sent = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:legacy/ev.poison', id: 'poison-ev-1', body: { n: 'not a number' } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'mq:legacy/ev.poison').length >= 1, 60_000, 'the mq dead-letter event');
  const [e] = eventsOf('switchboard.message.dead-lettered', 'mq:legacy/ev.poison');
  assert.equal(e!.body.data.transport, 'mq');
  assert.equal(e!.body.data.messageId, 'poison-ev-1');
  assert.match(e!.body.data.reason, /failed 3 times: .*input for flow 'quick' is not valid/);
  // Rejected to the broker, not redelivered: no second event, the queue empty on RabbitMQ.
  await waitFor(async () => { const q = (await rabbit!.queues())['ev.poison']; return q !== undefined && q.ready === 0 && q.unacked === 0; }, 30_000, 'ev.poison empty on RabbitMQ');
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(eventsOf('switchboard.message.dead-lettered', 'mq:legacy/ev.poison').length, 1);
});

test('the same mq: message moved back from the broker\'s dead letters is delivered again (not rejected unseen), and its second dead-lettering is a second event', { timeout: 90_000 }, async () => {
  // What an operator's shovel from RabbitMQ's dead-letter queue does: the very message (same
  // message-id) back on its queue. Published straight to RabbitMQ, as the gateway would send it.
  const again = toAmqp(createMessage({ to: 'mq:legacy/ev.poison', id: 'poison-ev-1', body: { n: 'not a number' } }, { kind: 'user', name: 'ops' }));
  const c = rhea.create_container().connect({ host: '127.0.0.1', port: rabbit!.port, username: 'guest', password: 'guest', reconnect: false });
  try {
    await new Promise<void>((resolve, reject) => {
      const s = c.open_sender({ target: { address: '/amq/queue/ev.poison' } }); // the existing queue, not declared again
      s.once('sendable', () => { s.send(again as unknown as rhea.Message); });
      s.once('accepted', () => resolve());
      s.once('rejected', (ctx: EventContext) => reject(new Error(`RabbitMQ rejected the moved-back message: ${JSON.stringify(ctx.delivery?.remote_state)}`)));
      c.once('connection_error', (ctx: EventContext) => reject(new Error(String(ctx.connection.error))));
    });
  } finally {
    c.close();
  }
  // Delivered and failing its attempts again (the flow refuses its input), then rejected: a
  // second event whose reason is those failures, not "before a restart" (which would mean it was
  // taken for a crash redelivery and rejected without being delivered).
  await waitFor(async () => eventsOf('switchboard.message.dead-lettered', 'mq:legacy/ev.poison').length === 2, 60_000, 'the second mq dead-letter event');
  const events = eventsOf('switchboard.message.dead-lettered', 'mq:legacy/ev.poison');
  assert.notEqual(events[0]!.body.id, events[1]!.body.id, 'a second dead-lettering is a new event, not a duplicate of the first');
  assert.match(events[1]!.body.data.reason, /failed 3 times: .*input for flow 'quick' is not valid/);
  await waitFor(async () => { const q = (await rabbit!.queues())['ev.poison']; return q !== undefined && q.ready === 0 && q.unacked === 0; }, 30_000, 'ev.poison empty on RabbitMQ again');
});

test('an event dead-lettered at a consumer that refuses events makes no event of its own (no loop)', { timeout: 90_000 }, async () => {
  const c = await rheaConnect('ops');
  const rejected: string[] = [];
  const receiver: Receiver = c.open_receiver({ source: { address: 'queue:ops.reject' }, autoaccept: false, credit_window: 10 });
  receiver.on('message', (ctx: EventContext) => {
    rejected.push(String((ctx.message as any).message_id));
    (ctx.delivery as any).reject({ condition: 'app:refused', description: 'this consumer refuses every event' });
  });
  const dlq = async () => (await api(gw!.url, 'GET', `/api/dlq/${enc('queue:ops.reject')}?limit=100`, { user: 'ops' })).body;
  // What waits there so far (completed flows, earlier tests' dead letters) is refused until dead-lettered.
  const waiting = eventsOf('switchboard.flow.completed').length + eventsOf('switchboard.message.dead-lettered').length;
  await waitFor(async () => (await dlq()).depth >= waiting, 60_000, 'the refused events dead-lettered');
  await new Promise((r) => setTimeout(r, 2000));
  const d = await dlq();
  const about = (m: any) => `${m.body.type} ${m.body.data.address ?? ''}`;
  assert.equal(d.depth, waiting, `only what was there, nothing about their own dead letters: ${JSON.stringify(d.messages.map(about))}`);
  assert.ok(d.messages.every((m: any) => m.body.data.address !== 'queue:ops.reject'), JSON.stringify(d.messages.map(about)));
  assert.equal(eventsOf('switchboard.message.dead-lettered').filter((e) => e.body.data.address === 'queue:ops.reject').length, 0);
  c.close();
});

test('RabbitMQ down: the flow completes unhindered, its events wait and arrive once RabbitMQ is back', { timeout: 180_000 }, async () => {
  await rabbit!.stop();
  const id = await startFlow('quick', { n: 42 });
  const subject = `flow:quick/${id}`;
  await waitFor(async () => (await flowStatus('quick', id)) === 'completed', 30_000, 'the flow to complete while RabbitMQ is down');
  // Other destinations are not held up by the one that is down.
  await waitFor(async () => eventsOf('switchboard.flow.completed', subject).length === 1, 30_000, 'the event on the embedded endpoint');
  await new Promise((r) => setTimeout(r, 2000));
  await rabbit!.start();
  // Earlier tests' flow events are in that queue too: read until this flow's two are in.
  const mine: Awaited<ReturnType<typeof protonTake>> = [];
  await waitFor(async () => {
    mine.push(...(await protonTake('ops.events', 50, 3)).filter((m) => m.properties['cloudEvents:subject'] === subject));
    return mine.length >= 2;
  }, 120_000, 'the waiting events in RabbitMQ');
  assert.deepEqual(mine.map((m) => m.properties['cloudEvents:type']).sort(), ['switchboard.flow.completed', 'switchboard.flow.started']);
});

test('dedup by event id: the same change reported twice is delivered once', { timeout: 60_000 }, async () => {
  const conn = new Redis(redis!.url, { maxRetriesPerRequest: null });
  const events = new LifecycleEvents({
    redis: conn, prefix: PREFIX, router: gw!.router, source: SOURCE, dedupTtlMs: 86_400_000, metrics: new Metrics(async () => ({})), log: createLogger('error'),
    mappings: [{ types: ['switchboard.flow.completed'], to: 'queue:ops.dedup' }],
  });
  try {
    events.start();
    const e = { type: 'switchboard.flow.completed', subject: 'flow:quick/dedup-1', key: 'dedup-1', data: { flow: 'quick', instanceId: 'dedup-1' } };
    events.report(e);
    events.report(e);
    await waitFor(async () => (await api(gw!.url, 'GET', `/api/queues/${enc('queue:ops.dedup')}`, { user: 'ops' })).body.depth >= 1, 20_000, 'the event');
    // Once more after it was delivered, and another change beside it as the marker.
    events.report(e);
    events.report({ ...e, key: 'dedup-2', subject: 'flow:quick/dedup-2' });
    await waitFor(async () => (await api(gw!.url, 'GET', `/api/queues/${enc('queue:ops.dedup')}`, { user: 'ops' })).body.depth >= 2, 20_000, 'the marker');
    await new Promise((r) => setTimeout(r, 1000));
    const q = await api(gw!.url, 'GET', `/api/queues/${enc('queue:ops.dedup')}?limit=10`, { user: 'ops' });
    assert.equal(q.body.depth, 2, JSON.stringify(q.body.messages.map((m: any) => m.body.subject)));
    assert.deepEqual(q.body.messages.map((m: any) => m.body.subject).sort(), ['flow:quick/dedup-1', 'flow:quick/dedup-2']);
  } finally {
    await events.close();
    conn.disconnect();
  }
});

test('attacker: a client cannot pass a switchboard.* event off as the gateway\'s, over HTTP or AMQP; the refusal is audited and nothing arrives', { timeout: 60_000 }, async () => {
  const binary = await api(gw!.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:ops.events', id: 'forged-1', headers: { 'cloudEvents:type': 'switchboard.flow.completed', 'cloudEvents:source': SOURCE, 'cloudEvents:specversion': '1.0', 'cloudEvents:id': 'x' }, body: { flow: 'approve', instanceId: 'fake' } } });
  assert.equal(binary.status, 403, JSON.stringify(binary.body));
  assert.equal(binary.body.error.code, 'forged_event');
  assert.match(binary.body.error.message, /user:clerk may not send a 'switchboard\.flow\.completed' event/);
  const structured = await api(gw!.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:ops.events', id: 'forged-2', contentType: 'application/cloudevents+json', body: { specversion: '1.0', id: 'x', source: SOURCE, type: 'switchboard.task.decided', subject: 'task:t1', data: { by: 'user:boss' } } } });
  assert.equal(structured.status, 403);
  assert.equal(structured.body.error.code, 'forged_event');
  const jmsStyle = await api(gw!.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:ops.events', id: 'forged-3', headers: { ce_type: 'Switchboard.peer.up' }, body: {} } });
  assert.equal(jmsStyle.status, 403);
  const nobody = await api(gw!.url, 'POST', '/api/messages', { user: 'nobody', body: { to: 'queue:ops.events', id: 'forged-4', body: {} } });
  assert.equal(nobody.status, 403);
  assert.equal(nobody.body.error.code, 'forbidden');

  // Over AMQP: the transfer is rejected.
  const clerk = await rheaConnect('clerk');
  const sender: Sender = clerk.open_sender({ target: { address: 'queue:ops.events' } });
  const outcome = await new Promise<string>((resolve) => {
    sender.once('sendable', () => setImmediate(() => sender.send({ message_id: 'forged-5', application_properties: { 'cloudEvents:type': 'switchboard.permission.changed' }, body: rhea.message.data_section(Buffer.from('{}')), content_type: 'application/json' } as never)));
    sender.on('accepted', () => resolve('accepted'));
    sender.on('rejected', (ctx: EventContext) => resolve(`rejected ${JSON.stringify((ctx.delivery as any)?.remote_state?.error ?? {})}`));
    sender.on('released', () => resolve('released'));
  });
  assert.match(outcome, /^rejected .*switchboard\.\* lifecycle events are emitted by the gateway only/);

  // A client's own CloudEvent of its own type passes, under its own name: the check is about the type.
  const own = await api(gw!.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:ops.events', id: 'own-1', headers: { 'cloudEvents:type': 'com.example.invoice.paid' }, body: { ref: 'INV-9' } } });
  assert.equal(own.status, 202);
  await waitFor(async () => amqpEvents.some((e) => e.id === 'own-1'), 20_000, 'the client\'s own event');
  assert.equal(amqpEvents.find((e) => e.id === 'own-1')!.sender, 'user:clerk');
  assert.ok(!amqpEvents.some((e) => /^forged-/.test(e.id)), 'no forged event arrived');

  const audit = await api(gw!.url, 'GET', '/api/audit?action=access.denied&limit=200', { user: 'ops' });
  assert.equal(audit.status, 200);
  for (const id of ['forged-1', 'forged-2', 'forged-3', 'forged-5']) {
    const entry = audit.body.entries.find((a: any) => a.detail?.includes(`message ${id}`));
    assert.ok(entry, `audit entry for ${id}: ${JSON.stringify(audit.body.entries.slice(0, 8))}`);
    assert.equal(entry.actor, 'user:clerk');
    assert.equal(entry.target, 'queue:ops.events');
    assert.match(entry.detail, /lifecycle events are emitted by the gateway only/);
  }
});
