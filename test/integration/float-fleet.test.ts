import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import rhea, { type EventContext } from 'rhea';
import { toAmqp } from '../../src/amqp/mapping.ts';
import type { Message } from '../../src/core/message.ts';
import { signEnvelope } from '../../src/network/envelope.ts';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { leaseKey } from '../../src/store/lease.ts';
import { assertExactlyOnce, drain } from '../support/counting-sink.ts';
import { GatewayFleet, sleep } from '../support/fleet.ts';
import { spawnFloat, type FloatProcess } from '../support/float.ts';
import { api, startTestGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// A gateway fleet behind one float (DESIGN §9, §10): two `switchboard start` processes of Bank A on
// one inside Redis keyspace dial the same float; one holds the tunnel (lease `float-tunnel`, 2 s
// here). The holder is killed with kill -9 while messages flow both ways; the other takes the
// tunnel over. Then the whole fleet is killed: inbound messages wait on the float until a gateway
// starts again. Every message is counted at its sink: each exactly once. The float's own HTTP port
// (/readyz, /metrics) is read throughout. Real processes, real Redis for each side, real TLS from
// two CAs.

const PREFIX_A = 'fleet-a';
const LEASE_MS = 2000;
const FLOAT_SUBJECT = 'CN=float.dmz,O=Bank A';
const GATEWAY_SUBJECT = 'CN=gateway,O=Bank A';
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'admin', 'start'] }] }];
// A flow at Bank B that sends to an address Bank A does not allow it, then waits for what comes back.
const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'refused-notice',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const sent = await ctx.send('peer:bank-a/not-allowed.flow', { ref: input.ref });
    const m = await ctx.receive({ timeout: '5m' });
    return { sent: sent.id, body: m.body, headers: m.headers, sender: m.sender };
  },
});
`;

let redisA: TestRedis;
let redisB: TestRedis;
let redisF: TestRedis;
let insideRedis: Redis;
let float: FloatProcess;
let floatHttp: string;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
let tun: Awaited<ReturnType<typeof testNetwork>>;
let tunnelPort: number;
const fleet = new GatewayFleet(() => redisA.url);
let live: GatewayProcess[] = [];

const bankA = () => {
  const { port: _listener, ...n } = networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: ['queue:from-b.**'] }]);
  return {
    permissions: PERMS,
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' },
    network: { ...n, float: { url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT, credit: 5, lease: `${LEASE_MS}ms` } },
  };
};
const holderPid = async () => Number((await insideRedis.get(leaseKey(PREFIX_A, 'float-tunnel')))?.split(':')[1] ?? 0);
const readyz = async () => { const r = await fetch(`${floatHttp}/readyz`); return { status: r.status, body: await r.json() as { status: string; tunnelHeld: boolean; checks: Record<string, { ok: boolean; detail?: string }> } }; };
/** One sample of the float's /metrics (labels as `k="v"` pairs, exact). */
async function floatMetric(name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(`${floatHttp}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(labels ? `${name}{${labels}} ` : `${name} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}
const ids = (stem: string, n: number) => Array.from({ length: n }, (_, i) => `${stem}-${i + 1}`);

/** POSTs through the live gateways of the fleet in turn until one answers 202 (a killed one refuses the connection). */
async function sendViaFleet(to: string, id: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const gw = live[attempt % live.length]!;
    const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id } } }).catch(() => undefined);
    if (r?.status === 202) return;
    if (attempt > 300) throw new Error(`${id}: no gateway of the fleet took it (last: ${r?.status} ${JSON.stringify(r?.body)})`);
    await sleep(100);
  }
}

async function sendViaB(to: string, id: string): Promise<void> {
  const r = await api(b.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id } } });
  assert.equal(r.status, 202, `${id}: ${JSON.stringify(r.body)}`);
}

/** Drains `address` (through `base`) until every id was counted, waits a little for a late duplicate, then checks each once. */
async function expectExactlyOnce(base: () => string, address: string, expected: string[], what: string): Promise<void> {
  const counts = new Map<string, number>();
  await waitFor(async () => { await drain(base(), address, counts); return expected.every((id) => counts.has(id)); }, 120_000, what).catch(() => undefined);
  await sleep(2000);
  await drain(base(), address, counts);
  assertExactlyOnce(expected, counts, ` (${what}; float log: ${float.output().slice(-1500)})`);
}

before(async () => {
  [redisA, redisB, redisF] = await Promise.all([startTestRedis(), startTestRedis(), startTestRedis()]);
  insideRedis = new Redis(redisA.url);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  tun = await testNetwork([{ alias: 'float', identity: FLOAT_SUBJECT }, { alias: 'gw', identity: GATEWAY_SUBJECT }]);
  tunnelPort = await freePort();
  const httpPort = await freePort();
  floatHttp = `http://127.0.0.1:${httpPort}`;
  const bNode = net.nodes['bank-b']!;
  float = await spawnFloat({
    redis: { url: redisF.url, prefix: 'float' },
    log: { level: 'info' },
    http: { port: httpPort },
    peers: { host: '127.0.0.1', port: net.nodes['bank-a']!.port },
    tunnel: { host: '127.0.0.1', port: tunnelPort, key: tun.nodes.float!.key, cert: tun.nodes.float!.cert, ca: tun.ca, gatewaySubject: GATEWAY_SUBJECT },
    network: { ca: net.ca, eventHorizon: '1h', peers: [{ alias: 'bank-b', identity: bNode.identity, host: '127.0.0.1', port: bNode.port, verifyKey: bNode.verifyKey }] },
  });
  const flowsDir = join(net.dir, 'flows');
  mkdirSync(flowsDir);
  writeFileSync(join(flowsDir, 'refused-notice.ts'), FLOW);
  b = await startTestGateway(redisB.url, { permissions: PERMS, flows: { dir: flowsDir }, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { eventHorizon: '1h', noticesTo: 'queue:notices' }) });
});

after(async () => {
  await fleet.stopAll();
  await b?.stop();
  insideRedis?.disconnect();
  await float?.dispose();
  await Promise.all([redisA, redisB, redisF].map((r) => r?.dispose()));
  for (const n of [net, tun]) if (n) rmSync(n.dir, { recursive: true, force: true });
});

test('the float\'s HTTP port before any gateway: ready (its Redis and tunnel listener are up), tunnel not held, peer listener closed', async () => {
  const r = await readyz();
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.status, 'ready');
  assert.equal(r.body.tunnelHeld, false);
  assert.match(r.body.checks.peerListener!.detail!, /closed until a gateway hands over its peer key/);
  assert.equal(await floatMetric('switchboard_float_tunnel_connected'), 0);
});

test('two gateways, one tunnel: kill -9 of the holder mid-stream, the other takes the tunnel over within the lease, every message both ways arrives once', { timeout: 300_000 }, async () => {
  live = await Promise.all([0, 1].map(() => fleet.spawn(PREFIX_A, bankA())));
  const holder = (await waitFor(async () => { const pid = await holderPid(); return live.find((g) => g.pid === pid); }, 30_000, 'a gateway of the fleet to hold the tunnel lease'))!;
  const survivor = live.find((g) => g !== holder)!;
  await waitFor(async () => (await readyz()).body.tunnelHeld, 30_000, 'the float to see its tunnel held');
  assert.equal(await floatMetric('switchboard_float_tunnel_connected'), 1);
  // Only the holder dialled: the other stores and waits.
  assert.doesNotMatch(survivor.output(), /float tunnel open/);

  const inbound = ids('in', 24);
  const outbound = ids('out', 24);
  let killedAt = 0;
  let takeoverMs = 0;
  const streamIn = (async () => { for (const id of inbound) { await sendViaB('peer:bank-a/from-b.fleet', id); await sleep(150); } })();
  const streamOut = (async () => { for (const id of outbound) { await sendViaFleet('peer:bank-b/inbound.fleet', id); await sleep(150); } })();
  // A third of the way in, with messages in flight both ways, the holder dies without a word.
  await sleep(8 * 150);
  killedAt = Date.now();
  await holder.kill('SIGKILL');
  live = [survivor];
  await waitFor(async () => (await holderPid()) === survivor.pid && /float tunnel open/.test(survivor.output()), 60_000, 'the surviving gateway to take the tunnel over');
  takeoverMs = Date.now() - killedAt;
  await waitFor(async () => (await readyz()).body.tunnelHeld, 30_000, 'the float to see the tunnel held again');
  await Promise.all([streamIn, streamOut]);
  await expectExactlyOnce(() => survivor.url, 'queue:from-b.fleet', inbound, 'B → float → A across the takeover');
  await expectExactlyOnce(() => b.url, 'queue:inbound.fleet', outbound, 'A → float → B across the takeover');
  // The lease lapses after LEASE_MS; the survivor tries every LEASE_MS / 3 and then dials and hands
  // over its key. The bound is generous (a loaded machine): it catches a takeover that waits for
  // something other than the lease (a 30 s lock, a reconnect backoff), not a slow one.
  assert.ok(takeoverMs < LEASE_MS + 20_000, `takeover took ${takeoverMs} ms`);
  console.log(`# tunnel takeover after kill -9 of the holder: ${takeoverMs} ms (lease ${LEASE_MS} ms)`);
});

test('the whole fleet killed (-9): inbound messages wait on the float (its /metrics counts them), nothing is lost or duplicated after a gateway starts again', { timeout: 300_000 }, async () => {
  for (const g of live) await g.kill('SIGKILL');
  live = [];
  await waitFor(async () => !(await readyz()).body.tunnelHeld, 30_000, 'the float to see the tunnel gone');
  const sent = ids('down', 10);
  for (const id of sent) await sendViaB('peer:bank-a/from-b.down', id);
  await waitFor(async () => (await floatMetric('switchboard_float_inbound', 'state="ready"')) === 10, 60_000, 'ten messages waiting on the float (its /metrics)');
  const r = await readyz();
  assert.equal(r.status, 200, 'a float without its gateway is still ready: it takes what peers send');
  assert.equal(r.body.tunnelHeld, false);
  assert.equal(await floatMetric('switchboard_float_tunnel_connected'), 0);
  assert.ok((await floatMetric('switchboard_float_peers_connected', 'direction="in"'))! >= 1, 'Bank B is connected to the float');
  live = [await fleet.spawn(PREFIX_A, bankA())];
  await expectExactlyOnce(() => live[0]!.url, 'queue:from-b.down', sent, 'after a gateway started again');
  await waitFor(async () => (await floatMetric('switchboard_float_inbound', 'state="ready"')) === 0 && (await floatMetric('switchboard_float_inbound', 'state="taken"')) === 0, 30_000, 'the float to be empty');
});

test('the inside refuses a message the float accepted (not allowed): the sending peer gets the undeliverable notice, once; the float counts the refusal', { timeout: 120_000 }, async () => {
  await sendViaB('peer:bank-a/not-allowed.x', 'refused-1');
  const counts = new Map<string, number>();
  const notices = (await waitFor(async () => { const got = await drain(b.url, 'queue:notices', counts); return got.length ? got : undefined; }, 60_000, 'the notice at bank B'))!;
  // A little longer: a second notice would arrive now.
  await sleep(2000);
  notices.push(...await drain(b.url, 'queue:notices', counts));
  assert.equal(notices.length, 1, JSON.stringify(notices));
  const n = notices[0]!;
  assert.equal(n.id, 'undeliverable:refused-1');
  assert.equal(n.body.notice, 'undeliverable');
  assert.equal(n.body.id, 'refused-1');
  assert.equal(n.body.to, 'peer:bank-a/not-allowed.x');
  assert.match(n.body.reason, /^refused by peer bank-a after its float accepted it: .*not-allowed\.x/);
  assert.equal(n.body.deadLetter, undefined, 'nothing was dead-lettered at B: the message had left its outbox');
  assert.equal(await floatMetric('switchboard_float_refusals_total', 'action="gateway.refused"'), 1);
  // Nothing reached A's queue.
  assert.equal((await api(live[0]!.url, 'GET', `/api/queues/${encodeURIComponent('queue:not-allowed.x')}`, { user: 'ops' })).body.depth, 0);
});

test('a flow at the peer that sent the refused message gets the notice in ctx.receive (and noticesTo does not)', { timeout: 120_000 }, async () => {
  const started = await api(b.url, 'POST', '/api/flows/refused-notice', { user: 'ops', body: { input: { ref: 'T-1' } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const done = await waitFor(async () => {
    const v = (await api(b.url, 'GET', `/api/flows/refused-notice/${started.body.instanceId}`, { user: 'ops' })).body;
    return ['completed', 'failed', 'cancelled'].includes(v.status) ? v : undefined;
  }, 90_000, 'the flow to get its notice');
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.equal(done.result.body.notice, 'undeliverable');
  assert.equal(done.result.body.id, done.result.sent);
  assert.equal(done.result.body.to, 'peer:bank-a/not-allowed.flow');
  assert.match(done.result.body.reason, /^refused by peer bank-a after its float accepted it: /);
  assert.equal(done.result.headers['switchboard-notice'], 'undeliverable');
  assert.deepEqual(done.result.sender, { kind: 'system', name: 'switchboard' });
  await sleep(1000);
  assert.equal((await api(b.url, 'GET', `/api/queues/${encodeURIComponent('queue:notices')}`, { user: 'ops' })).body.depth, 0, 'the flow\'s notice went to the flow only');
});

/** Sends `m` to Bank B's peer listener as bank A's gateway would (its TLS key and signing key): what a hostile bank A can do. */
async function asBankA(remote: string, m: Message, port = net.nodes['bank-b']!.port): Promise<{ outcome: string; description?: string }> {
  const a = net.nodes['bank-a']!;
  const amqp = toAmqp(m);
  (amqp.application_properties as Record<string, string>)['switchboard-signature'] = signEnvelope(createPrivateKey(readFileSync(a.signingKey)), m, remote, a.identity);
  (amqp.application_properties as Record<string, string>)['switchboard-origin'] = a.identity;
  const conn = rhea.create_container({ id: 'hostile-bank-a' }).connect({
    host: '127.0.0.1', port, transport: 'tls', reconnect: false, username: 'anonymous',
    key: readFileSync(a.key), cert: readFileSync(a.cert), ca: readFileSync(net.ca), rejectUnauthorized: true,
  } as never);
  conn.on('error', () => {});
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no outcome from bank B')), 20_000);
      const done = (outcome: string) => (ctx: EventContext) => {
        clearTimeout(timer);
        const err = (ctx.delivery?.remote_state as { error?: { description?: string } } | undefined)?.error;
        resolve({ outcome, ...(err?.description ? { description: err.description } : {}) });
      };
      conn.on('accepted', done('accepted'));
      conn.on('rejected', done('rejected'));
      conn.on('released', done('released'));
      conn.on('disconnected', () => { clearTimeout(timer); reject(new Error('disconnected')); });
      conn.on('connection_close', () => { clearTimeout(timer); reject(new Error('closed by the listener')); });
      const sender = conn.open_sender({ target: { address: remote }, autosettle: true });
      sender.once('sendable', () => sender.send(amqp as never));
    });
  } finally {
    conn.close();
  }
}

test('a hostile peer on $notices: a malformed notice is refused and audited; a notice about an id no flow of B recorded sending goes to noticesTo', async () => {
  const notice = (id: string, body: unknown): Message => ({ id, to: 'queue:$notices', sender: { kind: 'system', name: 'switchboard' }, headers: {}, contentType: 'application/json', body, createdAt: new Date().toISOString() });
  const bad = await asBankA('$notices', notice('refused:junk', { notice: 'undeliverable', id: 'x' }));
  assert.equal(bad.outcome, 'rejected', JSON.stringify(bad));
  assert.match(bad.description ?? '', /must be \{notice: 'undeliverable', id, to, reason\}: to must be a string/);
  const audit = (await api(b.url, 'GET', '/api/audit?action=peer.notice-refused', { user: 'ops' })).body.entries as { actor: string; detail: string }[];
  assert.ok(audit.some((e) => e.actor === 'peer:O=Bank A,L=London,C=GB' && /refused:junk/.test(e.detail)), JSON.stringify(audit));
  const made = await asBankA('$notices', notice('refused:made-up', { notice: 'undeliverable', id: 'made-up-1', to: 'not-allowed.flow', reason: 'made up' }));
  assert.equal(made.outcome, 'accepted', JSON.stringify(made));
  const counts = new Map<string, number>();
  const got = (await waitFor(async () => { const g = await drain(b.url, 'queue:notices', counts); return g.length ? g : undefined; }, 30_000, 'the made-up notice in noticesTo'))!;
  assert.deepEqual(got.map((m) => m.body.id), ['made-up-1']);
  assert.match(got[0].body.reason, /made up/);
});

test('nobody may send to a peer\'s notice address by hand: 403 naming the reserved address, nothing reaches the peer', async () => {
  for (const [gw, to] of [[live[0]!.url, 'peer:bank-b/$notices'], [b.url, 'peer:bank-a/$notices']] as const) {
    const r = await api(gw, 'POST', '/api/messages', { user: 'ops', body: { to, id: 'forged-notice', body: { notice: 'undeliverable', id: 'in-1', to: 'queue:from-b.fleet', reason: 'made up' } } });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'reserved_address');
    assert.match(r.body.error.message, /\$notices is reserved for the notices Switchboard itself sends/);
  }
  await sleep(1500);
  assert.equal((await api(b.url, 'GET', `/api/queues/${encodeURIComponent('queue:notices')}`, { user: 'ops' })).body.depth, 0);
});

test('the float\'s HTTP port: GET only, three paths, no stack traces; /readyz is 503 while its Redis is down and ready again after', async () => {
  const post = await fetch(`${floatHttp}/metrics`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.match(((await post.json()) as { error: { message: string } }).error.message, /GET only, not POST/);
  const unknown = await fetch(`${floatHttp}/admin/../../etc/passwd`);
  assert.equal(unknown.status, 404);
  const text = await unknown.text();
  assert.match(text, /has \/healthz, \/readyz and \/metrics only/);
  assert.doesNotMatch(text, /at .*\.ts:\d+/);
  assert.equal((await fetch(`${floatHttp}/healthz`)).status, 200);
  // A network-CA certificate the float's map does not name (Bank A's own, at the float): refused, audited, counted.
  await asBankA('from-b.x', { id: 'stranger-1', to: 'queue:from-b.x', sender: { kind: 'system', name: 'switchboard' }, headers: {}, contentType: 'application/json', body: {}, createdAt: new Date().toISOString() }, net.nodes['bank-a']!.port).catch(() => undefined);
  await waitFor(async () => (await floatMetric('switchboard_float_refusals_total', 'action="peer.refused"')) === 1, 20_000, 'the refusal counted on the float');
  await redisF.kill();
  try {
    const down = await waitFor(async () => { const r = await readyz(); return r.status === 503 ? r : undefined; }, 30_000, '/readyz to say not ready');
    assert.equal(down!.body.checks.redis!.ok, false);
    assert.equal(down!.body.status, 'not ready');
  } finally {
    await redisF.restart();
  }
  await waitFor(async () => (await readyz()).status === 200, 60_000, '/readyz ready again');
});
