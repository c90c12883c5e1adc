import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { sign } from '../../src/network/webhook-signature.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 13.6: inbound and outbound webhook signatures cannot be confused. Both directions share
// one secret, so the direction is in the signed string, and so is everything a request routes
// (id, correlation id, subject, sender): a delivery Switchboard made, captured at the receiver
// and played back into Switchboard's own inbound hook, is refused 401 with the reason, audited,
// and routes nothing; a signed inbound request whose id or correlation id is changed is refused.

const SECRET = 'one-secret-for-both-directions';
let redis: TestRedis;
let gw: Gateway;
let receiver: Server;
const got: { headers: IncomingMessage['headers']; body: Buffer }[] = [];

before(async () => {
  redis = await startTestRedis();
  const port = await freePort();
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
  gw = await startTestGateway(redis.url, {
    webhooks: { crm: { url: `http://127.0.0.1:${port}/hook`, secret: SECRET, backoff: '100ms', inbound: { to: 'queue:crm.in' } } },
    permissions: [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }, { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] }],
  });
});
after(async () => {
  await gw?.stop();
  await new Promise<void>((r) => receiver?.close(() => r()));
  await redis?.dispose();
});

const depth = async () => (await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.in')}`, { user: 'ops' })).body.depth as number;
const post = async (body: Buffer | string, headers: Record<string, string>) => {
  const res = await fetch(`${gw.url}/hooks/crm`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.status, body: (await res.json()) as any };
};

test('an outbound delivery captured at the receiver and replayed to the inbound hook is refused 401, audited, and routes nothing', async () => {
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', id: 'out-1', body: { pay: 100 }, correlationId: 'corr-1' } });
  assert.equal(sent.status, 202);
  const call = (await waitFor(async () => got.find((g) => g.headers['x-switchboard-id'] === 'out-1'), 20_000, 'the outbound POST'))!;
  const d0 = await depth();

  // Every header the receiver saw, byte for byte, with the same body, inside the time window.
  const replayHeaders: Record<string, string> = {};
  for (const [k, v] of Object.entries(call.headers)) if (k.startsWith('x-switchboard-') && typeof v === 'string') replayHeaders[k] = v;
  const replay = await post(call.body, replayHeaders);
  assert.equal(replay.status, 401, JSON.stringify(replay.body));
  assert.equal(replay.body.error.code, 'unauthenticated');
  assert.match(replay.body.error.message, /made for the outbound direction/);
  assert.equal(await depth(), d0, 'nothing routed');

  const audit = await api(gw.url, 'GET', '/api/audit?action=webhook.refused&limit=10', { user: 'ops' });
  assert.equal(audit.status, 200);
  assert.ok(audit.body.entries.some((e: { actor: string; detail: string }) => e.actor === 'webhook:crm' && /outbound direction/.test(e.detail)), JSON.stringify(audit.body.entries));
});

test('the signature covers the id, the correlation id and the subject: changing any of them is 401', async () => {
  const body = JSON.stringify({ event: 'paid', n: 1 });
  const ts = String(Math.floor(Date.now() / 1000));
  const fields = { direction: 'inbound' as const, timestamp: ts, id: 'in-sig-1', correlationId: 'corr-in', subject: 'payment' };
  const good = {
    'x-switchboard-id': fields.id,
    'x-switchboard-timestamp': ts,
    'x-switchboard-correlation-id': fields.correlationId,
    'x-switchboard-subject': fields.subject,
    'x-switchboard-signature': sign(SECRET, fields, body),
  };
  const d0 = await depth();
  for (const [why, headers] of [
    ['another id', { ...good, 'x-switchboard-id': 'in-sig-2' }],
    ['another correlation id', { ...good, 'x-switchboard-correlation-id': 'corr-other' }],
    ['no correlation id', Object.fromEntries(Object.entries(good).filter(([k]) => k !== 'x-switchboard-correlation-id'))],
    ['another subject', { ...good, 'x-switchboard-subject': 'refund' }],
    ['an added sender claim', { ...good, 'x-switchboard-sender': 'user:admin' }],
  ] as const) {
    const r = await post(body, headers as Record<string, string>);
    assert.equal(r.status, 401, why);
    assert.match(r.body.error.message, /signature does not match/, why);
  }
  assert.equal(await depth(), d0, 'nothing routed');

  const ok = await post(body, good);
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.in')}`, { user: 'ops' });
  const m = q.body.messages.find((x: { id: string }) => x.id === 'in-sig-1');
  assert.equal(m.correlationId, 'corr-in');
  assert.equal(m.subject, 'payment');
});
