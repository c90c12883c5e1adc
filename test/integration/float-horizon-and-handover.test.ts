import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import rhea from 'rhea';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { spawnFloat, standaloneTunnel, type FloatProcess } from '../support/float.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// A float whose peer (Bank B) never comes up, with a short event horizon: what the float cannot
// deliver comes back to the gateway as a notice. And key handovers the float must refuse.

let redisA: TestRedis;
let redisF: TestRedis;
let float: FloatProcess;
let a: Gateway | undefined;
let net: Awaited<ReturnType<typeof testNetwork>>;
let tun: Awaited<ReturnType<typeof testNetwork>>;
let tunnelPort: number;
const FLOAT_SUBJECT = 'CN=float.dmz,O=Bank A';
const GATEWAY_SUBJECT = 'CN=gateway,O=Bank A';
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'admin'] }] }];

before(async () => {
  [redisA, redisF] = await Promise.all([startTestRedis(), startTestRedis()]);
  net = await testNetwork([{ alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' }, { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' }, { alias: 'mallory', identity: 'O=Mallory,L=Nowhere,C=XX' }]);
  tun = await testNetwork([{ alias: 'float', identity: FLOAT_SUBJECT }, { alias: 'gw', identity: GATEWAY_SUBJECT }]);
  tunnelPort = await freePort();
  const bNode = net.nodes['bank-b']!;
  float = await spawnFloat({
    redis: { url: redisF.url, prefix: 'float' },
    peers: { host: '127.0.0.1', port: net.nodes['bank-a']!.port },
    tunnel: { host: '127.0.0.1', port: tunnelPort, key: tun.nodes.float!.key, cert: tun.nodes.float!.cert, ca: tun.ca, gatewaySubject: GATEWAY_SUBJECT },
    // Bank B is in the map, but nothing listens at its port.
    network: { ca: net.ca, eventHorizon: '3s', peers: [{ alias: 'bank-b', identity: bNode.identity, host: '127.0.0.1', port: bNode.port, verifyKey: bNode.verifyKey }] },
  });
});

after(async () => {
  await a?.stop();
  await float?.dispose();
  await Promise.all([redisA, redisF].map((r) => r?.dispose()));
  for (const n of [net, tun]) if (n) rmSync(n.dir, { recursive: true, force: true });
});

const portOpen = (port: number) => new Promise<boolean>((resolve) => {
  const s = connect(port, '127.0.0.1');
  s.once('connect', () => { s.destroy(); resolve(true); });
  s.once('error', () => resolve(false));
});

test('the float refuses a peer key that is not for its certificate, or a certificate not from the network CA, and keeps its peer port closed', async () => {
  const base = { url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT };
  // Bank B's key with Bank A's certificate: the key does not belong to it.
  const mismatched = standaloneTunnel({ ...base, peerKey: net.nodes['bank-b']!.key, peerCert: net.nodes['bank-a']!.cert }, redisA.url);
  try {
    await waitFor(async () => /the key does not belong to the certificate/.test(mismatched.client.status.lastError ?? ''), 30_000, 'the mismatched key to be refused');
  } finally {
    await mismatched.close();
  }
  // A key and certificate that fit, but from the tunnel CA: not a peer-network identity.
  const foreign = standaloneTunnel({ ...base, peerKey: tun.nodes.gw!.key, peerCert: tun.nodes.gw!.cert }, redisA.url);
  try {
    await waitFor(async () => /not signed by the network CA/.test(foreign.client.status.lastError ?? ''), 30_000, 'the foreign certificate to be refused');
  } finally {
    await foreign.close();
  }
  assert.equal(await portOpen(net.nodes['bank-a']!.port), false, 'the peer listener is still closed');
  assert.doesNotMatch(float.output(), /peer key received/);
});

test('past the event horizon on the float: dead-lettered there, and the notice reaches the gateway\'s noticesTo', async () => {
  const { port: _listener, ...n } = networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }]);
  a = await startTestGateway(redisA.url, {
    permissions: PERMS,
    network: { ...n, eventHorizon: '1h', noticesTo: 'queue:notices', float: { url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT } },
  });
  await waitFor(async () => portOpen(net.nodes['bank-a']!.port), 30_000, 'the float to open its peer port');
  const r = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.late', id: 'late-1', body: { n: 1 } } });
  assert.equal(r.status, 202);
  const notices = await waitFor(async () => {
    const q = (await api(a!.url, 'GET', `/api/queues/${enc('queue:notices')}`, { user: 'ops' })).body;
    return q.depth >= 1 ? q : undefined;
  }, 90_000, 'the notice from the float');
  assert.equal(notices.depth, 1);
  const body = notices.messages[0].body;
  assert.equal(body.notice, 'undeliverable');
  assert.equal(body.id, 'late-1');
  assert.match(body.reason, /not delivered to peer bank-b within the event horizon/);
  // The gateway handed it over (nothing dead-lettered inside); the float kept the dead letter.
  assert.equal((await api(a.url, 'GET', `/api/dlq/${enc('peer:bank-b/inbound.late')}`, { user: 'ops' })).body.depth, 0);
});

test('a certificate from the network CA whose subject is not in the float\'s map is refused at the float and audited there', async () => {
  const m = net.nodes.mallory!;
  const condition = await new Promise<string>((resolve) => {
    const c = rhea.create_container({ id: 'mallory' }).connect({
      host: '127.0.0.1', port: net.nodes['bank-a']!.port, transport: 'tls', key: readFileSync(m.key), cert: readFileSync(m.cert), ca: readFileSync(net.ca), rejectUnauthorized: false, username: 'anonymous', reconnect: false,
    } as never);
    c.on('connection_close', (ctx) => resolve(String((ctx.connection.error as { condition?: string } | undefined)?.condition ?? 'closed')));
    c.on('connection_error', (ctx) => resolve(String((ctx.connection.error as { condition?: string } | undefined)?.condition ?? 'error')));
    c.on('disconnected', () => resolve('disconnected'));
    c.on('error', () => {});
  });
  assert.equal(condition, 'amqp:unauthorized-access');
  const fr = new Redis(redisF.url);
  try {
    const audit = (await fr.xrange('float:audit', '-', '+')).map(([, f]) => f[1]!).join('\n');
    assert.match(audit, /peer\.refused.*O=Mallory/);
  } finally {
    fr.disconnect();
  }
});
