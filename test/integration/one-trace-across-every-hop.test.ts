/**
 * One approval is ONE trace (issue 18 point 2, DESIGN §11): HTTP start → flow → ask (a task in
 * the inbox) → a decision clicked in real Chromium → request to RabbitMQ (mq:) → the reply of a
 * responder living on RabbitMQ → a send to a peer gateway over mutual TLS. Spans of both
 * gateways go to a real OTLP/HTTP receiver in this process (OpenTelemetry's own exporter, OTLP
 * JSON); the test checks every parent/child link.
 *
 * The flow is started on gateway A1, which is stopped while the flow waits for the decision; A2
 * (another gateway on the same Redis, the same instance keys) takes the decision and replays the
 * flow from its journal: the steps it runs are still children of the instance's span, read from
 * the trace context stored with the instance.
 *
 * Real parts: redis-server (one per bank), RabbitMQ with the AMQP 1.0 plugin, certificates of a
 * test network CA, Chromium (playwright-core). Everything started here is stopped in after().
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import rhea, { type Connection, type Delivery, type EventContext, type Sender } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { parseTraceparent } from '../../src/tracing/trace-context.ts';
import { launchChromium } from '../support/browser.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'traced-approval',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const decision = await ctx.ask('group:approvers', { title: 'Approve ' + input.ref, actions: ['approve', 'reject'] });
    const check = await ctx.request('mq:legacy/checks', { ref: input.ref }, { timeout: '3m' });
    await ctx.send('peer:bank-b/inbound.approved', { ref: input.ref, decision: decision.action, check: check.body });
    return { decision: decision.action };
  },
});
`;

let redisA: TestRedis;
let redisB: TestRedis;
let rabbit: TestRabbit;
let otlp: OtlpReceiver;
let net: Awaited<ReturnType<typeof testNetwork>>;
let flowsDir: string;
let browser: Browser;
let responder: Connection | undefined;
const gateways: Gateway[] = [];
/** What the responder on RabbitMQ saw and the span id it answered with. */
const seen: { traceparent?: string; replySpan?: string } = {};

const PERMS = [
  { group: 'ops', allow: [{ address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'group:approvers', verbs: ['consume', 'browse'] }, { address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] },
];

async function startA(service: string): Promise<Gateway> {
  const g = await startTestGateway(redisA.url, {
    redis: { url: redisA.url, prefix: 'traced' }, // A1 and A2 share the instance keys
    permissions: PERMS,
    flows: { dir: flowsDir, lockTimeout: '5s', stalledCheck: '1s' },
    brokers: { legacy: { url: rabbit.url, addressFormat: 'rabbitmq', replyQueue: 'replies', maxAttempts: 3, sendTimeout: '5s' } },
    network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }]),
    tracing: { serviceName: service, otlp: { url: otlp.url } },
  });
  gateways.push(g);
  await waitFor(async () => (await api(g.url, 'GET', '/readyz')).status === 200, 60_000, `${service} ready (broker connected)`);
  return g;
}

/** The responder on RabbitMQ: answers each request on reply_to, continuing its traceparent with a span of its own. */
async function startResponder(): Promise<void> {
  const container = rhea.create_container({ id: `responder-${Date.now()}` });
  const conn = container.connect({ host: '127.0.0.1', port: rabbit.port, username: 'guest', password: 'guest', reconnect: false } as never);
  responder = conn;
  for (const ev of ['error', 'connection_error', 'session_error', 'sender_error', 'receiver_error']) conn.on(ev, () => {});
  await new Promise<void>((ok, fail) => {
    conn.once('connection_open', () => ok());
    conn.once('disconnected', () => fail(new Error('cannot connect to RabbitMQ')));
  });
  const senders = new Map<string, Sender>();
  const receiver = conn.open_receiver({ source: { address: '/queue/checks', durable: 2 }, autoaccept: false, credit_window: 10 });
  receiver.on('message', (ctx: EventContext) => {
    const req = ctx.message as Record<string, any>;
    const incoming = parseTraceparent(req.application_properties?.traceparent);
    seen.traceparent = req.application_properties?.traceparent;
    // The legacy system's own span: a child of the request's, in the same trace.
    seen.replySpan = randomBytes(8).toString('hex');
    let s = senders.get(req.reply_to);
    if (!s) {
      s = conn.open_sender({ target: { address: req.reply_to, durable: 2 }, autosettle: true });
      senders.set(req.reply_to, s);
    }
    const d = s.send({
      message_id: `reply-${String(req.message_id)}`, correlation_id: req.correlation_id, durable: true, content_type: 'application/json',
      application_properties: incoming ? { traceparent: `00-${incoming.traceId}-${seen.replySpan}-01` } : {},
      body: rhea.message.data_section(Buffer.from(JSON.stringify({ ok: true }))),
    } as never);
    const onAccepted = (c: EventContext) => { if (c.delivery === d) { s!.removeListener('accepted', onAccepted); (ctx.delivery as Delivery).accept(); } };
    s.on('accepted', onAccepted);
  });
}

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-trace-flows-'));
  writeFileSync(join(flowsDir, 'traced-approval.ts'), FLOW);
  [redisA, redisB, otlp] = await Promise.all([startTestRedis(), startTestRedis(), startOtlpReceiver()]);
  rabbit = await startTestRabbit();
  net = await testNetwork([{ alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' }, { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' }]);
  const b = await startTestGateway(redisB.url, {
    permissions: [{ group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] }],
    // The flow loader's module hook is installed once per process, for the first flows folder.
    flows: { dir: flowsDir },
    network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }]),
    tracing: { serviceName: 'bank-b', otlp: { url: otlp.url } },
  });
  gateways.push(b);
  await startResponder();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  try { responder?.close(); } catch { /* gone */ }
  for (const g of gateways.reverse()) await g.stop().catch(() => {});
  await otlp?.close();
  await rabbit?.dispose().catch(() => {});
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

test('HTTP start → flow → ask → browser decision → RabbitMQ request → reply → peer send is one trace with the right parent/child links', { timeout: 420_000 }, async () => {
  const a1 = await startA('bank-a-1');
  const traceId = randomBytes(16).toString('hex');
  const client = randomBytes(8).toString('hex');
  const started = await api(a1.url, 'POST', '/api/flows/traced-approval', { user: 'ops', headers: { traceparent: `00-${traceId}-${client}-01` }, body: { input: { ref: 'TR-1' } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const instance = started.body.instanceId as string;
  const task = await waitFor(async () => (await api(a1.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Approve TR-1'), 60_000, 'the task') as { id: string };

  // A1 goes away while the flow waits; A2 continues it by replay from the journal.
  await a1.stop();
  const a2 = await startA('bank-a-2');

  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(60_000);
    const path = `/tasks/${task.id}`;
    await page.goto(`${a2.url}/login?next=${enc(path)}`);
    await page.fill('#username', 'ops');
    await page.fill('#password', USERS.ops);
    await Promise.all([page.waitForURL((u) => u.pathname === path), page.getByRole('button', { name: 'Sign in' }).click()]);
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Approve' }).click()]);
  } finally {
    await context.close();
  }

  const view = await waitFor(async () => {
    const v = (await api(a2.url, 'GET', `/api/flows/traced-approval/${enc(instance)}`, { user: 'ops' })).body;
    return v?.status === 'completed' || v?.status === 'failed' ? v : undefined;
  }, 180_000, 'the flow to complete');
  assert.equal(view.status, 'completed', JSON.stringify(view));
  const atB = (await waitFor(async () => {
    const got = await gateways[0]!.router.receive('queue:inbound.approved', 1, 60_000, SYSTEM_CALLER);
    return got[0];
  }, 60_000, 'the peer message at bank B'))!;
  await gateways[0]!.router.ack('queue:inbound.approved', [atB.lease], SYSTEM_CALLER);

  const span = (pred: (s: ReceivedSpan) => boolean, what: string) => otlp.waitFor((s) => s.traceId === traceId && pred(s), what, 60_000);
  const named = (service: string, name: string) => span((s) => s.service === service && s.name === name, `${name} at ${service}`);

  // 1. the HTTP door continues the client
  const start = await named('bank-a-1', 'send flow:traced-approval');
  assert.equal(start.parentSpanId, client, 'the HTTP start is a child of the client span');
  assert.equal(start.kind, 2, 'SERVER');
  // 2. the instance is a child of the start; its context is stored with it
  const flow = await named('bank-a-1', 'flow traced-approval');
  assert.equal(flow.parentSpanId, start.spanId);
  assert.equal(flow.attributes['switchboard.flow.instance'], instance);
  // 3. the ask is a step of the flow; the task is asked by a send under it
  const ask = await named('bank-a-1', 'flow traced-approval ask group:approvers');
  assert.equal(ask.parentSpanId, flow.spanId);
  const toTask = await named('bank-a-1', 'send group:approvers');
  assert.equal(toTask.parentSpanId, ask.spanId);
  // 4. the decision (clicked on A2) continues the trace the task was asked in
  const decision = await span((s) => s.service === 'bank-a-2' && s.name === 'send flow:traced-approval/{instance}' && s.attributes['switchboard.door'] === 'inbox', 'the decision');
  assert.equal(decision.parentSpanId, toTask.spanId, 'the decision is a child of the send that made the task');
  // The click is a trace of its own, linked with the decision (decision-request-trace.test.ts).
  const click = await otlp.waitFor((s) => s.service === 'bank-a-2' && s.name === 'POST /tasks/{id}/decision', 'the request that decided', 60_000);
  assert.notEqual(click.traceId, traceId);
  assert.deepEqual(decision.links, [{ traceId: click.traceId, spanId: click.spanId }], 'the decision links to the request that made it');
  const answered = await named('bank-a-2', 'flow traced-approval ask answered');
  assert.equal(answered.parentSpanId, decision.spanId);
  // 5. after the replay on A2, the request is still a step of the same instance span
  const request = await named('bank-a-2', 'flow traced-approval request mq:legacy/checks');
  assert.equal(request.parentSpanId, flow.spanId, 'replayed elsewhere, the step is still a child of the stored instance span');
  const toRabbit = await named('bank-a-2', 'send mq:legacy/checks');
  assert.equal(toRabbit.parentSpanId, request.spanId);
  assert.equal(toRabbit.kind, 4, 'PRODUCER');
  const onRabbit = parseTraceparent(seen.traceparent)!;
  assert.deepEqual([onRabbit.traceId, onRabbit.spanId], [traceId, toRabbit.spanId], 'the AMQP message on RabbitMQ carries the send span as traceparent');
  // 6. the reply from RabbitMQ continues the responder's span
  const reply = await span((s) => s.service === 'bank-a-2' && s.attributes['switchboard.door'] === 'broker', 'the reply from RabbitMQ');
  assert.equal(reply.parentSpanId, seen.replySpan, "the reply is a child of the responder's span");
  assert.equal(reply.kind, 5, 'CONSUMER');
  const replied = await named('bank-a-2', 'flow traced-approval request answered');
  assert.equal(replied.parentSpanId, reply.spanId);
  // 7. the peer send is a step of the flow, and bank B continues it under the signature
  const peerStep = await named('bank-a-2', 'flow traced-approval send peer:bank-b/inbound.approved');
  assert.equal(peerStep.parentSpanId, flow.spanId);
  const toPeer = await named('bank-a-2', 'send peer:bank-b/inbound.approved');
  assert.equal(toPeer.parentSpanId, peerStep.spanId);
  const atBank = await named('bank-b', 'send queue:inbound.approved');
  assert.equal(atBank.parentSpanId, toPeer.spanId, 'bank B continues the span that sent the envelope');
  assert.equal(atBank.attributes['switchboard.door'], 'peer');
  const carried = parseTraceparent(atB.headers.traceparent)!;
  assert.deepEqual([carried.traceId, carried.spanId], [traceId, atBank.spanId]);

  // Nothing of this approval left the trace: every span about the instance is in it.
  const strays = otlp.spans.filter((s) => s.attributes['switchboard.flow.instance'] === instance && s.traceId !== traceId);
  assert.deepEqual(strays.map((s) => s.name), []);
});
