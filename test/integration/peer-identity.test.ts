import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Who a peer is (its network identity, with the local alias beside it) and one gateway per
// Redis keyspace (issue 17.7).

const A_ID = 'O=Bank A,L=London,C=GB';
const B_ID = 'O=Bank B,L=Paris,C=FR';
const PERMS = [
  { group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

let redisA: TestRedis;
let redisB: TestRedis;
let a: Gateway;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;

before(async () => {
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  net = await testNetwork([{ alias: 'bank-a', identity: A_ID }, { alias: 'bank-b', identity: B_ID }]);
  a = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'bank-a' }, permissions: PERMS, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }]) });
  b = await startTestGateway(redisB.url, { redis: { url: redisB.url, prefix: 'bank-b' }, permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }]) });
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

test('the sender a local consumer sees is the peer organisation, with its local alias beside it', async () => {
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.who', id: 'who-1', body: { n: 1 } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const q = await waitFor(async () => {
    const d = (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.who')}`, { user: 'ops' })).body;
    return d.depth === 1 ? d : undefined;
  }, 30_000, 'the message at bank B');
  assert.deepEqual(q.messages[0].sender, { kind: 'peer', name: A_ID, alias: 'bank-a' });
  const got = await api(b.url, 'POST', `/api/queues/${enc('queue:inbound.who')}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 30 } });
  assert.equal(got.status, 200, JSON.stringify(got.body));
  assert.deepEqual(got.body.messages[0].sender, { kind: 'peer', name: A_ID, alias: 'bank-a' });
});

test('a refused peer message is audited under the organisation, the alias beside it', async () => {
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/private.books', id: 'who-2', body: 1 } });
  assert.equal(r.status, 202);
  const entries = (await waitFor(async () => {
    const res = await api(b.url, 'GET', '/api/audit?action=access.denied&limit=100', { user: 'ops' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const list = (res.body.entries as { actor: string; target?: string; detail?: string }[]).filter((e) => e.target === 'queue:private.books');
    return list.length > 0 ? list : undefined;
  }, 30_000, 'the denial in bank B audit'))!;
  assert.equal(entries[0]!.actor, `peer:${A_ID}`);
  assert.match(entries[0]!.detail ?? '', /peer alias bank-a/);
});

test('a gateway with another identity on the same Redis URL and prefix refuses to start, saying what to change', async () => {
  await assert.rejects(
    startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'bank-a' }, permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: [] }], { port: 0 }) }),
    (err: Error) => {
      assert.match(err.message, /this Redis keyspace \(url redis:\/\/[^,]+, prefix bank-a\) belongs to the gateway 'O=Bank A,L=London,C=GB'/);
      assert.match(err.message, /give this gateway its own redis\.prefix or its own Redis/);
      return true;
    },
  );
  // A gateway without a network may not share it either.
  await assert.rejects(startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'bank-a' }, permissions: PERMS }), /belongs to the gateway 'O=Bank A/);
});

test('a second process of the same gateway shares the keyspace', async () => {
  const second = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: 'bank-a' }, permissions: PERMS, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }], { port: 0 }) });
  try {
    const r = await api(second.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:shared.q', id: 's-1', body: 1 } });
    assert.equal(r.status, 202);
    assert.equal((await api(a.url, 'GET', `/api/queues/${enc('queue:shared.q')}`, { user: 'ops' })).body.depth, 1);
  } finally {
    await second.stop();
  }
});
