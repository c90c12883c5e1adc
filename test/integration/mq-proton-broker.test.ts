/**
 * `mq:` against a second, independent AMQP 1.0 implementation: Qpid Proton's C example broker
 * (test/support/proton-broker.ts) with `addressFormat: plain` and SASL ANONYMOUS (issue 14 point
 * 8), tested like RabbitMQ where its nature allows. Its nature: queues in memory only, a message
 * settled by the broker as it is sent (a consumer cannot give it back), credit honoured, no DLQ.
 *
 * 1. Both directions and dedup across the hop: API → mq:proton/x → route → queue:y and
 *    queue:a → route → mq:proton/z read raw by a rhea client; ids, headers, correlation, subject,
 *    JSON and binary bodies; the same id again (from the API and as a broker-side redelivery)
 *    reaches queue:y once.
 * 2. Request/reply: a flow's ctx.request('mq:proton/requests') answered by a responder on the
 *    broker through replyQueue `replies`.
 * 3. A reply_to the broker cannot answer to is refused at the send (400 reply_to_unreachable).
 * 4. kill -9 of the gateway process that moves queue:src → mq:proton/hop mid-stream; a new one
 *    finishes; the route mq:proton/hop → queue:sink (another gateway) gets every id exactly once.
 * 5. The broker killed and restarted mid-stream under queue:src2 → mq:proton/hop2 → queue:sink2:
 *    the gateway reconnects by itself and re-sends what the broker had not accepted. What the
 *    broker had accepted and not yet delivered dies with it (its own loss, counted and bounded):
 *    every other id exactly once, none twice.
 *
 * Polls only, no timing assertions. Everything started here is stopped in after(), by PID.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Sender } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, drain, duplicatesCaught, queueState, sendAll } from '../support/counting-sink.ts';
import { GatewayFleet, logWarnings, prefixFor, sleep } from '../support/fleet.ts';
import { startTestProtonBroker, type TestProtonBroker } from '../support/proton-broker.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

let redis: TestRedis | undefined;
let proton: TestProtonBroker | undefined;
let gw: Gateway | undefined;
let flowsDir: string | undefined;
const fleet = new GatewayFleet(() => redis!.url);
const conns: Connection[] = [];

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'proton-check',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const reply = await ctx.request('mq:proton/requests', { ref: input.ref }, { timeout: '2m' });
    return { body: reply.body, sender: reply.sender, correlationId: reply.correlationId ?? null };
  },
});
`;

const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:proton/**', verbs: ['send'] }, { address: 'flow:**', verbs: ['start', 'send', 'browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

function config(extra: Record<string, unknown> = {}, replies = false): Record<string, unknown> {
  return {
    brokers: { proton: { url: proton!.url, addressFormat: 'plain', sasl: 'ANONYMOUS', maxAttempts: 3, sendTimeout: '3s', ...(replies ? { replyQueue: 'replies' } : {}) } },
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s' },
    permissions: PERMISSIONS,
    log: { level: 'error' },
    ...extra,
  };
}

/** A rhea client of the Proton broker (the "legacy side"). */
async function connect(): Promise<Connection> {
  const container = rhea.create_container({ id: `legacy-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: proton!.port, username: 'anonymous', reconnect: false } as ConnectionOptions);
  for (const ev of ['error', 'connection_error', 'session_error', 'sender_error', 'receiver_error']) c.on(ev, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('disconnected', () => reject(new Error('cannot connect to the Proton broker')));
  });
  conns.push(c);
  return c;
}

async function put(c: Connection, address: string, messages: Record<string, unknown>[]): Promise<void> {
  const s: Sender = c.open_sender({ target: { address } });
  await new Promise<void>((resolve, reject) => {
    let next = 0;
    let accepted = 0;
    s.on('sendable', () => { while (next < messages.length && s.sendable()) s.send(messages[next++] as never); });
    s.on('accepted', () => { if (++accepted === messages.length) resolve(); });
    s.on('rejected', () => reject(new Error('the Proton broker rejected a message')));
  });
  s.close();
}

async function take(c: Connection, address: string, n: number): Promise<Record<string, any>[]> {
  const got: Record<string, any>[] = [];
  const r = c.open_receiver({ source: { address }, credit_window: 50 });
  r.on('message', (ctx: EventContext) => { got.push(ctx.message as Record<string, any>); });
  await waitFor(async () => got.length >= n, 60_000, `${n} message(s) on ${address} (got ${got.length})`);
  r.close();
  return got;
}

const bytes = (body: any): Buffer => (Buffer.isBuffer(body) ? body : body?.typecode === 0x75 ? body.content : Buffer.from(String(body)));

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-proton-flows-'));
  writeFileSync(join(flowsDir, 'proton-check.ts'), FLOW);
  redis = await startTestRedis();
  proton = await startTestProtonBroker();
  gw = await fleet.start(prefixFor('proton'), config({
    flows: { dir: flowsDir, concurrency: 10, lockTimeout: '5s', stalledCheck: '1s' },
    routes: [{ from: 'mq:proton/x', to: 'queue:y' }, { from: 'queue:a', to: 'mq:proton/z' }],
  }, true));
  await waitFor(async () => (await api(gw!.url, 'GET', '/readyz')).status === 200, 30_000, 'the gateway to be connected to the Proton broker');
});

after(async () => {
  for (const c of conns) try { c.close(); } catch { /* gone */ }
  await fleet.stopAll(20_000);
  await proton?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

test('both directions through the Proton broker keep ids, headers, correlation, subject, JSON and binary bodies; an id again reaches queue:y once', { timeout: 120_000 }, async () => {
  const base = gw!.url;
  const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:proton/x', id: 'p-json-1', headers: { 'x-ref': 'R-1' }, correlationId: 'corr-1', subject: 'payment', body: { ref: 'R-1', amount: 10.5 } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const legacy = await connect();
  const binary = Buffer.from([0, 1, 2, 254, 255]);
  await put(legacy, 'x', [{ message_id: 'p-bin-1', correlation_id: 'corr-2', content_type: 'application/pdf', application_properties: { 'x-pages': '2' }, body: rhea.message.data_section(binary) }]);
  await waitFor(async () => (await queueState(base, 'queue:y')).depth >= 2, 30_000, 'both at queue:y');
  const got = await gw!.router.receive('queue:y', 10, 60_000, SYSTEM_CALLER);
  await gw!.router.ack('queue:y', got.map((m) => m.lease), SYSTEM_CALLER);
  const byId = new Map(got.map((m) => [m.id, m]));
  assert.deepEqual([...byId.keys()].sort(), ['p-bin-1', 'p-json-1']);
  const j = byId.get('p-json-1')!;
  assert.deepEqual(j.sender, { kind: 'broker', name: 'proton' });
  assert.equal(j.headers['switchboard-claimed-sender'], 'user:ops');
  assert.equal(j.headers['x-ref'], 'R-1');
  assert.equal(j.correlationId, 'corr-1');
  assert.equal(j.subject, 'payment');
  assert.deepEqual(j.body, { ref: 'R-1', amount: 10.5 });
  const b = byId.get('p-bin-1')!;
  assert.equal(b.correlationId, 'corr-2');
  assert.equal(b.contentType, 'application/pdf');
  assert.equal(b.headers['x-pages'], '2');
  assert.ok(Buffer.isBuffer(b.body) && b.body.equals(binary));

  // Dedup across the hop: the same id from the API, and a broker-side redelivery.
  const again = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:proton/x', id: 'p-json-1', body: { other: true } } });
  assert.equal(again.status, 202);
  assert.equal(again.body.duplicate, true);
  await put(legacy, 'x', [{ message_id: 'p-bin-1', content_type: 'application/pdf', body: rhea.message.data_section(binary) }]);
  await sleep(1500);
  assert.deepEqual(await queueState(base, 'queue:y'), { depth: 0, inFlight: 0 }, 'a redelivered id is not delivered twice');

  // The other direction, read raw on the broker.
  await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:a', id: 'p-out-1', headers: { 'x-k': 'v' }, correlationId: 'corr-3', subject: 'invoice', body: { lines: [1, 2] } } });
  const [raw] = await take(legacy, 'z', 1);
  assert.equal(String(raw!.message_id), 'p-out-1');
  assert.equal(raw!.correlation_id, 'corr-3');
  assert.equal(raw!.subject, 'invoice');
  assert.equal(raw!.user_id, undefined);
  assert.equal(raw!.application_properties['x-k'], 'v');
  assert.equal(raw!.application_properties['switchboard-sender'], 'user:ops');
  assert.deepEqual(JSON.parse(bytes(raw!.body).toString('utf8')), { lines: [1, 2] });
});

test('request/reply: a flow asks a responder on the Proton broker (reply_to = replies) and completes with its answer', { timeout: 120_000 }, async () => {
  const base = gw!.url;
  const responder = await connect();
  const r = responder.open_receiver({ source: { address: 'requests' }, credit_window: 10 });
  const senders = new Map<string, Sender>();
  const seen: string[] = [];
  r.on('message', (ctx: EventContext) => {
    const req = ctx.message as Record<string, any>;
    seen.push(`${String(req.message_id)} corr=${String(req.correlation_id)} reply_to=${String(req.reply_to)}`);
    let s = senders.get(req.reply_to);
    if (!s) { s = responder.open_sender({ target: { address: req.reply_to } }); senders.set(req.reply_to, s); }
    const input = JSON.parse(bytes(req.body).toString('utf8')) as { ref: string };
    s.send({ message_id: `reply-${req.message_id}`, correlation_id: req.correlation_id, content_type: 'application/json', body: rhea.message.data_section(Buffer.from(JSON.stringify({ ref: input.ref, ok: true }))) } as never);
  });
  const started = await api(base, 'POST', '/api/flows/proton-check', { user: 'ops', body: { input: { ref: 'PR-1' } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const id = started.body.instanceId as string;
  const v = await waitFor(async () => {
    const f = await api(base, 'GET', `/api/flows/proton-check/${enc(id)}`, { user: 'ops' });
    if (f.body?.status === 'failed') throw new Error(JSON.stringify(f.body));
    return f.body?.status === 'completed' ? f.body : undefined;
  }, 90_000, 'the flow to complete').catch(async (err: Error) => { throw new Error(`${err.message}: ${JSON.stringify((await api(base, 'GET', `/api/flows/proton-check/${enc(id)}`, { user: 'ops' })).body)}; the responder saw: ${seen.join(' | ') || 'nothing'}; broker: ${proton!.output().slice(-300)}`); });
  assert.deepEqual(v.result.body, { ref: 'PR-1', ok: true });
  assert.deepEqual(v.result.sender, { kind: 'broker', name: 'proton' });
  assert.ok(String(v.result.correlationId).startsWith(`${id}:`));
  r.close();
});

test('a reply_to the broker cannot answer to is refused at the send with 400 naming it; its own addresses and flow instances are fine', { timeout: 60_000 }, async () => {
  const base = gw!.url;
  const bad = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:proton/x', id: 'rt-bad-1', replyTo: 'queue:elsewhere', body: {} } });
  assert.equal(bad.status, 400, JSON.stringify(bad.body));
  assert.equal(bad.body.error.code, 'reply_to_unreachable');
  assert.match(bad.body.error.message, /queue:elsewhere/);
  const ok = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: 'mq:proton/answers.in', id: 'rt-ok-1', replyTo: 'mq:proton/answers', body: {} } });
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
  const [raw] = await take(await connect(), 'answers.in', 1);
  assert.equal(raw!.reply_to, 'answers', 'a reply_to on the same broker travels as its plain address');
});

test('kill -9 of the gateway moving queue:src → mq:proton/hop mid-stream: a new process finishes; queue:sink gets every one of 1,500 ids exactly once', { timeout: 600_000 }, async (t: TestContext) => {
  const N = 1500;
  const prefix = prefixFor('pkill');
  const ids = Array.from({ length: N }, (_, i) => `pk-${String(i).padStart(5, '0')}`);
  // The observer takes mq:proton/hop → queue:sink and is not killed: the Proton broker settles
  // what it sends, so a consumer killed with messages in hand would lose them (its nature).
  const observer = await fleet.start(prefix, config({ routes: [{ from: 'mq:proton/hop', to: 'queue:sink', concurrency: 20 }] }));
  await sendAll(observer.url, 'queue:src', ids);
  const routeConfig = config({ routes: [{ from: 'queue:src', to: 'mq:proton/hop', concurrency: 50 }] });
  const first = await fleet.spawn(prefix, routeConfig);
  const atKill = await waitFor(async () => { const s = await queueState(observer.url, 'queue:sink'); if (s.depth >= N) throw new Error('all moved before the kill: raise N'); return s.depth >= N / 5 ? s : undefined; }, 120_000, 'the route to move some').catch((err: Error) => { throw new Error(`${err.message}\n${logWarnings(first)}`); });
  await first.kill('SIGKILL');
  t.diagnostic(`killed with the sink at ${atKill!.depth}; queue:src ${JSON.stringify(await queueState(observer.url, 'queue:src'))}`);
  const second = await fleet.spawn(prefix, routeConfig);
  const counts = new Map<string, number>();
  await waitFor(async () => { await drain(observer.url, 'queue:sink', counts); return counts.size >= N; }, 300_000, `all ${N} ids at the sink`).catch((err: Error) => {
    throw new Error(`${err.message}: ${counts.size} arrived; queue:src ${JSON.stringify(second.url)}\n${logWarnings(second)}`);
  });
  await sleep(2000);
  await drain(observer.url, 'queue:sink', counts);
  t.diagnostic(`redeliveries caught as duplicates at the sink: ${await duplicatesCaught(observer.url)}`);
  assertExactlyOnce(ids, counts);
  assert.deepEqual(await queueState(observer.url, 'queue:src'), { depth: 0, inFlight: 0 });
  await second.kill('SIGTERM');
});

test('the Proton broker killed and restarted mid-stream (queue:src2 → mq:proton/hop2 → queue:sink2): the gateway rides it out; all but what the broker had accepted and lost arrive, none twice', { timeout: 600_000 }, async (t: TestContext) => {
  const N = 3000;
  const ids = Array.from({ length: N }, (_, i) => `pr-${String(i).padStart(5, '0')}`);
  const g = await fleet.start(prefixFor('prestart'), config({ routes: [{ from: 'queue:src2', to: 'mq:proton/hop2', concurrency: 5 }, { from: 'mq:proton/hop2', to: 'queue:sink2', concurrency: 20 }] }));
  await waitFor(async () => (await api(g.url, 'GET', '/readyz')).status === 200, 30_000, 'ready');
  await sendAll(g.url, 'queue:src2', ids);
  await waitFor(async () => (await queueState(g.url, 'queue:sink2')).depth >= N / 10, 120_000, 'the route to move some');
  await proton!.stop(true);
  // While it is down nothing more is accepted: what left queue:src2 is what the broker accepted.
  await waitFor(async () => (await api(g.url, 'GET', '/readyz')).status === 503, 30_000, '/readyz to see the broker down');
  await sleep(2000);
  const src = await queueState(g.url, 'queue:src2');
  const sink = await queueState(g.url, 'queue:sink2');
  const acceptedByBroker = N - src.depth - src.inFlight;
  const lostBound = acceptedByBroker - sink.depth;
  assert.ok(src.depth > 0, `the kill was not mid-stream: ${JSON.stringify(src)}`);
  t.diagnostic(`broker killed: queue:src2 ${JSON.stringify(src)}, queue:sink2 ${JSON.stringify(sink)}; the broker had accepted ${acceptedByBroker}, so at most ${lostBound} died with it`);
  await proton!.start();
  await waitFor(async () => (await api(g.url, 'GET', '/readyz')).status === 200, 60_000, '/readyz ready again');
  const counts = new Map<string, number>();
  let last = -1;
  await waitFor(async () => {
    await drain(g.url, 'queue:sink2', counts);
    const s = await queueState(g.url, 'queue:src2');
    const done = s.depth === 0 && s.inFlight === 0 && counts.size === last;
    last = counts.size;
    if (!done) await sleep(1000);
    return done;
  }, 300_000, 'queue:src2 empty and the sink quiet').catch((err: Error) => { throw new Error(`${err.message}: ${counts.size} at the sink; broker says ${proton!.output().slice(-500)}`); });
  const missing = ids.filter((id) => !counts.has(id));
  const dup = [...counts].filter(([, n]) => n > 1);
  const unknown = [...counts.keys()].filter((id) => !ids.includes(id));
  t.diagnostic(`${counts.size} of ${N} arrived; ${missing.length} lost with the broker (bound ${lostBound})`);
  assert.deepEqual(dup, [], 'none twice');
  assert.deepEqual(unknown, []);
  assert.ok(missing.length <= lostBound, `${missing.length} missing, more than the ${lostBound} the broker held when it died: ${missing.slice(0, 20).join(', ')}`);
});
