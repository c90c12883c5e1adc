/**
 * Link and connection lifecycles of the embedded AMQP endpoint, as a broker has them (issue 14,
 * points 1–3): whatever way a consumer ends — a connection closed without detaching, a killed
 * client, a detach right after accepting, a session ended — every unsettled message returns to
 * its queue exactly once, every accepted one never does, and no consumer outlives its connection.
 * Also: attach replies carry both termini; what is not supported is refused with
 * amqp:not-implemented on a connection that stays up; a client without SASL is answered over
 * SASL; dynamic receivers get a temporary queue of their connection; the anonymous relay checks
 * every message.
 *
 * Real redis-server, rhea and Qpid Proton (Python) as clients, every child stopped by PID.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pino from 'pino';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import { Metrics } from '../../src/core/metrics.ts';
import { bullQueueName } from '../../src/endpoints/queue/names.ts';
import { TmpEndpoint } from '../../src/endpoints/tmp/tmp-endpoint.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PYTHON = '/usr/bin/python3';
const PREFIX = `lc${Math.random().toString(36).slice(2, 7)}`;
const CREDIT = 10;

let redis: TestRedis | undefined;
let client: Redis | undefined;
let gw: Gateway | undefined;
let dir: string | undefined;
const children = new Set<ChildProcess>();
const rheaConnections: Connection[] = [];

/** A Proton receiver that accepts each message and prints its id at once; killed from outside. */
const RECEIVER_PY = String.raw`
import sys
from proton.handlers import MessagingHandler
from proton.reactor import Container
class R(MessagingHandler):
    def __init__(self):
        super(R, self).__init__(prefetch=10)
    def on_start(self, event):
        c = event.container.connect(sys.argv[1], user=sys.argv[2], password=sys.argv[3], allowed_mechs="PLAIN")
        event.container.create_receiver(c, sys.argv[4])
    def on_message(self, event):
        sys.stdout.write("%s\n" % event.message.id)
        sys.stdout.flush()
Container(R()).run()
`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-amqp-lifecycle-'));
  writeFileSync(join(dir, 'receiver.py'), RECEIVER_PY);
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    amqp: { port: 0, credit: CREDIT },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'tmp:**', verbs: ['send'] }] },
      { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    log: { level: 'error' },
  });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of rheaConnections) try { c.close(); } catch { /* gone */ }
  await gw?.stop().catch(() => {});
  await client?.quit();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ───────────────────────────── helpers ─────────────────────────────

async function sendAll(address: string, ids: string[]): Promise<void> {
  for (const id of ids) {
    const r = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, body: { id } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }
}

async function depth(address: string): Promise<{ depth: number; inFlight: number }> {
  const r = await api(gw!.url, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Waits until nothing of `address` is held by a consumer: every message is back or gone. */
async function settledDown(address: string): Promise<void> {
  await waitFor(async () => (await depth(address)).inFlight === 0, 30_000, `${address}: no message in flight`);
}

/** Receives and acks over HTTP until empty; the ids, each as often as it came. */
async function drain(address: string): Promise<string[]> {
  const all: string[] = [];
  for (;;) {
    const got = await api(gw!.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 200, leaseSeconds: 300 } });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    const messages = got.body.messages as { id: string; lease: string }[];
    if (messages.length === 0) return all;
    const ack = await api(gw!.url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: messages.map((m) => m.lease) } });
    assert.equal(ack.status, 200);
    all.push(...messages.map((m) => m.id));
  }
}

async function messagesOut(): Promise<number> {
  const text = await (await fetch(`${gw!.url}/metrics`)).text();
  return Number(/^switchboard_messages_out_total\{endpoint="queue"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

async function rheaConnect(user: keyof typeof USERS): Promise<Connection> {
  const container = rhea.create_container({ id: `lc-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: gw!.amqpPort!, username: user, password: USERS[user], reconnect: false } as ConnectionOptions);
  rheaConnections.push(c);
  for (const ev of ['error', 'session_error', 'sender_error', 'receiver_error', 'connection_error']) c.on(ev, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('disconnected', () => reject(new Error('disconnected')));
  });
  return c;
}

/** Opens a receiver with `credit` that does not settle; resolves with the deliveries once `count` arrived. */
function hold(c: Connection, address: string, count: number, name?: string): Promise<{ receiver: Receiver; deliveries: { id: string; d: Delivery }[] }> {
  return new Promise((resolve, reject) => {
    const deliveries: { id: string; d: Delivery }[] = [];
    const receiver = c.open_receiver({ ...(name ? { name } : {}), source: { address }, autoaccept: false, credit_window: count });
    receiver.on('message', (ctx: EventContext) => {
      deliveries.push({ id: String(ctx.message!.message_id), d: ctx.delivery as Delivery });
      if (deliveries.length === count) resolve({ receiver, deliveries });
    });
    receiver.on('receiver_close', (ctx: EventContext) => reject(new Error(`refused: ${JSON.stringify(ctx.receiver?.error)}`)));
  });
}

/** Attaches a link and reports the remote attach (termini) or the refusal. */
function attach(c: Connection, open: () => Sender | Receiver): Promise<{ refused?: { condition: string; description: string }; remote?: { source?: any; target?: any } }> {
  return new Promise((resolve) => {
    const link = open();
    let opened = false;
    link.on(link.is_sender() ? 'sender_open' : 'receiver_open', () => {
      opened = true;
      // A refusal follows its attach at once: wait a moment before calling it open.
      setTimeout(() => { if (!link.is_closed()) resolve({ remote: { source: link.source, target: link.target } }); }, 300);
    });
    link.on(link.is_sender() ? 'sender_close' : 'receiver_close', () => resolve({ refused: (link.error ?? {}) as never, ...(opened ? {} : {}) }));
  });
}

function assertExactlyOnce(expected: string[], seen: string[], what: string): void {
  const counts = new Map<string, number>();
  for (const id of seen) counts.set(id, (counts.get(id) ?? 0) + 1);
  const missing = expected.filter((id) => !counts.has(id));
  const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
  assert.ok(missing.length === 0 && twice.length === 0 && counts.size === expected.length, `${what}: missing ${missing.length} (${missing.slice(0, 10).join(', ')}), more than once ${twice.length} (${twice.slice(0, 10).join(', ')}), distinct ${counts.size} of ${expected.length}`);
}

// ───────────────────────────── lifecycles ─────────────────────────────

test('a connection closed without detaching: its unsettled messages return exactly once, the accepted ones never', { timeout: 120_000 }, async () => {
  const Q = 'queue:lc.close';
  const ids = Array.from({ length: 30 }, (_, i) => `close-${i}`);
  await sendAll(Q, ids);
  const c = await rheaConnect('ops');
  const { deliveries } = await hold(c, Q, CREDIT);
  const accepted = deliveries.slice(0, 4).map((x) => x.id);
  // Accept four and close the connection in the same tick: the dispositions arrive just ahead of the close.
  for (const x of deliveries.slice(0, 4)) x.d.accept();
  c.close();
  await settledDown(Q);
  const rest = await drain(Q);
  assert.deepEqual(rest.filter((id) => accepted.includes(id)), [], 'accepted messages must not come back');
  assertExactlyOnce(ids, [...accepted, ...rest], 'accepted + drained');
});

test('a link detached right after accepting: accepted messages are never delivered again (10 rounds)', { timeout: 180_000 }, async (t) => {
  const Q = 'queue:lc.detach';
  const ids = Array.from({ length: 100 }, (_, i) => `detach-${i}`);
  await sendAll(Q, ids);
  const c = await rheaConnect('ops');
  const accepted: string[] = [];
  for (let round = 0; round < 10; round++) {
    t.diagnostic(`round ${round}: ${JSON.stringify(await depth(Q))}`);
    const { receiver, deliveries } = await hold(c, Q, 5, `detach-${round}`);
    for (const x of deliveries) { x.d.accept(); accepted.push(x.id); }
    receiver.close();
  }
  c.close();
  await settledDown(Q);
  const rest = await drain(Q);
  assert.deepEqual(rest.filter((id) => accepted.includes(id)), [], 'accepted messages must not come back');
  assertExactlyOnce(ids, [...accepted, ...rest], 'accepted + drained');
});

test('20 Proton clients killed mid-stream: every message accounted for exactly once, no consumer left behind', { timeout: 300_000 }, async (t) => {
  const Q = 'queue:lc.kill';
  // The queue must still hold messages when each client is killed, or the next one waits for
  // nothing: a client takes a few hundred in the ~150 ms it lives (up to 2,000 a second measured),
  // so the queue is topped up to 1,000 before each client starts. Every id sent is accounted for.
  const ids: string[] = [];
  const topUp = async () => {
    const want = 1000 - (await depth(Q)).depth;
    const more = Array.from({ length: Math.max(0, want) }, (_, i) => `kill-${String(ids.length + i).padStart(5, '0')}`);
    await sendAll(Q, more);
    ids.push(...more);
  };
  const outBefore = await messagesOut();
  const printed: string[] = [];
  const url = `amqp://127.0.0.1:${gw!.amqpPort}`;
  for (let i = 0; i < 20; i++) {
    await topUp();
    const child = spawn(PYTHON, [join(dir!, 'receiver.py'), url, 'ops', USERS.ops, Q], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const exited = new Promise<void>((r) => child.once('exit', () => { children.delete(child); r(); }));
    let got = 0;
    let buffer = '';
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      printed.push(...lines);
      got += lines.length;
    });
    // Killed after it has taken a few messages, while it holds more on credit.
    await waitFor(async () => got >= 5 || child.exitCode !== null, 30_000, `client ${i} to receive`);
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 100)));
    process.kill(child.pid!, 'SIGKILL');
    await exited;
  }
  await settledDown(Q);
  // No consumer outlives its connection: no BullMQ worker is left on the queue.
  const q = new Queue(bullQueueName(Q), { connection: client!, prefix: PREFIX });
  await waitFor(async () => (await q.getWorkersCount()) === 0, 30_000, 'no worker left on the queue');
  const acceptedByClients = (await messagesOut()) - outBefore;
  const rest = await drain(Q);
  t.diagnostic(`clients printed ${printed.length}, the gateway counted ${acceptedByClients} accepted, ${rest.length} drained`);
  // Accepted (by the gateway's count) + left in the queue = all sent: nothing accepted came back, nothing lost.
  assert.equal(acceptedByClients + rest.length, ids.length, `accepted ${acceptedByClients} + drained ${rest.length} should be ${ids.length}`);
  assertExactlyOnce(ids, [...new Set([...printed, ...rest])], 'printed ∪ drained');
  assertExactlyOnce(rest, rest, 'drained');
  assert.ok(acceptedByClients >= 20 * 5 - 20, `the killed clients accepted ${acceptedByClients}`);
});

// ───────────────────────────── attach ─────────────────────────────

test('attach replies carry source and target; unsupported terminus features are refused with amqp:not-implemented and the connection stays up', { timeout: 60_000 }, async () => {
  const c = await rheaConnect('ops');
  const s = await attach(c, () => c.open_sender({ target: { address: 'queue:lc.attach' } }));
  assert.ok(s.remote?.source && s.remote?.target, `sender reply: ${JSON.stringify(s)}`);
  assert.equal(s.remote!.target.address, 'queue:lc.attach');
  const r = await attach(c, () => c.open_receiver({ source: { address: 'queue:lc.attach' }, credit_window: 0 }));
  assert.ok(r.remote?.source && r.remote?.target, `receiver reply: ${JSON.stringify(r)}`);
  assert.equal(r.remote!.source.address, 'queue:lc.attach');
  const cases: [string, () => Receiver | Sender, RegExp][] = [
    ['selector', () => c.open_receiver({ source: { address: 'queue:lc.attach', filter: rhea.filter.selector("colour = 'red'") } as never, credit_window: 1 }), /filters are not supported/],
    ['another distribution mode', () => c.open_receiver({ source: { address: 'queue:lc.attach', distribution_mode: 'round-robin' } as never, credit_window: 1 }), /distribution mode 'round-robin' is not supported/],
    ['topic capability', () => c.open_receiver({ source: { address: 'queue:lc.attach', capabilities: ['topic'] } as never, credit_window: 1 }), /capabilities not supported: topic/],
    ['shared capability on a target', () => c.open_sender({ target: { address: 'queue:lc.attach', capabilities: ['shared'] } as never }), /capabilities not supported: shared/],
  ];
  for (const [what, open, description] of cases) {
    const x = await attach(c, open);
    assert.equal(x.refused?.condition, 'amqp:not-implemented', `${what}: ${JSON.stringify(x)}`);
    assert.match(x.refused!.description, description, what);
  }
  // The connection is still up: a message goes through on it.
  const outcome = await new Promise<string>((resolve) => {
    const sender = c.open_sender({ target: { address: 'queue:lc.attach' } });
    sender.once('sendable', () => setImmediate(() => sender.send({ message_id: 'after-refusals', body: { ok: true } } as never)));
    sender.once('accepted', () => resolve('accepted'));
    sender.once('rejected', () => resolve('rejected'));
  });
  assert.equal(outcome, 'accepted');
  c.close();
});

test('a client without SASL is answered with the SASL header, PLAIN, and the outcome "auth"', { timeout: 30_000 }, async () => {
  const reply = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = tcpConnect(gw!.amqpPort!, '127.0.0.1', () => s.write(Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 1, 0, 0])));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
  assert.deepEqual([...reply.subarray(0, 8)], [0x41, 0x4d, 0x51, 0x50, 3, 1, 0, 0], 'the SASL protocol header');
  assert.ok(reply.includes(Buffer.from('PLAIN')), 'sasl-mechanisms offers PLAIN');
  // sasl-outcome (0x44) with code 1 (auth) closes the reply.
  assert.deepEqual([...reply.subarray(reply.length - 8)], [0x00, 0x53, 0x44, 0xc0, 0x03, 0x01, 0x50, 0x01]);
});

// ───────────────────────────── dynamic receivers ─────────────────────────────

test('a dynamic receiver gets tmp:<connection>/<n>: only its connection consumes, others allowed may send, gone with the connection', { timeout: 60_000 }, async () => {
  const owner = await rheaConnect('ops');
  const received: string[] = [];
  const address = await new Promise<string>((resolve, reject) => {
    const receiver = owner.open_receiver({ source: { dynamic: true } as never, autoaccept: true, credit_window: 10 });
    receiver.on('receiver_open', () => resolve(receiver.source.address));
    receiver.on('message', (ctx: EventContext) => received.push(String(ctx.message!.message_id)));
    receiver.on('receiver_close', () => reject(new Error(JSON.stringify(receiver.error))));
  });
  assert.match(address, /^tmp:[A-Za-z0-9_-]+\/1$/);
  // Another connection of the same user may not consume it.
  const other = await rheaConnect('ops');
  const stolen = await attach(other, () => other.open_receiver({ source: { address }, credit_window: 1 }));
  assert.equal(stolen.refused?.condition, 'amqp:unauthorized-access', JSON.stringify(stolen));
  assert.match(stolen.refused!.description, /only the connection that created/);
  // Anyone allowed may send: over HTTP (ops has send on tmp:**); clerk has no rule for it.
  for (const id of ['tmp-1', 'tmp-2']) {
    const r = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, body: { id } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }
  const denied = await api(gw!.url, 'POST', '/api/messages', { user: 'clerk', body: { to: address, body: {} } });
  assert.equal(denied.status, 403);
  await waitFor(async () => received.length === 2, 10_000, 'the owner to receive both');
  assert.deepEqual(received, ['tmp-1', 'tmp-2']);
  // Gone with the connection, messages and all.
  const queued = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id: 'tmp-left', body: {} } });
  assert.equal(queued.status, 202);
  owner.close();
  await waitFor(async () => (await client!.keys(`${PREFIX}:tmp:{${address}}*`)).length === 0, 10_000, 'the temporary queue keys to be deleted');
  const late = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, body: {} } });
  assert.equal(late.status, 404, JSON.stringify(late.body));
  other.close();
});

test('temporary queues of a process that crashed are deleted by the sweep of another', { timeout: 60_000 }, async () => {
  const log = pino({ level: 'silent' });
  const crashed = new TmpEndpoint({ redis: client!, prefix: `${PREFIX}x`, livenessMs: 600, sweepMs: 60_000, metrics: new Metrics(async () => ({})), log });
  await crashed.openTemporary('tmp:dead-1/1');
  await crashed.send({ id: 'orphan', to: 'tmp:dead-1/1', sender: { kind: 'user', name: 'ops' }, headers: {}, contentType: 'application/json', body: {}, createdAt: new Date().toISOString() });
  // A crash, as seen from Redis: the process stops renewing its liveness mark and the sweep lease
  // it may hold (its timers stop; nothing is released, the lease expires after its 6 s).
  for (const timer of (crashed as unknown as { timers: NodeJS.Timeout[] }).timers) clearInterval(timer);
  clearInterval((crashed as unknown as { sweepLease: { timer?: NodeJS.Timeout } }).sweepLease.timer);
  const survivor = new TmpEndpoint({ redis: client!, prefix: `${PREFIX}x`, livenessMs: 600, sweepMs: 300, metrics: new Metrics(async () => ({})), log });
  try {
    await waitFor(async () => (await client!.keys(`${PREFIX}x:tmp:{tmp:dead-1/1}*`)).length === 0, 20_000, 'the sweep to delete the orphaned queue');
  } finally {
    await survivor.close();
  }
});

// ───────────────────────────── anonymous relay ─────────────────────────────

test('the anonymous relay: ANONYMOUS-RELAY offered, each message routed by its to and authorized on its own, a refused one rejected and the link stays up', { timeout: 60_000 }, async () => {
  const c = await rheaConnect('clerk');
  const offered = (c as unknown as { remote: { open: { offered_capabilities?: string | string[] } } }).remote.open.offered_capabilities;
  assert.ok([offered].flat().includes('ANONYMOUS-RELAY'), `offered: ${JSON.stringify(offered)}`);
  const sender = c.open_sender({ target: {} });
  await new Promise<void>((r) => sender.once('sendable', () => setImmediate(r)));
  // One at a time: each outcome belongs to the message just sent.
  const sendOne = (m: Record<string, unknown>) => new Promise<{ outcome: string; condition?: string }>((resolve) => {
    const d = sender.send(m as never);
    const done = (outcome: string) => (ctx: EventContext) => {
      if (ctx.delivery !== d) return;
      resolve({ outcome, condition: (d.remote_state as { error?: { condition?: string } } | undefined)?.error?.condition });
    };
    for (const ev of ['accepted', 'rejected', 'released'] as const) sender.on(ev, done(ev));
  });
  const outcomes: Record<string, { outcome: string; condition?: string }> = {};
  outcomes['relay-1'] = await sendOne({ message_id: 'relay-1', to: 'queue:in.relay', body: { n: 1 } });
  outcomes['relay-2'] = await sendOne({ message_id: 'relay-2', to: 'queue:out.relay', body: { n: 2 } }); // clerks may not send there
  outcomes['relay-3'] = await sendOne({ message_id: 'relay-3', to: 'queue:in.relay', body: { n: 3 } });
  outcomes['relay-4'] = await sendOne({ message_id: 'relay-4', body: { n: 4 } }); // no to at all
  assert.deepEqual(outcomes['relay-1'], { outcome: 'accepted', condition: undefined });
  assert.deepEqual(outcomes['relay-2'], { outcome: 'rejected', condition: 'amqp:unauthorized-access' });
  assert.deepEqual(outcomes['relay-3'], { outcome: 'accepted', condition: undefined }, 'the link stays up after a refused message');
  assert.equal(outcomes['relay-4']!.outcome, 'rejected');
  assert.equal(sender.is_open(), true);
  assertExactlyOnce(['relay-1', 'relay-3'], await drain('queue:in.relay'), 'queue:in.relay');
  assert.equal((await depth('queue:out.relay')).depth, 0);
  c.close();
});
