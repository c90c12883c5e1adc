// The router's one pipeline, tried as an attacker would at the HTTP doors: every refusal names
// what was refused, lands in the audit trail, and changes nothing (DESIGN §5, issue: trust boundary).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { sign } from '../../src/network/webhook-signature.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis;
let gw: Gateway;
const HOOK_SECRET = 'inbound-secret-0123456789';

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    webhooks: { crm: { secret: HOOK_SECRET, inbound: { to: 'queue:crm.events' } } },
  });
});

after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

async function depth(address: string): Promise<number> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.depth as number;
}

async function denials(actor: string): Promise<{ action: string; actor: string; target?: string; detail?: string }[]> {
  const r = await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc(actor)}&limit=100`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
}

test('a clerk without send on a queue is refused at the pipeline: 403 naming it, audited, the queue unchanged', async () => {
  const before = await depth('queue:payments.execute');
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:payments.execute', body: { amount: 1e6 } } });
  assert.equal(r.status, 403);
  assert.equal(r.body.error.code, 'forbidden');
  assert.match(r.body.error.message, /user:clerk may not send on queue:payments\.execute/);
  assert.equal(await depth('queue:payments.execute'), before);
  const audited = await waitFor(async () => (await denials('user:clerk')).find((e) => e.target === 'queue:payments.execute'), 5000, 'the denial in the audit trail');
  assert.match(audited!.detail ?? '', /http door/);
});

test('a reply address the sender may not send to is refused: a flow result or decision cannot be steered there', async () => {
  const before = await depth('queue:in.orders');
  // clerk may send to queue:in.* but not to queue:payments.*: asking for replies there is sending there.
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.orders', replyTo: 'queue:payments.execute', body: 1 } });
  assert.equal(r.status, 403, JSON.stringify(r.body));
  assert.match(r.body.error.message, /may not ask for replies at queue:payments\.execute/);
  assert.equal(await depth('queue:in.orders'), before, 'nothing was enqueued');
  await waitFor(async () => (await denials('user:clerk')).some((e) => e.target === 'queue:in.orders' && /replies/.test(e.detail ?? '')), 5000, 'the audit entry');
  // A reply address the clerk may send to is fine.
  const ok = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.orders', replyTo: 'queue:in.replies', body: 1 } });
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
});

test("reserved switchboard-* headers from a client are kept only as switchboard-claimed-*", async () => {
  const r = await api(gw.url, 'POST', '/api/messages', {
    user: 'ops',
    body: { to: 'queue:hdr.test', id: 'hdr-1', headers: { 'switchboard-task': 'ask', 'Switchboard-Sender': 'user:ceo', 'switchboard-claimed-x': 'kept', plain: 'yes' }, body: 1 },
  });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:hdr.test')}`, { user: 'ops' });
  const m = q.body.messages.find((x: { id: string }) => x.id === 'hdr-1');
  assert.deepEqual(m.headers, { 'switchboard-claimed-task': 'ask', 'switchboard-claimed-sender': 'user:ceo', 'switchboard-claimed-x': 'kept', plain: 'yes' });
  assert.deepEqual(m.sender, { kind: 'user', name: 'ops' });
});

test('starting a flow needs start on it, decided by the pipeline for POST /api/flows and POST /api/messages alike', async () => {
  // No flow is deployed in this gateway, so the refusal must come before any lookup of the flow.
  const viaMessages = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'flow:payment-approval', body: {} } });
  assert.equal(viaMessages.status, 403, JSON.stringify(viaMessages.body));
  assert.match(viaMessages.body.error.message, /user:clerk may not start on flow:payment-approval/);
});

test('an inbound webhook acts as webhook:<name>, with exactly the right its config gives it', async () => {
  const body = JSON.stringify({ event: 'x' });
  const ts = String(Math.floor(Date.now() / 1000));
  const sig = sign(HOOK_SECRET, { direction: 'inbound', timestamp: ts, id: 'hook-1', sender: 'user:ceo' }, body);
  const r = await fetch(`${gw.url}/hooks/crm`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-switchboard-id': 'hook-1', 'x-switchboard-timestamp': ts, 'x-switchboard-signature': sig, 'x-switchboard-sender': 'user:ceo' } });
  assert.equal(r.status, 202, await r.text());
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.events')}`, { user: 'ops' });
  const m = q.body.messages.find((x: { id: string }) => x.id === 'hook-1');
  assert.deepEqual(m.sender, { kind: 'webhook', name: 'crm' });
  assert.equal(m.headers['switchboard-claimed-sender'], 'user:ceo', "the caller's claim is kept, demoted");
});

test('JSON nested deeper than the limit is a 400 naming the limit, never a 500, and nothing is sent', async () => {
  const before = await depth('queue:deep.in');
  const deep = '['.repeat(100_000) + ']'.repeat(100_000);
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', rawBody: `{"to":"queue:deep.in","body":${deep}}` });
  assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 200));
  assert.equal(r.body.error.code, 'too_deep');
  assert.match(r.body.error.message, /nested more than 32 levels/);
  assert.equal(await depth('queue:deep.in'), before);
});
