/**
 * Peer lifecycle events (issue 18.1): a peer's bridge up and down, a message the peer refused
 * (undeliverable, dead-lettered at the sender), and an event sent on to the peer itself
 * (`peer:<alias>/…`), where the peer door lets a gateway's own switchboard.* events in under the
 * sending gateway's identity. Two gateways with mutual TLS and signed envelopes, real Redis each.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redisA: TestRedis;
let redisB: TestRedis;
let a: Gateway;
let b: Gateway | undefined;
let net: Awaited<ReturnType<typeof testNetwork>>;
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }];
const A_IDENTITY = 'O=Bank A,L=London,C=GB';

before(async () => {
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  net = await testNetwork([
    { alias: 'bank-a', identity: A_IDENTITY },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  b = await startTestGateway(redisB.url, { permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**', 'queue:ops.events'] }]) });
  a = await startTestGateway(redisA.url, {
    permissions: PERMS,
    network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }], { eventHorizon: '1h' }),
    events: [
      { types: ['switchboard.peer.*', 'switchboard.message.dead-lettered'], to: 'queue:ops.peer' },
      { types: ['switchboard.peer.up'], to: 'peer:bank-b/ops.events' },
    ],
  });
});
after(async () => {
  await a?.stop();
  await b?.stop();
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

async function events(gw: Gateway, address: string): Promise<any[]> {
  return (await api(gw.url, 'GET', `/api/queues/${enc(address)}?limit=100`, { user: 'ops' })).body.messages ?? [];
}

const ofType = (ms: any[], type: string) => ms.filter((m) => m.body?.type === type);

test('the bridge coming up is an event at A, and the same event sent on to the peer arrives there under A\'s identity', { timeout: 60_000 }, async () => {
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.trades', id: 't-1', body: { trade: 1 } } });
  assert.equal(r.status, 202);
  const up = await waitFor(async () => ofType(await events(a, 'queue:ops.peer'), 'switchboard.peer.up')[0], 30_000, 'peer.up at A');
  assert.equal(up.body.subject, 'peer:bank-b');
  assert.deepEqual(up.body.data, { alias: 'bank-b' });
  assert.equal(up.body.source, `urn:switchboard:${encodeURIComponent(A_IDENTITY)}`);
  const there = await waitFor(async () => ofType(await events(b!, 'queue:ops.events'), 'switchboard.peer.up')[0], 30_000, 'peer.up forwarded to B');
  assert.equal(there.id, up.id, 'the event keeps its id across the hop');
  assert.equal(there.contentType, 'application/cloudevents+json');
  assert.deepEqual(there.sender, { kind: 'peer', name: A_IDENTITY, alias: 'bank-a' });
  assert.equal(there.body.source, up.body.source);
});

test('a message the peer refuses is undeliverable: both events at A name the address, the id and the reason', { timeout: 60_000 }, async () => {
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/private.ledger', id: 'not-allowed', body: 1 } });
  assert.equal(r.status, 202);
  const ms: any[] = await waitFor(async (): Promise<any[] | undefined> => {
    const all = await events(a, 'queue:ops.peer');
    return ofType(all, 'switchboard.peer.undeliverable').length > 0 && ofType(all, 'switchboard.message.dead-lettered').length > 0 ? all : undefined;
  }, 30_000, 'undeliverable and dead-lettered') as any[];
  const u = ofType(ms, 'switchboard.peer.undeliverable')[0].body;
  assert.equal(u.subject, 'peer:bank-b/private.ledger');
  assert.equal(u.data.alias, 'bank-b');
  assert.equal(u.data.messageId, 'not-allowed');
  assert.match(u.data.reason, /may not send on queue:private.ledger/);
  const d = ofType(ms, 'switchboard.message.dead-lettered')[0].body;
  assert.equal(d.data.transport, 'peer');
  assert.equal(d.data.address, 'peer:bank-b/private.ledger');
});

test('the peer going away is a down event at A', { timeout: 60_000 }, async () => {
  await b!.stop();
  b = undefined;
  const down = await waitFor(async () => ofType(await events(a, 'queue:ops.peer'), 'switchboard.peer.down')[0], 45_000, 'peer.down at A');
  assert.equal(down.body.subject, 'peer:bank-b');
  assert.equal(down.body.data.alias, 'bank-b');
  assert.notEqual(down.body.data.state, 'open');
});
