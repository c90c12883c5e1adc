/**
 * `mq:<broker>/<address>` against a real RabbitMQ 3.10 with the AMQP 1.0 plugin (issue 6 items 1,
 * 2 and 4; DESIGN §1, §2, §6, §9): a private node on free ports (test/support/rabbitmq.ts), a
 * private redis-server, the gateway through the real config parser.
 *
 * 1. Round trips both ways, with ids, headers, correlation, subject, JSON and binary bodies mapped
 *    as DESIGN §6: API → mq:legacy/x → route → queue:y; queue:a → route → mq:legacy/z, read raw
 *    from RabbitMQ (no user_id, switchboard-sender as an application property); and a full
 *    circle queue:b → mq:legacy/w → queue:back. A message consumed from the broker has the
 *    sender broker:legacy, the original claim kept as the header switchboard-claimed-sender.
 * 2. Request/reply: a flow's ctx.request('mq:legacy/requests') answered by a responder living ON
 *    RabbitMQ (a rhea client in this test) through the broker's replyQueue; the flow completes.
 * 3. Backpressure: a separate gateway process with a route mq:legacy/bp → queue:bounded
 *    (maxDepth 20), nobody consuming: the gateway holds at most twice the route's concurrency (the
 *    messages being handled and as many asked for ahead), the rest
 *    stays on RabbitMQ (rabbitmqctl list_queues), its RSS stays bounded; draining delivers all
 *    exactly once.
 * 4. Poison: a route to flow:strict-input of a message whose input fails validation (a real,
 *    non-retryable refusal) is rejected to RabbitMQ after maxAttempts — dead-lettered by a
 *    RabbitMQ policy into poison.dlq — and not redelivered forever; the good one behind it runs.
 * (5. RabbitMQ outages are in mq-rabbitmq-outage.test.ts: with them this file ran past the
 *    per-file time limit.)
 * Test 4 uses its own gateway (own broker connection), so a broker session lost in it cannot
 * hide in, or leak into, another.
 *
 * Polls only, no timing assertions. Everything started here is stopped in after(), by PID.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, drain, metric, queueState, receiveBatch, type QueueState } from '../support/counting-sink.ts';
import { logWarnings, prefixFor, sleep } from '../support/fleet.ts';
import { MqGateways, PERMISSIONS, QUEUES, readyz } from '../support/mq-gateways.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
let gw: Gateway | undefined;
let flowsDir: string | undefined;
const gateways = new MqGateways(() => ({ redis: redis!, rabbit: rabbit!, flowsDir: flowsDir! }));
const fleet = gateways.fleet;
const clients: RabbitClient[] = [];

// ───────────────────────────── flows used here ─────────────────────────────

const FLOWS: Record<string, string> = {
  'mq-check.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'mq-check',
  input: z.object({ ref: z.string(), amount: z.number() }),
  async run(ctx, input) {
    const reply = await ctx.request('mq:legacy/requests', { ref: input.ref, amount: input.amount }, { timeout: '3m', headers: { 'x-ref': input.ref } });
    return { body: reply.body, sender: reply.sender, correlationId: reply.correlationId ?? null, headers: reply.headers, contentType: reply.contentType };
  },
});
`,
  'strict-input.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'strict-input',
  input: z.object({ amount: z.number().positive() }),
  async run(_ctx, input) {
    return { amount: input.amount };
  },
});
`,
};

// ───────────────────────────── config ─────────────────────────────

function brokers(replies = true) {
  return gateways.brokers(replies);
}

// ───────────────────────────── a rhea client of RabbitMQ (the "legacy side") ─────────────────────────────

type Amqp = Record<string, any>;

/** One rhea connection to the test RabbitMQ, used to put, take and answer messages there directly. */
class RabbitClient {
  private constructor(readonly conn: Connection) {}

  static async connect(name: string): Promise<RabbitClient> {
    const container = rhea.create_container({ id: `${name}-${Math.random().toString(36).slice(2, 8)}` });
    const conn = container.connect({ host: '127.0.0.1', port: rabbit!.port, username: 'guest', password: 'guest', reconnect: false, idle_time_out: 30_000 } as ConnectionOptions);
    // Without these rhea re-raises link or session errors on the container and the process dies.
    for (const ev of ['error', 'connection_error', 'session_error', 'sender_error', 'receiver_error']) conn.on(ev, () => {});
    await new Promise<void>((resolve, reject) => {
      conn.once('connection_open', () => resolve());
      conn.once('disconnected', (ctx: EventContext) => reject(new Error(`cannot connect to RabbitMQ: ${(ctx as { error?: Error }).error?.message ?? 'disconnected'}`)));
    });
    const c = new RabbitClient(conn);
    clients.push(c);
    return c;
  }

  /** Sends durable messages to the durable queue `queue`; resolves when RabbitMQ accepted every one. */
  async send(queue: string, messages: Amqp[]): Promise<void> {
    const s: Sender = this.conn.open_sender({ target: { address: `/queue/${queue}`, durable: 2 }, autosettle: true });
    try {
      await new Promise<void>((resolve, reject) => {
        let next = 0;
        let accepted = 0;
        const pump = () => {
          while (next < messages.length && s.sendable()) s.send({ durable: true, ...messages[next++] } as never);
        };
        s.on('sendable', pump);
        s.on('accepted', () => { if (++accepted === messages.length) resolve(); });
        s.on('rejected', (ctx: EventContext) => reject(new Error(`RabbitMQ rejected a message: ${JSON.stringify(ctx.delivery?.remote_state)}`)));
        s.on('released', () => reject(new Error('RabbitMQ released a message')));
        s.on('sender_error', (ctx: EventContext) => reject(new Error(`sender refused: ${JSON.stringify(ctx.sender?.error)}`)));
        if (messages.length === 0) resolve();
      });
    } finally {
      s.close();
    }
  }

  /**
   * A receiver on the durable queue `queue` that accepts everything it gets into `into`.
   * `close()` detaches it.
   */
  collect(queue: string, into: Amqp[], credit = 200): { close(): void; receiver: Receiver } {
    const r: Receiver = this.conn.open_receiver({ source: { address: `/queue/${queue}`, durable: 2 }, autoaccept: false, credit_window: credit });
    r.on('message', (ctx: EventContext) => {
      into.push(ctx.message as Amqp);
      (ctx.delivery as Delivery).accept();
    });
    return { receiver: r, close: () => r.close() };
  }

  /** Takes up to `n` messages from `queue` (waiting at most `ms` for them), accepting each. */
  async take(queue: string, n: number, ms = 30_000): Promise<Amqp[]> {
    const got: Amqp[] = [];
    const c = this.collect(queue, got);
    try {
      await waitFor(async () => got.length >= n, ms, `${n} message(s) on RabbitMQ queue ${queue} (got ${got.length})`).catch(() => undefined);
      return got;
    } finally {
      c.close();
    }
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => {
      const t = setTimeout(r, 3000);
      this.conn.once('connection_close', () => { clearTimeout(t); r(); });
      this.conn.once('disconnected', () => { clearTimeout(t); r(); });
      try { this.conn.close(); } catch { clearTimeout(t); r(); }
    });
  }
}

/** The bytes of a rhea body: a data section ({typecode 0x75, content}) or a plain Buffer. */
function bodyBytes(body: any): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (body && body.typecode === 0x75 && Buffer.isBuffer(body.content)) return body.content;
  throw new Error(`not a data section: ${JSON.stringify(body)}`);
}

// ───────────────────────────── HTTP helpers ─────────────────────────────

async function flowView(base: string, flow: string, id: string): Promise<{ status: number; body: any }> {
  const r = await api(base, 'GET', `/api/flows/${flow}/${enc(id)}`, { user: 'ops' });
  return { status: r.status, body: r.body };
}

// ───────────────────────────── setup ─────────────────────────────

function recentLog(g: Gateway, n = 40): string {
  return gateways.recentLog(g, n);
}

function startGw(extra: Record<string, unknown>, replies = false): Promise<Gateway> {
  return gateways.start(extra, replies);
}

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-mq-flows-'));
  for (const [file, text] of Object.entries(FLOWS)) writeFileSync(join(flowsDir, file), text);
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
  gw = await startGw({
    routes: [
      { from: 'mq:legacy/x', to: 'queue:y' },
      { from: 'queue:a', to: 'mq:legacy/z' },
      { from: 'queue:b', to: 'mq:legacy/w' },
      { from: 'mq:legacy/w', to: 'queue:back' },
    ],
  }, true);
});

after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await fleet.stopAll(20_000);
  await rabbit?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

// ───────────────────────────── 1. round trips ─────────────────────────────

test('API → mq:legacy/x → route → queue:y: ids, headers, correlation, JSON and binary bodies; the sender is broker:legacy with the claim kept', { timeout: 120_000 }, async () => {
  const base = gw!.url;
  const r = await api(base, 'POST', '/api/messages', {
    user: 'ops',
    body: { to: 'mq:legacy/x', id: 'rt-json-1', headers: { 'x-ref': 'R-1', 'x-empty': '' }, correlationId: 'corr-rt-1', subject: 'payment', body: { ref: 'R-1', amount: 10.5, tags: ['a', 'b'], nested: { ok: true } } },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.deepEqual(r.body, { id: 'rt-json-1', duplicate: false });

  // A binary message put on RabbitMQ by a legacy client, claiming to be someone.
  const legacy = await RabbitClient.connect('legacy-x');
  const binary = Buffer.from([0, 1, 2, 3, 254, 255, 0x7b, 0x22]);
  await legacy.send('x', [{
    message_id: 'rt-bin-1', correlation_id: 'corr-rt-2', subject: 'scan', content_type: 'application/pdf',
    application_properties: { 'switchboard-sender': 'user:admin', 'x-pages': '2' }, body: rhea.message.data_section(binary),
  }]);

  await waitFor(async () => (await queueState(base, 'queue:y')).depth >= 2, 60_000, 'both messages at queue:y');
  // In-process receive: the binary body comes back as bytes (the HTTP JSON would show it encoded).
  const got = await gw!.router.receive('queue:y', 10, 60_000, SYSTEM_CALLER);
  await gw!.router.ack('queue:y', got.map((m) => m.lease), SYSTEM_CALLER);
  const byId = new Map(got.map((m) => [m.id, m]));
  assert.deepEqual([...byId.keys()].sort(), ['rt-bin-1', 'rt-json-1']);

  const j = byId.get('rt-json-1')!;
  assert.deepEqual(j.sender, { kind: 'broker', name: 'legacy' }, 'consumed from the broker: the sender is the broker');
  assert.equal(j.headers['switchboard-claimed-sender'], 'user:ops', 'the original sender is kept as a header');
  assert.equal(j.headers['x-ref'], 'R-1');
  assert.equal(j.headers['x-empty'], '');
  assert.equal(j.correlationId, 'corr-rt-1');
  assert.equal(j.subject, 'payment');
  assert.equal(j.contentType, 'application/json');
  assert.deepEqual(j.body, { ref: 'R-1', amount: 10.5, tags: ['a', 'b'], nested: { ok: true } });
  assert.equal(j.from, 'mq:legacy/x');
  assert.equal(j.to, 'queue:y');

  const b = byId.get('rt-bin-1')!;
  assert.deepEqual(b.sender, { kind: 'broker', name: 'legacy' });
  assert.equal(b.headers['switchboard-claimed-sender'], 'user:admin', 'a switchboard-sender from outside is never trusted, only kept');
  assert.equal(b.headers['x-pages'], '2');
  assert.equal(b.correlationId, 'corr-rt-2');
  assert.equal(b.subject, 'scan');
  assert.equal(b.contentType, 'application/pdf');
  assert.ok(Buffer.isBuffer(b.body) && b.body.equals(binary), `binary body bytes unchanged: ${JSON.stringify(b.body)}`);

  // The same id sent again is a duplicate at the mq: hop and reaches queue:y no second time.
  const again = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:legacy/x', id: 'rt-json-1', body: { other: true } } });
  assert.equal(again.status, 202);
  assert.equal(again.body.duplicate, true);
  await legacy.send('x', [{ message_id: 'rt-bin-1', content_type: 'application/pdf', body: rhea.message.data_section(binary) }]); // a broker-side redelivery
  await waitFor(async () => { const q = (await rabbit!.queues()).x; return q?.ready === 0 && q.unacked === 0; }, 60_000, 'queue x on RabbitMQ to be empty');
  await sleep(500);
  assert.deepEqual(await queueState(base, 'queue:y'), { depth: 0, inFlight: 0 }, 'a redelivered id is not delivered twice');
});

test('under load a consumer grants credit half a window at a time, never past its free slots and one window asked for ahead: 600 messages through a route of concurrency 20 in at most 60 grants, each exactly once and counted out once', { timeout: 180_000 }, async () => {
  const N = 600;
  const CONCURRENCY = 20;
  // Every credit grant of a receiver of this queue, as the gateway's rhea makes it (this process).
  const grants: number[] = [];
  const proto = (createRequire(import.meta.url)('rhea/lib/link.js') as { Receiver: { prototype: Receiver } }).Receiver.prototype;
  const addCredit = proto.add_credit;
  proto.add_credit = function (this: Receiver & { source?: { address?: string } }, n: number) {
    if (this.source?.address === '/queue/credit') grants.push(n);
    return addCredit.call(this, n);
  };
  try {
    const g = await startGw({ routes: [{ from: 'mq:legacy/credit', to: 'queue:credit-sink', concurrency: CONCURRENCY }] });
    const legacy = await RabbitClient.connect('legacy-credit');
    const ids = Array.from({ length: N }, (_, i) => `credit-${String(i).padStart(4, '0')}`);
    for (let i = 0; i < N; i += 200) {
      await legacy.send('credit', ids.slice(i, i + 200).map((id) => ({ message_id: id, content_type: 'application/json', body: rhea.message.data_section(Buffer.from(JSON.stringify({ id }))) })));
    }
    const counts = new Map<string, number>();
    await waitFor(async () => { await receiveBatch(g.url, 'queue:credit-sink', counts); return counts.size >= N; }, 120_000, `all ${N} messages at queue:credit-sink`);
    await waitFor(async () => { const q = (await rabbit!.queues()).credit; return q?.ready === 0 && q.unacked === 0; }, 60_000, 'queue credit on RabbitMQ to be empty');
    await drain(g.url, 'queue:credit-sink', counts);
    assertExactlyOnce(ids, counts);
    assert.equal(await metric(g.url, 'switchboard_messages_out_total', { endpoint: 'mq' }), N, 'each message consumed from the broker is counted out once');
    assert.ok(grants.length > 0, 'the consumer granted credit');
    assert.ok(grants.every((n) => n >= CONCURRENCY / 2 && n <= 2 * CONCURRENCY), `every grant is between half a window and two (the window and one held ready): ${JSON.stringify(grants)}`);
    assert.ok(grants.length <= (N / (CONCURRENCY / 2)) * 1.0, `${grants.length} grants for ${N} messages: one per finished message would be ${N}`);
  } finally {
    proto.add_credit = addCredit;
  }
});

test('queue:a → route → mq:legacy/z: on RabbitMQ the message has message_id, correlation_id, subject, headers and switchboard-sender as properties, no user_id', { timeout: 120_000 }, async () => {
  const base = gw!.url;
  const r = await api(base, 'POST', '/api/messages', {
    user: 'ops',
    body: { to: 'queue:a', id: 'rt-json-2', headers: { 'x-ref': 'R-2' }, correlationId: 'corr-rt-3', subject: 'invoice', body: { ref: 'R-2', lines: [1, 2, 3], ünïcode: 'ÄÖÜ €' } },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const binary = Buffer.from('%PDF-1.4 \x00\x01\x02 binary', 'latin1');
  await gw!.router.send({ id: 'rt-bin-2', to: 'queue:a', sender: { kind: 'system', name: 'test' }, headers: { 'x-kind': 'pdf' }, contentType: 'application/pdf', body: binary, createdAt: new Date().toISOString() }, { principal: { kind: 'system', name: 'test' }, door: 'system' });

  const legacy = await RabbitClient.connect('legacy-z');
  const got = await legacy.take('z', 2, 60_000);
  const byId = new Map(got.map((m) => [String(m.message_id), m]));
  assert.deepEqual([...byId.keys()].sort(), ['rt-bin-2', 'rt-json-2'], `on RabbitMQ: ${[...byId.keys()]}`);

  const j = byId.get('rt-json-2')!;
  assert.equal(j.user_id, undefined, 'no user_id on messages to RabbitMQ');
  assert.equal(j.correlation_id, 'corr-rt-3');
  assert.equal(j.subject, 'invoice');
  assert.equal(j.content_type, 'application/json');
  assert.equal(j.durable, true);
  assert.equal(j.application_properties['x-ref'], 'R-2');
  assert.equal(j.application_properties['switchboard-sender'], 'user:ops');
  assert.deepEqual(JSON.parse(bodyBytes(j.body).toString('utf8')), { ref: 'R-2', lines: [1, 2, 3], ünïcode: 'ÄÖÜ €' }, 'JSON as an application/json data section');

  const b = byId.get('rt-bin-2')!;
  assert.equal(b.user_id, undefined);
  assert.equal(b.content_type, 'application/pdf');
  assert.equal(b.application_properties['switchboard-sender'], 'system:test');
  assert.equal(b.application_properties['x-kind'], 'pdf');
  assert.ok(bodyBytes(b.body).equals(binary), 'binary bytes unchanged');

  await waitFor(async () => { const s = await queueState(base, 'queue:a'); return s.depth === 0 && s.inFlight === 0; }, 30_000, 'queue:a to be empty');
});

test('a full circle queue:b → mq:legacy/w → queue:back keeps id, headers, correlation and bodies; sender broker:legacy', { timeout: 120_000 }, async () => {
  const base = gw!.url;
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const id = `circle-${i}`;
    ids.push(id);
    const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:b', id, headers: { 'x-i': String(i) }, correlationId: `c-${i}`, body: { i, text: `message ${i}` } } });
    assert.equal(r.status, 202);
  }
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  await gw!.router.send({ id: 'circle-bin', to: 'queue:b', sender: { kind: 'system', name: 'test' }, headers: {}, contentType: 'application/octet-stream', body: binary, createdAt: new Date().toISOString() }, { principal: { kind: 'system', name: 'test' }, door: 'system' });
  ids.push('circle-bin');

  await waitFor(async () => (await queueState(base, 'queue:back')).depth >= ids.length, 60_000, 'every message back at queue:back');
  const got = await gw!.router.receive('queue:back', 100, 60_000, SYSTEM_CALLER);
  await gw!.router.ack('queue:back', got.map((m) => m.lease), SYSTEM_CALLER);
  const counts = new Map<string, number>();
  for (const m of got) counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  assertExactlyOnce(ids, counts);
  for (const m of got) {
    assert.deepEqual(m.sender, { kind: 'broker', name: 'legacy' });
    if (m.id === 'circle-bin') {
      assert.equal(m.headers['switchboard-claimed-sender'], 'system:test');
      assert.equal(m.contentType, 'application/octet-stream');
      assert.ok(Buffer.isBuffer(m.body) && m.body.equals(binary));
    } else {
      const i = Number(m.id.slice('circle-'.length));
      assert.equal(m.headers['switchboard-claimed-sender'], 'user:ops');
      assert.equal(m.headers['x-i'], String(i));
      assert.equal(m.correlationId, `c-${i}`);
      assert.deepEqual(m.body, { i, text: `message ${i}` });
    }
  }
});

// ───────────────────────────── 2. request/reply ─────────────────────────────

test('request/reply: a flow asks a responder on RabbitMQ (reply_to = the broker replyQueue, correlation_id) and completes with its reply', { timeout: 180_000 }, async (t: TestContext) => {
  const base = gw!.url;
  // The legacy system: consumes /queue/requests and answers reply_to with the correlation_id.
  const responder = await RabbitClient.connect('legacy-responder');
  const requests: Amqp[] = [];
  const replySenders = new Map<string, Sender>();
  const receiver = responder.conn.open_receiver({ source: { address: '/queue/requests', durable: 2 }, autoaccept: false, credit_window: 10 });
  receiver.on('message', (ctx: EventContext) => {
    const req = ctx.message as Amqp;
    const delivery = ctx.delivery as Delivery;
    requests.push(req);
    const input = JSON.parse(bodyBytes(req.body).toString('utf8')) as { ref: string; amount: number };
    let s = replySenders.get(req.reply_to);
    if (!s) {
      s = responder.conn.open_sender({ target: { address: req.reply_to, durable: 2 }, autosettle: true });
      replySenders.set(req.reply_to, s);
    }
    const reply = {
      message_id: `reply-${String(req.message_id)}`, correlation_id: req.correlation_id, durable: true, content_type: 'application/json',
      application_properties: { 'x-responder': 'rabbit-legacy' },
      body: rhea.message.data_section(Buffer.from(JSON.stringify({ ref: input.ref, status: input.amount > 1000 ? 'needs-review' : 'ok' }))),
    };
    // Accept the request only once RabbitMQ took the reply (the responder is at-least-once too).
    const d = s.send(reply as never);
    const onAccepted = (c: EventContext) => { if (c.delivery === d) { s!.removeListener('accepted', onAccepted); delivery.accept(); } };
    s.on('accepted', onAccepted);
  });

  const inputs = [{ ref: 'PAY-1', amount: 42 }, { ref: 'PAY-2', amount: 5000 }, { ref: 'PAY-3', amount: 7 }];
  const started: string[] = [];
  for (const input of inputs) {
    const r = await api(base, 'POST', '/api/flows/mq-check', { user: 'ops', body: { input, id: `start-${input.ref}` } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    started.push(r.body.instanceId);
  }
  const views = await Promise.all(started.map((id) => waitFor(async () => {
    const v = await flowView(base, 'mq-check', id);
    if (v.body?.status === 'failed') throw new Error(`flow ${id} failed: ${JSON.stringify(v.body)}`);
    return v.body?.status === 'completed' ? v.body : undefined;
  }, 120_000, `flow ${id} to complete`)));

  for (const [i, v] of views.entries()) {
    const input = inputs[i]!;
    const id = started[i]!;
    assert.deepEqual(v.result.body, { ref: input.ref, status: input.amount > 1000 ? 'needs-review' : 'ok' }, `flow ${id} got its own reply`);
    assert.deepEqual(v.result.sender, { kind: 'broker', name: 'legacy' }, 'a reply consumed from the broker has the broker as sender');
    assert.equal(v.result.headers['x-responder'], 'rabbit-legacy');
    assert.equal(v.result.contentType, 'application/json');
    assert.ok(String(v.result.correlationId).startsWith(`${id}:`), `correlation ${v.result.correlationId} belongs to ${id}`);
    // What the legacy system saw.
    const req = requests.find((m) => String(m.correlation_id) === v.result.correlationId);
    assert.ok(req, `the responder saw the request of ${id}`);
    // The step id is the message id (dedup across the hop); the correlation id adds the step's nonce.
    assert.equal(String(req.message_id), `${id}:0`, 'a flow request has the step id as message_id');
    assert.match(v.result.correlationId, new RegExp(`^${id}:0:[0-9a-f]{32}$`), 'and the step id plus a 128-bit nonce as correlation_id');
    assert.equal(req.reply_to, '/queue/replies', 'reply_to is the broker replyQueue in RabbitMQ address form');
    assert.equal(req.user_id, undefined, 'no user_id on messages to RabbitMQ');
    assert.equal(req.application_properties['switchboard-sender'], 'flow:mq-check');
    assert.equal(req.application_properties['switchboard-reply-to'], `flow:mq-check/${id}`);
    assert.equal(req.application_properties['x-ref'], input.ref);
    assert.equal(req.content_type, 'application/json');
    assert.deepEqual(JSON.parse(bodyBytes(req.body).toString('utf8')), input);
  }
  assert.equal(requests.length, inputs.length, `each request reached the responder once: ${requests.map((m) => m.message_id).join(', ')}`);
  t.diagnostic(`replies: ${views.map((v) => JSON.stringify(v.result.body)).join(', ')}`);
  receiver.close();
  for (const s of replySenders.values()) s.close();
});

// ───────────────────────────── 3. backpressure ─────────────────────────────

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

test('backpressure: mq:legacy/bp → queue:bounded (maxDepth 20), nobody consuming: the gateway holds at most twice the route concurrency (handled and held ready), the rest waits on RabbitMQ, memory stays bounded; draining delivers all exactly once', { timeout: 600_000 }, async (t: TestContext) => {
  const N = 2000;
  const BODY = 32 * 1024;
  const MAX_DEPTH = 20;
  const CONCURRENCY = 10;
  const p = await fleet.spawn(prefixFor('bp'), {
    brokers: brokers(false), // only the in-process gateway serves the reply queue
    permissions: PERMISSIONS,
    queues: { ...QUEUES, limits: [{ address: 'queue:bounded', maxDepth: MAX_DEPTH }] },
    routes: [{ from: 'mq:legacy/bp', to: 'queue:bounded', concurrency: CONCURRENCY }],
  });
  const base = p.url;
  const legacy = await RabbitClient.connect('legacy-bp');
  const pad = 'x'.repeat(BODY);
  const message = (id: string) => ({ message_id: id, content_type: 'application/json', body: rhea.message.data_section(Buffer.from(JSON.stringify({ id, pad }))) });

  // Warm-up through the whole path (and drained), so the baseline RSS is of a gateway that has
  // already done this work once.
  const warm = Array.from({ length: 100 }, (_, i) => `warm-${i}`);
  const warmCounts = new Map<string, number>();
  await legacy.send('bp', warm.map(message));
  await waitFor(async () => { await receiveBatch(base, 'queue:bounded', warmCounts); return warmCounts.size >= warm.length; }, 120_000, 'the warm-up messages').catch(async (err: Error) => {
    throw new Error(`${err.message}: ${warmCounts.size} of ${warm.length} arrived; RabbitMQ ${JSON.stringify((await rabbit!.queues()).bp)}; ` +
      `broker connection ${JSON.stringify((await readyz(base)).body?.checks?.['endpoint:mq'])}\n--- gateway warnings:\n${logWarnings(p)}`);
  });
  assertExactlyOnce(warm, warmCounts);
  await sleep(2000);
  const rssBefore = rssKb(p.pid);

  const ids = Array.from({ length: N }, (_, i) => `bp-${String(i).padStart(5, '0')}`);
  for (let i = 0; i < N; i += 200) await legacy.send('bp', ids.slice(i, i + 200).map(message));

  // Settled: two looks 2 s apart see the same numbers, with queue:bounded full.
  let prev = '';
  let settled: { sink: QueueState; rabbit: { ready: number; unacked: number } } | undefined;
  await waitFor(async () => {
    const s = { sink: await queueState(base, 'queue:bounded'), rabbit: (await rabbit!.queues()).bp ?? { ready: -1, unacked: -1 } };
    const key = JSON.stringify(s);
    const same = key === prev && s.sink.depth >= MAX_DEPTH;
    prev = key;
    if (same) settled = s;
    else await sleep(2000);
    return same;
  }, 120_000, 'queue:bounded to fill and the route to stop pulling').catch(async (err: Error) => {
    throw new Error(`${err.message}: last ${prev}; broker connection ${JSON.stringify((await readyz(base)).body?.checks?.['endpoint:mq'])}\n--- gateway warnings:\n${logWarnings(p)}`);
  });
  const rssAfter = rssKb(p.pid);
  const { sink, rabbit: onRabbit } = settled!;
  const health = (await readyz(base)).body?.checks?.['endpoint:mq'];
  t.diagnostic(`broker connection of the gateway: ${JSON.stringify(health)}`);
  const warnings = logWarnings(p);
  if (warnings) t.diagnostic(`gateway warnings:\n${warnings}`);
  t.diagnostic(`settled: queue:bounded ${JSON.stringify(sink)}, RabbitMQ bp ${JSON.stringify(onRabbit)}; gateway RSS ${Math.round(rssBefore / 1024)} → ${Math.round(rssAfter / 1024)} MB with ${Math.round((N * BODY) / 1048576)} MB waiting on RabbitMQ`);
  assert.equal(health?.detail, 'legacy: open', 'the broker connection is open with no error (a lost AMQP session leaves the route dead)');
  assert.ok(sink.depth <= MAX_DEPTH + CONCURRENCY, `queue:bounded holds ${sink.depth}, over maxDepth ${MAX_DEPTH} + concurrency ${CONCURRENCY}`);
  assert.ok(onRabbit.unacked <= 2 * CONCURRENCY, `the gateway holds ${onRabbit.unacked} unsettled deliveries, more than twice the route concurrency ${CONCURRENCY} (its window and one asked for ahead)`);
  assert.ok(onRabbit.unacked > CONCURRENCY, `the gateway holds ${onRabbit.unacked} unsettled deliveries: none asked for ahead of its window of ${CONCURRENCY}`);
  assert.ok(onRabbit.ready >= N - MAX_DEPTH - 3 * CONCURRENCY, `the rest should wait on RabbitMQ: ${onRabbit.ready} ready`);
  assert.equal(onRabbit.ready + onRabbit.unacked + sink.depth, N, 'every message is somewhere: on RabbitMQ (ready or held) or in queue:bounded');
  // If the gateway had pulled the backlog into memory its RSS would have grown by well over the
  // 62 MB of bodies; allow half of that for the runtime's own noise.
  const growthMb = (rssAfter - rssBefore) / 1024;
  assert.ok(growthMb < (N * BODY) / 1048576 / 2, `gateway RSS grew by ${growthMb.toFixed(1)} MB`);

  // Drain; the route resumes as room appears. Give up (with the evidence) when it stops moving.
  const counts = new Map<string, number>();
  let lastProgress = Date.now();
  while (counts.size < N) {
    const got = (await receiveBatch(base, 'queue:bounded', counts)).length;
    if (got > 0) { lastProgress = Date.now(); continue; }
    if (Date.now() - lastProgress > 90_000) {
      throw new Error(`the route mq:legacy/bp → queue:bounded made no progress for 90 s while queue:bounded was drained: ${counts.size} of ${N} received; ` +
        `RabbitMQ bp ${JSON.stringify((await rabbit!.queues()).bp)}; broker connection ${JSON.stringify((await readyz(base)).body?.checks?.['endpoint:mq'])}\n--- gateway warnings:\n${logWarnings(p)}`);
    }
    await sleep(100);
  }
  await waitFor(async () => { const q = (await rabbit!.queues()).bp; return q && q.ready === 0 && q.unacked === 0; }, 60_000, 'queue bp on RabbitMQ to be empty');
  await sleep(2000);
  await drain(base, 'queue:bounded', counts);
  t.diagnostic(`gateway RSS after the drain: ${Math.round(rssKb(p.pid) / 1024)} MB`);
  assertExactlyOnce(ids, counts);
  assert.deepEqual(await queueState(base, 'queue:bounded'), { depth: 0, inFlight: 0 });
  // rhea says so on stderr when a broker sends past the credit it was given. RabbitMQ 3.x's AMQP
  // 1.0 plugin does when credit is granted while transfers are on the way, so the consumer grants
  // it only once the last grant is used up: none here, over 2,100 messages pulled one slot at a time.
  assert.doesNotMatch(p.output(), /Received transfer when credit was/);
  await p.kill('SIGTERM');
});

// ───────────────────────────── 4. poison ─────────────────────────────

test('a poison message (its destination always refuses it) is rejected to RabbitMQ after maxAttempts, dead-lettered there, not redelivered forever; the next message flows', { timeout: 240_000 }, async (t: TestContext) => {
  // Its own gateway (own broker connection): the refusal is real — flow:strict-input validates
  // its input and a string amount is not retryable.
  const g = await startGw({ routes: [{ from: 'mq:legacy/poison', to: 'flow:strict-input', concurrency: 5 }] });
  const base = g.url;
  // RabbitMQ dead-letters rejected messages of queue "poison" into "poison.dlq" (a policy: the
  // gateway asks nothing special of the broker, it only rejects).
  await rabbit!.ctl(['set_policy', '--apply-to', 'queues', 'poison-dlx', '^poison$', '{"dead-letter-exchange":"","dead-letter-routing-key":"poison.dlq"}']);
  const legacy = await RabbitClient.connect('legacy-poison');
  const deadLetters: Amqp[] = [];
  const dlq = legacy.collect('poison.dlq', deadLetters); // declares the durable poison.dlq

  await legacy.send('poison', [
    { message_id: 'poison-1', content_type: 'application/json', body: rhea.message.data_section(Buffer.from(JSON.stringify({ amount: 'a lot' }))) },
    { message_id: 'fine-1', content_type: 'application/json', body: rhea.message.data_section(Buffer.from(JSON.stringify({ amount: 5 }))) },
  ]);

  // The good one runs even though the poison one is ahead of it.
  // Instance ids are random: the only instance of strict-input is the one fine-1 started.
  const instances = async () => (await api(base, 'GET', '/api/flows?name=strict-input', { user: 'ops' })).body.instances as { instanceId: string; status: string }[];
  await waitFor(async () => (await instances()).some((i) => i.status === 'completed'), 60_000, 'the flow started by fine-1 to complete');
  const fineId = (await instances())[0]!.instanceId;
  assert.equal((await flowView(base, 'strict-input', fineId)).body.input.amount, 5);

  // The poison one ends up in RabbitMQ's dead-letter queue, once.
  await waitFor(async () => deadLetters.length >= 1, 60_000, 'poison-1 in poison.dlq').catch(async (err: Error) => {
    const mq = (await readyz(base)).body?.checks?.['endpoint:mq'];
    throw new Error(`${err.message}. Broker connection: ${JSON.stringify(mq)}; RabbitMQ queues: ${JSON.stringify(await rabbit!.queues())}; ` +
      `flow refusals ${await metric(base, 'switchboard_messages_failed_total', { endpoint: 'flow' })}, rejected to the broker ${await metric(base, 'switchboard_dead_lettered_total', { endpoint: 'mq' })}` +
      `\n--- gateway log:\n${recentLog(g)}`);
  });
  await sleep(3000); // time for any (wrong) redelivery to show up
  const failed = await metric(base, 'switchboard_messages_failed_total', { endpoint: 'flow' });
  const dead = await metric(base, 'switchboard_dead_lettered_total', { endpoint: 'mq' });
  t.diagnostic(`flow refusals ${failed}, rejected to the broker ${dead}; dead letter annotations: ${JSON.stringify(deadLetters[0]?.message_annotations ?? {})}`);
  assert.deepEqual(deadLetters.map((m) => String(m.message_id)), ['poison-1']);
  assert.equal(failed, 3, 'the flow endpoint refused the poison message exactly maxAttempts (3) times');
  assert.equal(dead, 1, 'one message rejected to the broker');
  const poison = (await rabbit!.queues()).poison;
  assert.deepEqual(poison && { ready: poison.ready, unacked: poison.unacked }, { ready: 0, unacked: 0 }, 'nothing left (or held) on the poison queue');
  assert.deepEqual((await instances()).map((i) => i.instanceId), [fineId], 'no flow instance for the invalid input');
  // The broker connection is healthy afterwards (the rejection did not cost the session).
  assert.equal((await readyz(base)).status, 200, JSON.stringify((await readyz(base)).body));
  dlq.close();
});
