import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import rhea from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { readFileSync } from 'node:fs';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, drain, sendAll } from '../support/counting-sink.ts';
import { spawnFloat, standaloneTunnel, type FloatProcess } from '../support/float.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Bank A runs its gateway inside and a float in the DMZ; Bank B is a peer that connects to the
// float exactly as to a gateway. Real processes (the float is `switchboard float`, killed with -9),
// real Redis for each of the three, real certificates from two CAs: the peer network's and the
// tunnel's.

let redisA: TestRedis;
let redisB: TestRedis;
let redisF: TestRedis;
let float: FloatProcess;
let floatRedis: Redis;
let a: Gateway | undefined;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
let tun: Awaited<ReturnType<typeof testNetwork>>;
let tunnelPort: number;
const PREFIX_A = 'bank-a-inside';
const FLOAT_SUBJECT = 'CN=float.dmz,O=Bank A';
const GATEWAY_SUBJECT = 'CN=gateway,O=Bank A';
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'admin'] }] }];

function startA(): Promise<Gateway> {
  const { port: _listener, ...n } = networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: ['queue:from-b.**'] }]);
  return startTestGateway(redisA.url, {
    redis: { url: redisA.url, prefix: PREFIX_A },
    permissions: PERMS,
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s', limits: [{ address: 'queue:from-b.limited', maxDepth: 5 }] },
    network: { ...n, float: { url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT, credit: 2 } },
  });
}

const floatKeys = { ready: 'float:{float-in}:ready', taken: 'float:{float-in}:taken', data: 'float:{float-in}:data', refused: 'float:{float-in}:refused' };
const waitingOnFloat = async () => (await floatRedis.llen(floatKeys.ready)) + (await floatRedis.llen(floatKeys.taken));
const depth = async (gw: Gateway, address: string): Promise<number> => (await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' })).body.depth;
const ids = (stem: string, n: number) => Array.from({ length: n }, (_, i) => `${stem}-${i + 1}`);

/** Receives from `address` at `gw` until every id was counted (or the time is up), then checks each once. */
async function expectExactlyOnce(gw: Gateway, address: string, expected: string[], what: string): Promise<void> {
  const counts = new Map<string, number>();
  await waitFor(async () => { await drain(gw.url, address, counts); return expected.every((id) => counts.has(id)); }, 120_000, what).catch(() => undefined);
  // A little longer: a duplicate would arrive now.
  await new Promise((r) => setTimeout(r, 1500));
  await drain(gw.url, address, counts);
  assertExactlyOnce(expected, counts, ` (${what})`);
}

before(async () => {
  [redisA, redisB, redisF] = await Promise.all([startTestRedis(), startTestRedis(), startTestRedis()]);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  // The tunnel has its own CA: a peer-network certificate is no way into the tunnel, and back.
  tun = await testNetwork([
    { alias: 'float', identity: FLOAT_SUBJECT },
    { alias: 'gw', identity: GATEWAY_SUBJECT },
    { alias: 'rogue', identity: 'CN=rogue,O=Bank A' },
  ]);
  tunnelPort = await freePort();
  const bNode = net.nodes['bank-b']!;
  float = await spawnFloat({
    redis: { url: redisF.url, prefix: 'float' },
    log: { level: 'info' },
    peers: { host: '127.0.0.1', port: net.nodes['bank-a']!.port },
    tunnel: { host: '127.0.0.1', port: tunnelPort, key: tun.nodes.float!.key, cert: tun.nodes.float!.cert, ca: tun.ca, gatewaySubject: GATEWAY_SUBJECT },
    network: { ca: net.ca, eventHorizon: '1h', peers: [{ alias: 'bank-b', identity: bNode.identity, host: '127.0.0.1', port: bNode.port, verifyKey: bNode.verifyKey }] },
  });
  floatRedis = new Redis(redisF.url);
  // Bank B's map has Bank A at the float's address: B cannot tell a float from a gateway.
  b = await startTestGateway(redisB.url, { permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { eventHorizon: '1h' }) });
});

after(async () => {
  await a?.stop();
  await b?.stop();
  floatRedis?.disconnect();
  await float?.dispose();
  await Promise.all([redisA, redisB, redisF].map((r) => r?.dispose()));
  for (const n of [net, tun]) if (n) rmSync(n.dir, { recursive: true, force: true });
});

test('before its gateway has connected, the float does not accept peers: its peer port is closed and its log says why', async () => {
  const refused = await new Promise<string>((resolve) => {
    const s = connect(net.nodes['bank-a']!.port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve('connected'); });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  assert.equal(refused, 'ECONNREFUSED');
  assert.match(float.output(), /the peer listener opens once the gateway has connected and handed over its peer key/);
});

test('the tunnel checks the expected subject on both sides: the float refuses (and audits) a client that is not its gateway; the gateway refuses a server that is not its float', async () => {
  const files = { url: `amqps://127.0.0.1:${tunnelPort}`, ca: tun.ca, peerKey: net.nodes['bank-b']!.key, peerCert: net.nodes['bank-b']!.cert };
  // A certificate from the tunnel CA, but not the gateway's subject: it must not hand over a key.
  const { client: rogue, close: closeRogue } = standaloneTunnel({ ...files, key: tun.nodes.rogue!.key, cert: tun.nodes.rogue!.cert, floatSubject: FLOAT_SUBJECT }, redisA.url);
  // The real gateway's certificate, but a float expected under another subject.
  const { client: wrongFloat, close: closeWrongFloat } = standaloneTunnel({ ...files, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, floatSubject: 'CN=other-float,O=Bank A' }, redisA.url);
  try {
    await waitFor(async () => /not this float's gateway|unauthorized/.test(rogue.status.lastError ?? ''), 30_000, 'the rogue tunnel to be refused');
    await waitFor(async () => /presented a certificate for 'CN=float.dmz,O=Bank A', expected 'CN=other-float,O=Bank A'/.test(wrongFloat.status.lastError ?? ''), 30_000, 'the gateway to refuse a float with another subject');
    assert.equal(rogue.status.state, 'down');
    assert.equal(wrongFloat.status.state, 'down');
    // No key was handed over: the peer port is still closed.
    assert.doesNotMatch(float.output(), /peer key received/);
    const audit = (await floatRedis.xrange('float:audit', '-', '+')).map(([, f]) => f[1]!).join('\n');
    assert.match(audit, /float\.refused.*CN=rogue/);
  } finally {
    await closeRogue();
    await closeWrongFloat();
  }
});

test('through the float: B → A and A → B, every message once at the far side; the peer key is handed over and never written in the DMZ', async () => {
  a = await startA();
  await waitFor(async () => /peer key received from the gateway/.test(float.output()), 30_000, 'the gateway to hand over its key');
  const inbound = ids('b', 20);
  await sendAll(b.url, 'peer:bank-a/from-b.trades', inbound);
  // B sends one again: deduplicated (at the float, and again inside).
  assert.equal((await api(b.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-a/from-b.trades', id: 'b-1', body: { again: true } } })).status, 202);
  const outbound = ids('a', 20);
  await sendAll(a.url, 'peer:bank-b/inbound.trades', outbound);
  await expectExactlyOnce(a, 'queue:from-b.trades', inbound, 'B → float → A');
  await expectExactlyOnce(b, 'queue:inbound.trades', outbound, 'A → float → B');
  // The peer key is nowhere in the float's Redis (nor in its config: it has no key path for it).
  const keyPem = readFileSync(net.nodes['bank-a']!.key, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----')).join('');
  const dump = (await floatRedis.keys('*')).join('\n');
  for (const k of await floatRedis.keys('*')) {
    const type = await floatRedis.type(k);
    const text = type === 'string' ? await floatRedis.get(k) : type === 'hash' ? JSON.stringify(await floatRedis.hgetall(k)) : type === 'list' ? JSON.stringify(await floatRedis.lrange(k, 0, -1)) : '';
    assert.ok(!String(text).includes(keyPem.slice(0, 40)), `the peer key was found in the float's Redis under ${k}`);
  }
  assert.ok(dump.length > 0);
  assert.doesNotMatch(readFileSync(float.configFile, 'utf8'), /bank-a\.key/);
});

test('gateway down: inbound messages wait on the float; a body the float alters is refused inside and audited, the rest arrive once', async () => {
  await a!.stop();
  a = undefined;
  const sent = ids('g', 10);
  await sendAll(b.url, 'peer:bank-a/from-b.down', sent);
  await waitFor(async () => (await floatRedis.llen(floatKeys.ready)) === 10, 60_000, 'ten messages waiting on the float').catch(async (err) => { throw new Error(`${(err as Error).message}: ready ${await floatRedis.llen(floatKeys.ready)}, taken ${await floatRedis.llen(floatKeys.taken)}; float log: ${float.output().slice(-3000)}`); });
  // A compromised float changes one stored message (the bytes the peer sent).
  const entries = await floatRedis.hgetall(floatKeys.data);
  const [victimId, victimRaw] = Object.entries(entries).find(([, v]) => JSON.parse(v).id === 'g-3')!;
  const victim = JSON.parse(victimRaw);
  const decoded = rhea.message.decode(Buffer.from(victim.bytes, 'base64')) as Record<string, unknown>;
  decoded.body = rhea.message.data_section(Buffer.from(JSON.stringify({ id: 'g-3', amount: 1_000_000 })));
  victim.bytes = (rhea.message.encode(decoded as never) as Buffer).toString('base64');
  await floatRedis.hset(floatKeys.data, victimId, JSON.stringify(victim));
  // Kept to offer again later, as a float that crashed before recording the acknowledgement would
  // (or one that replays on purpose).
  const replay = Object.values(entries).find((v) => JSON.parse(v).id === 'g-5')!;

  a = await startA();
  await expectExactlyOnce(a, 'queue:from-b.down', sent.filter((id) => id !== 'g-3'), 'after the gateway came back');
  const audit = (await api(a.url, 'GET', '/api/audit?action=peer.forged', { user: 'ops' })).body.entries as { detail: string; actor: string }[];
  assert.ok(audit.some((e) => /message g-3: the signature of bank-b/.test(e.detail) && e.actor === 'peer:O=Bank B,L=Paris,C=FR'), JSON.stringify(audit));
  const refused = await floatRedis.hgetall(floatKeys.refused);
  assert.match(Object.values(refused).join('\n'), /does not carry a valid signature/);
  assert.equal(await waitingOnFloat(), 0);
  // The same message offered again across the hop: accepted by the gateway, not delivered twice.
  await floatRedis.hset(floatKeys.data, 'replayed-g-5', replay);
  await floatRedis.rpush(floatKeys.ready, 'replayed-g-5');
  await waitFor(async () => (await waitingOnFloat()) === 0 && !(await floatRedis.hexists(floatKeys.data, 'replayed-g-5')), 30_000, 'the replayed entry to be acknowledged');
  assert.equal(await depth(a, 'queue:from-b.down'), 0, 'g-5 was not delivered a second time');
  assert.equal(Object.keys(await floatRedis.hgetall(floatKeys.refused)).length, 1, 'a replay is accepted as a duplicate, not refused');
});

test('float killed (-9): outbound waits inside, inbound waits at the peer; after the restart every message arrives once', async () => {
  await float.kill('SIGKILL');
  const toB = ids('k', 10);
  const toA = ids('j', 10);
  await sendAll(a!.url, 'peer:bank-b/inbound.killed', toB);
  await sendAll(b.url, 'peer:bank-a/from-b.killed', toA);
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await depth(b, 'queue:inbound.killed'), 0, 'nothing reached B while the float was down');
  assert.equal(await depth(a!, 'queue:from-b.killed'), 0, 'nothing reached A while the float was down');
  await float.start();
  await expectExactlyOnce(b, 'queue:inbound.killed', toB, 'A → B after the float restarted');
  await expectExactlyOnce(a!, 'queue:from-b.killed', toA, 'B → A after the float restarted');
});

test('destination inside full: the gateway stops pulling, the messages wait on the float, and all arrive once when it drains', async () => {
  const sent = ids('l', 15);
  await sendAll(b.url, 'peer:bank-a/from-b.limited', sent);
  // The bound is checked per send, so sends in flight together may pass it by up to the tunnel's
  // credit (2 here); what matters is that the gateway then stops pulling and the rest stay on the float.
  const settled = async () => { const d = await depth(a!, 'queue:from-b.limited'); const w = await waitingOnFloat(); return d >= 5 && d + w === 15 ? { d, w } : undefined; };
  const first = (await waitFor(settled, 60_000, 'the bounded queue to fill and the rest to wait on the float'))!;
  await new Promise((r) => setTimeout(r, 3000));
  const later = await settled();
  assert.deepEqual(later, first, 'nothing more was pulled while the queue was full');
  assert.ok(first.w > 0, `messages wait on the float (queue ${first.d}, float ${first.w})`);
  await expectExactlyOnce(a!, 'queue:from-b.limited', sent, 'draining the bounded queue');
});

test('inside Redis down: the gateway stops pulling, the messages wait on the float, and arrive once when Redis is back', async () => {
  await redisA.kill();
  const sent = ids('r', 10);
  await sendAll(b.url, 'peer:bank-a/from-b.redis', sent);
  await waitFor(async () => (await waitingOnFloat()) === 10, 60_000, 'ten messages waiting on the float');
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await waitingOnFloat(), 10, 'the gateway took nothing while its Redis was down');
  await redisA.restart();
  await expectExactlyOnce(a!, 'queue:from-b.redis', sent, 'after the inside Redis came back');
  await waitFor(async () => (await waitingOnFloat()) === 0, 30_000, 'the float to be empty');
});

test('float storage near its limit: it gives peers no credit, the messages wait at the peer, and arrive once when memory frees', async () => {
  const used = Number(/used_memory:(\d+)/.exec(await floatRedis.info('memory'))![1]);
  await floatRedis.config('SET', 'maxmemory', String(Math.round(used * 1.03)));
  await waitFor(async () => /refusing new inbound messages/.test(float.output()), 30_000, 'the float to see its Redis nearly full');
  const sent = ids('m', 10);
  await sendAll(b.url, 'peer:bank-a/from-b.full', sent);
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(await floatRedis.llen(floatKeys.ready), 0, 'the float stored nothing');
  assert.equal(await depth(a!, 'queue:from-b.full'), 0);
  await floatRedis.config('SET', 'maxmemory', '0');
  await expectExactlyOnce(a!, 'queue:from-b.full', sent, 'after the float freed memory');
});
