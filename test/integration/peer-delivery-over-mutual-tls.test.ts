import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork, type TestNode } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Two gateways (Bank A and Bank B) on their own Redis, talking over AMQP 1.0 with mutual TLS,
// identity-checked certificates and Ed25519-signed envelopes.

let redisA: TestRedis;
let redisB: TestRedis;
let a: Gateway;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }];

before(async () => {
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
    { alias: 'mallory', identity: 'O=Mallory,L=Nowhere,C=XX' },
  ]);
  a = await startTestGateway(redisA.url, { permissions: PERMS, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: ['queue:from-b.**'] }], { eventHorizon: '3s' }) });
  b = await startTestGateway(redisB.url, { permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**', 'flow:confirm-trade'] }]) });
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

const depth = async (gw: Gateway, address: string) => (await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' })).body;

test('peer:<alias>/<queue> delivers to the peer, stamped with our identity as sender, once per id', async () => {
  for (const id of ['t-1', 't-1', 't-2']) {
    const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.trades', id, body: { trade: id } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }
  const q = await waitFor(async () => { const d = await depth(b, 'queue:inbound.trades'); return d.depth === 2 ? d : undefined; }, 30_000, 'two trades at bank B');
  const m = q.messages.find((x: { id: string }) => x.id === 't-1');
  assert.deepEqual(m.sender, { kind: 'peer', name: 'O=Bank A,L=London,C=GB', alias: 'bank-a' });
  assert.deepEqual(m.body, { trade: 't-1' });
  assert.equal(m.headers['switchboard-claimed-sender'], 'user:ops');
});

test('a peer may send only where the map allows: elsewhere the message is refused and dead-lettered at the sender with a notice', async () => {
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/private.ledger', id: 'not-allowed', body: 1 } });
  assert.equal(r.status, 202);
  const dl = await waitFor(async () => { const d = (await api(a.url, 'GET', `/api/dlq/${enc('peer:bank-b/private.ledger')}`, { user: 'ops' })).body; return d.depth === 1 ? d : undefined; }, 30_000, 'the dead letter at A');
  assert.match(dl.messages[0].deadLetter.reason, /may not send on queue:private.ledger/);
  assert.equal((await depth(b, 'queue:private.ledger')).depth, 0);
});

test('an offline peer: messages wait in the outbox and arrive when it is back; past the event horizon they are dead-lettered', async () => {
  // B sends to A while A is not listening at the address B has for it (wrong port in a third gateway's map is simpler:
  // here A's listener is up, so use a peer alias pointing to a closed port).
  const c = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'offline' }, permissions: PERMS, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [], port: 1 }], { eventHorizon: '2s', port: 0 }) });
  try {
    const r = await api(c.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.late', id: 'late-1', body: 1 } });
    assert.equal(r.status, 202);
    const dl = await waitFor(async () => { const d = (await api(c.url, 'GET', `/api/dlq/${enc('peer:bank-b/inbound.late')}`, { user: 'ops' })).body; return d.depth === 1 ? d : undefined; }, 30_000, 'dead-lettered past the horizon');
    assert.match(dl.messages[0].deadLetter.reason, /event horizon/);
    const ready = await (await fetch(`${c.url}/readyz`)).json() as { checks: Record<string, { detail?: string }> };
    assert.match(ready.checks['endpoint:peer']!.detail ?? '', /bank-b: /);
  } finally {
    await c.stop();
  }
});

test('a certificate from the network CA that is not in the map is refused at connect; so is a server whose certificate names another identity', async () => {
  // Mallory has a valid certificate from the same CA but is in nobody's map.
  const m = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'mallory' }, permissions: PERMS, network: networkConfig(net, 'mallory', [{ alias: 'bank-b', allow: [] }], { eventHorizon: '2s' }) });
  try {
    await api(m.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.trades', id: 'from-mallory', body: 1 } });
    await waitFor(async () => (await api(m.url, 'GET', `/api/dlq/${enc('peer:bank-b/inbound.trades')}`, { user: 'ops' })).body.depth === 1, 30_000, "mallory's message to give up");
    assert.ok(!(await depth(b, 'queue:inbound.trades')).messages.some((x: { id: string }) => x.id === 'from-mallory'));
  } finally {
    await m.stop();
  }
  // A gateway whose map says bank-b is at mallory's port: the server certificate names Mallory, not Bank B.
  const impostor = await startTestGateway(redisB.url, { redis: { url: redisB.url, prefix: 'impostor' }, permissions: PERMS, network: networkConfig(net, 'mallory', [{ alias: 'bank-a', allow: ['queue:**'] }], { port: 0 }) });
  const c = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'checks' }, permissions: PERMS, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [], port: impostor.peerPort! }], { eventHorizon: '2s', port: 0 }) });
  try {
    await api(c.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/x', id: 'to-impostor', body: 1 } });
    await waitFor(async () => (await api(c.url, 'GET', `/api/dlq/${enc('peer:bank-b/x')}`, { user: 'ops' })).body.depth === 1, 30_000, 'the message to give up');
    assert.equal((await depth(impostor, 'queue:x')).depth, 0, 'nothing reached the impostor');
  } finally {
    await c.stop();
    await impostor.stop();
  }
});
