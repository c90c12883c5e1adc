import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import rhea, { type Connection } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork, writeCrl } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Peer certificates checked against the network CA's CRL (issue 17.5): real openssl CRLs, real
// mutual TLS between gateways.

const PERMS = [
  { group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];
const A_ID = 'O=Bank A,L=London,C=GB';

let redis: TestRedis;
let net: Awaited<ReturnType<typeof testNetwork>>;
const gateways: Gateway[] = [];

before(async () => {
  redis = await startTestRedis();
  net = await testNetwork([{ alias: 'bank-a', identity: A_ID }, { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' }]);
});
after(async () => {
  for (const g of gateways.reverse()) await g.stop();
  await redis?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

async function gateway(prefix: string, self: string, peers: { alias: string; allow: string[]; port?: number }[], crl?: Record<string, unknown>, port?: number): Promise<Gateway> {
  const g = await startTestGateway(redis.url, { redis: { url: redis.url, prefix }, permissions: PERMS, network: networkConfig(net, self, peers, { ...(crl ? { crl } : {}), ...(port !== undefined ? { port } : {}), eventHorizon: '10m' }) });
  gateways.push(g);
  return g;
}

const depth = async (g: Gateway, address: string): Promise<number> => (await api(g.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' })).body.depth;
const send = async (g: Gateway, to: string, id: string) => assert.equal((await api(g.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id } } })).status, 202);
const revokedEntries = async (g: Gateway) => {
  const r = await api(g.url, 'GET', '/api/audit?action=peer.revoked&limit=100', { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries as { actor: string; detail?: string }[];
};

test('a peer revoked while connected is cut off within the refresh period, audited, and nothing more of it arrives until the CRL clears it; then what waited arrives once', async () => {
  const file = await writeCrl(net, [], join(net.dir, 'live.crl'));
  const b = await gateway('rev-b', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { mode: 'hard-fail', file, refresh: '500ms' });
  const a = await gateway('rev-a', 'bank-a', [{ alias: 'bank-b', allow: [] }]);
  await send(a, 'peer:bank-b/inbound.rev', 'before-1');
  await waitFor(async () => (await depth(b, 'queue:inbound.rev')) === 1, 30_000, 'the message before revocation at B');

  await writeCrl(net, ['bank-a'], file);
  const entries = (await waitFor(async () => { const e = await revokedEntries(b); return e.length > 0 ? e : undefined; }, 10_000, 'the open connection cut off and audited'))!;
  assert.equal(entries[0]!.actor, `peer:${A_ID}`);
  assert.match(entries[0]!.detail ?? '', /peer bank-a: certificate [0-9A-F]+ is revoked by the network CA/);

  await send(a, 'peer:bank-b/inbound.rev', 'after-1');
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await depth(b, 'queue:inbound.rev'), 1, 'nothing from the revoked peer after revocation');

  // The revocation is taken back: the peer's bridge, retrying all along, is let in again and what
  // waited in its outbox arrives, once.
  await writeCrl(net, [], file);
  await waitFor(async () => (await depth(b, 'queue:inbound.rev')) === 2, 90_000, 'after-1 at B once bank-a is no longer revoked');
  await new Promise((r) => setTimeout(r, 1500));
  const q = (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.rev')}`, { user: 'ops' })).body as { messages: { id: string }[] };
  assert.deepEqual(q.messages.map((m) => m.id).sort(), ['after-1', 'before-1']);
});

test('hard-fail without a readable CRL refuses every peer; soft-fail allows them and logs', async () => {
  const missing = join(net.dir, 'no-such.crl');
  const hard = await gateway('hard-b', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { mode: 'hard-fail', file: missing, refresh: '1s' }, 0);
  const soft = await gateway('soft-b', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { mode: 'soft-fail', file: missing, refresh: '1s' }, 0);
  const toHard = await gateway('to-hard', 'bank-a', [{ alias: 'bank-b', allow: [], port: hard.peerPort! }], undefined, 0);
  const toSoft = await gateway('to-soft', 'bank-a', [{ alias: 'bank-b', allow: [], port: soft.peerPort! }], undefined, 0);
  await send(toSoft, 'peer:bank-b/inbound.soft', 'soft-1');
  await waitFor(async () => (await depth(soft, 'queue:inbound.soft')) === 1, 30_000, 'delivered under soft-fail');
  await send(toHard, 'peer:bank-b/inbound.hard', 'hard-1');
  const entries = (await waitFor(async () => { const e = await revokedEntries(hard); return e.length > 0 ? e : undefined; }, 20_000, 'the refusal under hard-fail audited'))!;
  assert.match(entries[0]!.detail ?? '', /no valid CRL is loaded .*hard-fail/);
  assert.equal(await depth(hard, 'queue:inbound.hard'), 0);
});

test('the outbound bridge refuses a peer whose server certificate is revoked', async () => {
  const file = await writeCrl(net, ['bank-b'], join(net.dir, 'b-revoked.crl'));
  const b = await gateway('out-b', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], undefined, 0);
  const a = await gateway('out-a', 'bank-a', [{ alias: 'bank-b', allow: [], port: b.peerPort! }], { mode: 'hard-fail', file, refresh: '5m' }, 0);
  await send(a, 'peer:bank-b/inbound.out', 'out-1');
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await depth(b, 'queue:inbound.out'), 0, 'nothing sent to a revoked peer');
  const ready = await api(a.url, 'GET', '/metrics');
  assert.equal(ready.status, 200);
});

test('an open bridge to a peer revoked meanwhile is closed and audited once; it stays refused while revoked and reconnects once the CRL clears it, delivering what waited once', async () => {
  const file = await writeCrl(net, [], join(net.dir, 'bridge.crl'));
  const b = await gateway('br-b', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], undefined, 0);
  const a = await gateway('br-a', 'bank-a', [{ alias: 'bank-b', allow: [], port: b.peerPort! }], { mode: 'hard-fail', file, refresh: '500ms' }, 0);
  await send(a, 'peer:bank-b/inbound.br', 'br-1');
  await waitFor(async () => (await depth(b, 'queue:inbound.br')) === 1, 30_000, 'the first message at B over an open bridge');

  await writeCrl(net, ['bank-b'], file);
  const entries = (await waitFor(async () => { const e = await revokedEntries(a); return e.length > 0 ? e : undefined; }, 10_000, 'the outbound refusal audited at A'))!;
  assert.equal(entries[0]!.actor, 'peer:O=Bank B,L=Paris,C=FR');
  assert.match(entries[0]!.detail ?? '', /outbound bridge to bank-b (closed|refused): certificate [0-9A-F]+ is revoked by the network CA/);
  // While revoked: retries (with backoff) are refused, nothing arrives, and the trail is not flooded.
  await send(a, 'peer:bank-b/inbound.br', 'br-2');
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal(await depth(b, 'queue:inbound.br'), 1, 'nothing sent to the peer while its certificate is revoked');
  assert.equal((await revokedEntries(a)).length, 1, 'one audit entry for the refusal, not one per retry');

  // The CA takes the revocation back (a mistaken revocation, a hold lifted): the bridge comes back by itself.
  await writeCrl(net, [], file);
  await waitFor(async () => (await depth(b, 'queue:inbound.br')) === 2, 90_000, 'br-2 delivered once the CRL clears bank-b');
  await new Promise((r) => setTimeout(r, 1500));
  const q = (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.br')}`, { user: 'ops' })).body as { depth: number; messages: { id: string }[] };
  assert.deepEqual(q.messages.map((m) => m.id).sort(), ['br-1', 'br-2'], 'each once');
});

test('a revoked peer that connects again and again cannot flood the audit trail: at most 20 entries a minute from its address, the rest counted in one summary', { timeout: 180_000 }, async () => {
  const file = await writeCrl(net, ['bank-a'], join(net.dir, 'flood.crl'));
  const b = await gateway('rev-flood', 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { mode: 'hard-fail', file, refresh: '1m' }, 0);
  const a = net.nodes['bank-a']!;
  const started = Date.now();
  const attempts = 60;
  /** One connection with bank-a's genuine (revoked) certificate: how the listener ended it. */
  const attempt = (n: number) => new Promise<string>((resolve) => {
    const c: Connection = rhea.create_container({ id: `revoked-${n}` }).connect({
      host: '127.0.0.1', port: b.peerPort!, transport: 'tls', reconnect: false, username: 'anonymous',
      key: readFileSync(a.key), cert: readFileSync(a.cert), ca: readFileSync(net.ca), rejectUnauthorized: true,
    } as never);
    const t = setTimeout(() => { c.close(); resolve('no answer'); }, 10_000);
    c.on('error', () => {});
    c.on('connection_error', (ctx) => { clearTimeout(t); resolve(String((ctx.connection as unknown as { error?: { condition?: string } }).error?.condition)); });
    c.on('disconnected', () => { clearTimeout(t); resolve('disconnected'); });
  });
  const outcomes: string[] = [];
  for (let i = 0; i < attempts; i += 10) outcomes.push(...await Promise.all(Array.from({ length: 10 }, (_, j) => attempt(i + j))));
  assert.ok(outcomes.every((o) => o === 'amqp:unauthorized-access' || o === 'disconnected'), `every connection refused: ${[...new Set(outcomes)]}`);
  assert.ok(outcomes.includes('amqp:unauthorized-access'), 'refused with amqp:unauthorized-access, naming the reason');
  const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000) + 1;
  const written = await revokedEntries(b);
  assert.ok(written.length >= 1 && written.length <= 20 * minutes, `the first refusals are recorded, at most 20 a minute: ${written.length} over ${minutes} minute(s)`);
  assert.match(written[0]!.detail ?? '', /peer bank-a: certificate [0-9A-F]+ is revoked by the network CA/);
  // When the minute ends, one entry says how many were left out.
  const summarized = async () => {
    const r = await api(b.url, 'GET', '/api/audit?action=audit.suppressed&limit=100', { user: 'ops' });
    return (r.body.entries as { detail?: string }[]).filter((e) => /more peer\.revoked from/.test(e.detail ?? '')).reduce((n, e) => n + Number(/^(\d+) more/.exec(e.detail!)![1]), 0);
  };
  const refusedAtTheDoor = outcomes.filter((o) => o === 'amqp:unauthorized-access').length;
  await waitFor(async () => ((await revokedEntries(b)).length + (await summarized()) >= refusedAtTheDoor ? true : undefined), 75_000 + 60_000 * minutes, 'the summary of the suppressed refusals');
  assert.ok((await revokedEntries(b)).length + (await summarized()) >= refusedAtTheDoor, 'every refusal is an entry or counted in a summary');
});
