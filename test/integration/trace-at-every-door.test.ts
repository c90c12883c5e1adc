/**
 * W3C trace context at every door and on everything sent (issue 18 point 2, DESIGN §11), with a
 * real redis-server, a real OTLP/HTTP receiver in this process, a real SMTP server (smtp-server +
 * mailparser), a real webhook receiver (node:http) and a real AMQP 1.0 client (rhea) on the
 * embedded endpoint.
 *
 * Each door continues the caller's trace (the span the gateway makes has the caller's span as
 * its parent); each message sent on carries a traceparent of the same trace whose parent is the
 * gateway's span; an invalid traceparent is ignored (202, a new trace), never an error.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import rhea, { type Connection, type EventContext } from 'rhea';
import { SMTPServer } from 'smtp-server';
import type { Gateway } from '../../src/gateway.ts';
import { sign } from '../../src/network/webhook-signature.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { parseTraceparent } from '../../src/tracing/trace-context.ts';
import { hashPassword } from '../../src/auth/password.ts';
import { api, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

const SECRET = 'a-webhook-secret-of-some-length';
let redis: TestRedis;
let gw: Gateway;
let otlp: OtlpReceiver;
let hookServer: Server;
const hookRequests: IncomingHttpHeaders[] = [];
let smtp: SMTPServer;
const mails: { to: string[]; headers: Map<string, unknown> }[] = [];
let amqp: Connection | undefined;

/** A caller's own trace context: a fresh trace id and the caller's span id. */
function callerContext(): { traceId: string; spanId: string; traceparent: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

const sendSpan = (to: string, traceId: string) => (s: ReceivedSpan) => s.traceId === traceId && s.attributes['messaging.destination.name'] === to;

before(async () => {
  redis = await startTestRedis();
  otlp = await startOtlpReceiver();
  hookServer = createServer((req, res) => {
    hookRequests.push(req.headers);
    req.resume();
    req.on('end', () => res.writeHead(200).end());
  });
  hookServer.listen(0, '127.0.0.1');
  await once(hookServer, 'listening');
  const smtpPort = await freePort();
  smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'], logger: false,
    onData: (stream, session, callback) => {
      simpleParser(stream).then((m) => {
        mails.push({ to: session.envelope.rcptTo.map((r) => r.address), headers: m.headers as Map<string, unknown> });
        callback();
      }, (err: Error) => callback(err));
    },
  });
  await new Promise<void>((ok) => smtp.listen(smtpPort, '127.0.0.1', () => ok()));
  gw = await startTestGateway(redis.url, {
    amqp: { port: 0, host: '127.0.0.1' },
    routes: [{ from: 'queue:tr.route.in', to: 'queue:tr.route.out' }],
    tracing: { serviceName: 'doors', otlp: { url: otlp.url } },
    email: { smtp: `smtp://127.0.0.1:${smtpPort}`, from: 'switchboard@example.com', backoff: '200ms' },
    webhooks: {
      out: { url: `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/hook`, secret: SECRET, backoff: '200ms' },
      inh: { secret: SECRET, inbound: { to: 'queue:tr.hook' } },
    },
    // ops has an e-mail address, for the notice of a task
    directory: { type: 'file', users: [{ name: 'ops', passwordHash: await hashPassword(USERS.ops), groups: ['ops'], email: 'ops@example.com' }] },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'webhook:out', verbs: ['send'] }, { address: 'email:**', verbs: ['send'] }, { address: 'person:ops', verbs: ['send', 'consume'] }] },
    ],
  });
});

after(async () => {
  try { amqp?.close(); } catch { /* gone */ }
  await gw?.stop();
  await otlp?.close();
  hookServer?.closeAllConnections();
  await new Promise<void>((r) => (hookServer ? hookServer.close(() => r()) : r()));
  await new Promise<void>((r) => (smtp ? smtp.close(() => r()) : r()));
  await redis?.dispose();
});

test('HTTP door: POST /api/messages continues the caller (SERVER span, parent = caller); the queued message carries the new span', { timeout: 120_000 }, async () => {
  const c = callerContext();
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: c.traceparent, tracestate: 'caller=1' }, body: { to: 'queue:tr.http', id: 'tr-http-1', body: { a: 1 }, headers: { traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01` } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const span = await otlp.waitFor(sendSpan('queue:tr.http', c.traceId), 'of the HTTP send');
  assert.equal(span.parentSpanId, c.spanId, 'the request header, not a traceparent named in the body, is the parent');
  assert.equal(span.kind, 2, 'SERVER');
  assert.equal(span.service, 'doors');
  const [m] = await gw.router.receive('queue:tr.http', 1, 30_000, SYSTEM_CALLER);
  assert.ok(m);
  const carried = parseTraceparent(m.headers.traceparent)!;
  assert.deepEqual([carried.traceId, carried.spanId], [c.traceId, span.spanId]);
  assert.equal(m.headers.tracestate, 'caller=1');
  await gw.router.ack('queue:tr.http', [m.lease], SYSTEM_CALLER);
});

test('HTTP door: an invalid traceparent is ignored — the message is accepted and starts a new trace', { timeout: 120_000 }, async () => {
  for (const [i, bad] of ['garbage', `00-${'0'.repeat(32)}-${'1'.repeat(16)}-01`, `ff-${'1'.repeat(32)}-${'1'.repeat(16)}-01`].entries()) {
    const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: bad, tracestate: 'x=1' }, body: { to: 'queue:tr.bad', id: `tr-bad-${i}`, body: 1 } });
    assert.equal(r.status, 202, `${bad}: ${JSON.stringify(r.body)}`);
    const span = await otlp.waitFor((s) => s.attributes['messaging.message.id'] === `tr-bad-${i}`, `of tr-bad-${i}`);
    assert.equal(span.parentSpanId, undefined, `${bad}: a new trace (a root span)`);
  }
  const got = await gw.router.receive('queue:tr.bad', 10, 30_000, SYSTEM_CALLER);
  assert.equal(got.length, 3);
  for (const m of got) {
    assert.ok(parseTraceparent(m.headers.traceparent), 'the message carries the new, valid trace');
    assert.equal(m.headers.tracestate, undefined, 'a tracestate beside an invalid traceparent is dropped');
  }
  await gw.router.ack('queue:tr.bad', got.map((m) => m.lease), SYSTEM_CALLER);
});

test('AMQP door: the traceparent application property is continued, and a consumer on the embedded endpoint gets the new span as traceparent', { timeout: 120_000 }, async () => {
  const c = callerContext();
  const container = rhea.create_container({ id: `trace-${Date.now()}` });
  amqp = container.connect({ host: '127.0.0.1', port: gw.amqpPort!, username: 'ops', password: 'ops-pw', reconnect: false } as never);
  for (const ev of ['error', 'connection_error', 'session_error', 'sender_error', 'receiver_error']) amqp.on(ev, () => {});
  await new Promise<void>((ok, fail) => {
    amqp!.once('connection_open', () => ok());
    amqp!.once('disconnected', () => fail(new Error('cannot connect to the embedded AMQP endpoint')));
  });
  const sender = amqp.open_sender({ target: { address: 'queue:tr.amqp' } });
  await new Promise<void>((ok, fail) => {
    sender.once('sendable', () => sender.send({ message_id: 'tr-amqp-1', body: 'hello', application_properties: { traceparent: c.traceparent } } as never));
    sender.once('accepted', () => ok());
    sender.once('rejected', (ctx: EventContext) => fail(new Error(JSON.stringify(ctx.delivery?.remote_state))));
  });
  const span = await otlp.waitFor(sendSpan('queue:tr.amqp', c.traceId), 'of the AMQP send');
  assert.equal(span.parentSpanId, c.spanId);
  assert.equal(span.kind, 5, 'CONSUMER');
  const got = await new Promise<Record<string, any>>((ok) => {
    const r = amqp!.open_receiver({ source: { address: 'queue:tr.amqp' } });
    r.once('message', (ctx: EventContext) => ok(ctx.message as Record<string, any>));
  });
  const carried = parseTraceparent(got.application_properties?.traceparent)!;
  assert.deepEqual([carried.traceId, carried.spanId], [c.traceId, span.spanId], 'the application property names the gateway span');
});

test('inbound webhook: /hooks/<name> continues the traceparent header', { timeout: 120_000 }, async () => {
  const c = callerContext();
  const body = JSON.stringify({ event: 'created' });
  const ts = String(Math.floor(Date.now() / 1000));
  const res = await fetch(`${gw.url}/hooks/inh`, {
    method: 'POST', body,
    headers: { 'content-type': 'application/json', 'x-switchboard-id': 'tr-hook-1', 'x-switchboard-timestamp': ts, 'x-switchboard-signature': sign(SECRET, { direction: 'inbound', timestamp: ts, id: 'tr-hook-1' }, body), traceparent: c.traceparent },
  });
  assert.equal(res.status, 202, await res.text());
  const span = await otlp.waitFor(sendSpan('queue:tr.hook', c.traceId), 'of the inbound webhook');
  assert.equal(span.parentSpanId, c.spanId);
  assert.equal(span.attributes['switchboard.door'], 'webhook');
});

test('outgoing webhook and e-mail carry a traceparent of the caller trace whose parent is the gateway span', { timeout: 120_000 }, async () => {
  const c = callerContext();
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: c.traceparent, tracestate: 'caller=2' }, body: { to: 'webhook:out', id: 'tr-wh-1', body: { a: 1 } } })).status, 202);
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: c.traceparent }, body: { to: 'email:ann@example.com', id: 'tr-mail-1', subject: 'traced', body: 'hello' } })).status, 202);
  const webhookSpan = await otlp.waitFor(sendSpan('webhook:out', c.traceId), 'of the webhook send');
  const mailSpan = await otlp.waitFor(sendSpan('email:ann@example.com', c.traceId), 'of the e-mail send');
  assert.equal(webhookSpan.parentSpanId, c.spanId);
  assert.equal(mailSpan.parentSpanId, c.spanId);

  const hook = await waitFor(async () => hookRequests.find((h) => h['x-switchboard-id'] === 'tr-wh-1'), 30_000, 'the webhook POST') as IncomingHttpHeaders;
  const hp = parseTraceparent(hook.traceparent)!;
  assert.deepEqual([hp.traceId, hp.spanId], [c.traceId, webhookSpan.spanId]);
  assert.equal(hook.tracestate, 'caller=2');

  const mail = await waitFor(async () => mails.find((m) => m.to.includes('ann@example.com')), 30_000, 'the e-mail') as (typeof mails)[number];
  const mp = parseTraceparent(String(mail.headers.get('traceparent')))!;
  assert.deepEqual([mp.traceId, mp.spanId], [c.traceId, mailSpan.spanId]);
});

test('hostile trace values never reach an outgoing header: a CR/LF in traceparent, an oversized or forged tracestate', { timeout: 120_000 }, async () => {
  const c = callerContext();
  // Over HTTP a header cannot hold CR/LF (fetch refuses), so the attacker names them in the body.
  const r = await api(gw.url, 'POST', '/api/messages', {
    user: 'ops',
    body: { to: 'webhook:out', id: 'tr-evil-1', body: 1, headers: { traceparent: `${c.traceparent}\r\nx-evil: 1`, tracestate: `a=${'x'.repeat(9000)}` } },
  });
  assert.equal(r.status, 202, 'ignored, not an error');
  const span = await otlp.waitFor((s) => s.attributes['messaging.message.id'] === 'tr-evil-1', 'of tr-evil-1');
  assert.equal(span.parentSpanId, undefined, 'the broken value did not become a parent: a new trace');
  const hook = await waitFor(async () => hookRequests.find((h) => h['x-switchboard-id'] === 'tr-evil-1'), 30_000, 'the webhook POST') as IncomingHttpHeaders;
  assert.equal(hook['x-evil'], undefined, 'no header smuggled into the outgoing request');
  assert.equal(hook.tracestate, undefined, 'the oversized tracestate was dropped');
  const sent = parseTraceparent(hook.traceparent)!;
  assert.deepEqual([sent.traceId, sent.spanId], [span.traceId, span.spanId], 'the receiver gets the new trace');
});

test('a BullMQ job and a route carry the trace: the route\'s send is a child of the span that queued the message', { timeout: 120_000 }, async () => {
  const c = callerContext();
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: c.traceparent }, body: { to: 'queue:tr.route.in', id: 'tr-route-1', body: 1 } })).status, 202);
  const queued = await otlp.waitFor(sendSpan('queue:tr.route.in', c.traceId), 'of the HTTP send');
  const routed = await otlp.waitFor(sendSpan('queue:tr.route.out', c.traceId), 'of the route');
  assert.equal(queued.parentSpanId, c.spanId);
  assert.equal(routed.parentSpanId, queued.spanId, 'the job kept the traceparent the HTTP span set');
  assert.equal(routed.attributes['switchboard.door'], 'route');
  assert.equal(routed.kind, 4, 'PRODUCER');
  const [m] = await gw.router.receive('queue:tr.route.out', 1, 30_000, SYSTEM_CALLER);
  const carried = parseTraceparent(m!.headers.traceparent)!;
  assert.deepEqual([carried.traceId, carried.spanId], [c.traceId, routed.spanId]);
  await gw.router.ack('queue:tr.route.out', [m!.lease], SYSTEM_CALLER);
});

test('a task keeps the trace it was asked in: its e-mail notice is a child of the send that made the task', { timeout: 120_000 }, async () => {
  const c = callerContext();
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', headers: { traceparent: c.traceparent }, body: { to: 'person:ops', id: 'tr-task-1', body: { title: 'Check the trace', actions: ['done'] } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const toTask = await otlp.waitFor(sendSpan('person:ops', c.traceId), 'of the task send');
  const notice = await otlp.waitFor(sendSpan('email:ops@example.com', c.traceId), 'of the notice');
  assert.equal(toTask.parentSpanId, c.spanId);
  assert.equal(notice.parentSpanId, toTask.spanId, 'the notice continues the trace stored with the task');
  assert.equal(notice.attributes['switchboard.door'], 'inbox');
  const mail = await waitFor(async () => mails.find((m) => m.to.includes('ops@example.com')), 30_000, 'the notice e-mail') as (typeof mails)[number];
  const mp = parseTraceparent(String(mail.headers.get('traceparent')))!;
  assert.deepEqual([mp.traceId, mp.spanId], [c.traceId, notice.spanId]);
});
