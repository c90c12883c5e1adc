import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { sign, verify } from '../../src/network/webhook-signature.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Webhooks both ways (DESIGN §6): outbound webhook:<name> POSTs signed JSON with the message id,
// retries 5xx, dead-letters 4xx; inbound POST /hooks/<name> checks the signature and a 5-minute
// window, dedups by id and routes; a bad signature is 401 and routes nothing.

const SECRET = 'a-shared-secret-of-enough-length';
let redis: TestRedis;
let gw: Gateway;
let receiver: Server;
let port: number;
/** What the receiving end got, and what it should answer next (status codes, consumed in order). */
const got: { headers: IncomingMessage['headers']; body: Buffer }[] = [];
const answers: number[] = [];

before(async () => {
  redis = await startTestRedis();
  port = await freePort();
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.statusCode = answers.shift() ?? 200;
      res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
  gw = await startTestGateway(redis.url, {
    webhooks: {
      crm: { url: `http://127.0.0.1:${port}/hook`, secret: SECRET, backoff: '100ms', maxAttempts: 4, inbound: { to: 'queue:crm.events' } },
    },
    permissions: [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }],
  });
});
after(async () => {
  await gw?.stop();
  await new Promise<void>((r) => receiver?.close(() => r()));
  await redis?.dispose();
});

test('webhook:<name> POSTs the body as JSON, signed, with the message id; the signature verifies', async () => {
  const before = got.length;
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'wh-1', body: { customer: 42 }, correlationId: 'c-1' } });
  assert.equal(r.status, 202);
  await waitFor(async () => got.length > before, 20_000, 'the POST');
  const call = got[before]!;
  assert.deepEqual(JSON.parse(call.body.toString()), { customer: 42 });
  assert.equal(call.headers['x-switchboard-id'], 'wh-1');
  assert.equal(call.headers['x-switchboard-correlation-id'], 'c-1');
  assert.equal(call.headers['x-switchboard-sender'], 'user:ops');
  const fields = { direction: 'outbound' as const, timestamp: call.headers['x-switchboard-timestamp'] as string, id: 'wh-1', correlationId: 'c-1', sender: 'user:ops' };
  assert.equal(verify(SECRET, fields, call.headers['x-switchboard-signature'] as string, call.body), undefined);
  assert.match(verify('another-secret-xxxxxxxx', fields, call.headers['x-switchboard-signature'] as string, call.body)!, /^signature does not match/);
});

test('a 5xx is retried with backoff until it succeeds; a 4xx dead-letters at once', async () => {
  const start = got.length;
  answers.push(503, 502);
  await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'wh-retry', body: 1 } });
  await waitFor(async () => got.length >= start + 3, 20_000, 'two failures then a success');
  assert.deepEqual(got.slice(start).map((g) => g.headers['x-switchboard-id']), ['wh-retry', 'wh-retry', 'wh-retry']);

  answers.push(422);
  await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'wh-bad', body: 2 } });
  const dlq = await waitFor(async () => {
    const d = await api(gw.url, 'GET', `/api/dlq/${enc('webhook:crm')}`, { user: 'ops' });
    return d.body.depth === 1 ? d.body : undefined;
  }, 20_000, 'the dead letter');
  assert.equal(dlq.messages[0].id, 'wh-bad');
  assert.match(dlq.messages[0].deadLetter.reason, /answered 422/);
  assert.equal(got.filter((g) => g.headers['x-switchboard-id'] === 'wh-bad').length, 1, 'a 4xx is not retried');
  const replay = await api(gw.url, 'POST', `/api/dlq/${enc('webhook:crm')}/replay`, { user: 'ops', body: {} });
  assert.deepEqual(replay.body, { replayed: 1 });
  await waitFor(async () => got.filter((g) => g.headers['x-switchboard-id'] === 'wh-bad').length === 2, 20_000, 'the replayed call');
});

test('the same message id is called once', async () => {
  const a = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'wh-dup', body: 1 } });
  const b = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'wh-dup', body: 1 } });
  assert.equal(a.body.duplicate, false);
  assert.equal(b.body.duplicate, true);
  await waitFor(async () => got.some((g) => g.headers['x-switchboard-id'] === 'wh-dup'), 20_000, 'the call');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(got.filter((g) => g.headers['x-switchboard-id'] === 'wh-dup').length, 1);
});

async function inbound(body: string, headers: Record<string, string>) {
  const res = await fetch(`${gw.url}/hooks/crm`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.status, body: await res.json() as any };
}

test('inbound: a signed request is routed once per id; bad, stale or missing signatures are 401 and route nothing', async () => {
  const body = JSON.stringify({ event: 'customer.updated', id: 7 });
  const ts = String(Math.floor(Date.now() / 1000));
  const signed = (secret: string, timestamp: string, id = 'in-1') => sign(secret, { direction: 'inbound', timestamp, id }, body);
  const good = { 'x-switchboard-id': 'in-1', 'x-switchboard-timestamp': ts, 'x-switchboard-signature': signed(SECRET, ts) };
  const depth = async () => (await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.events')}`, { user: 'ops' })).body.depth as number;
  const d0 = await depth();

  for (const [why, headers] of [
    ['wrong signature', { ...good, 'x-switchboard-signature': signed('not-the-secret-at-all', ts) }],
    ['no signature', { 'x-switchboard-id': 'in-1', 'x-switchboard-timestamp': ts }],
    ['stale', { ...good, 'x-switchboard-timestamp': String(Number(ts) - 600), 'x-switchboard-signature': signed(SECRET, String(Number(ts) - 600)) }],
  ] as const) {
    const r = await inbound(body, headers as Record<string, string>);
    assert.equal(r.status, 401, why);
    assert.equal(r.body.error.code, 'unauthenticated');
  }
  const tampered = await inbound(body.replace('7', '8'), good);
  assert.equal(tampered.status, 401, 'a changed body no longer matches its signature');
  assert.equal(await depth(), d0, 'nothing routed');

  const ok = await inbound(body, good);
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
  assert.deepEqual(ok.body, { id: 'in-1', duplicate: false });
  const again = await inbound(body, good);
  assert.deepEqual(again.body, { id: 'in-1', duplicate: true });
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.events')}`, { user: 'ops' });
  assert.equal(q.body.depth, d0 + 1);
  const m = q.body.messages.find((x: { id: string }) => x.id === 'in-1');
  assert.deepEqual(m.body, { event: 'customer.updated', id: 7 });
  assert.deepEqual(m.sender, { kind: 'webhook', name: 'crm' });

  // The signature covers the id: the same signed request replayed under another id is refused.
  const replayed = await inbound(body, { ...good, 'x-switchboard-id': 'in-1-again' });
  assert.equal(replayed.status, 401);
  assert.match(replayed.body.error.message, /signature does not match/);
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.events')}`, { user: 'ops' })).body.depth, d0 + 1);
  const noId = await inbound(body, { ...good, 'x-switchboard-id': '' });
  assert.equal(noId.status, 400);
  assert.match(noId.body.error.message, /X-Switchboard-Id/);
  const unknown = await fetch(`${gw.url}/hooks/nope`, { method: 'POST', body: '{}' });
  assert.equal(unknown.status, 404);
});

test('a webhook that is not in the config is refused by its transport, naming the ones that are; nothing is sent', async () => {
  const before = got.length;
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:billing', id: 'nowhere-1', body: { x: 1 } } });
  assert.equal(r.status, 400, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'unknown_target');
  assert.equal(r.body.error.message, "webhook:billing: no webhook named 'billing' in the config (configured: webhook:crm)");
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(got.length, before);
});
