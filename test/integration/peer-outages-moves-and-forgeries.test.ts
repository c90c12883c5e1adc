import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as edSign, verify as edVerify, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import rhea, { type Connection, type EventContext, type Sender } from 'rhea';
import { stringify } from 'yaml';
import type { Message } from '../../src/core/message.ts';
import { toAmqp, type AmqpMessage } from '../../src/amqp/mapping.ts';
import type { Gateway } from '../../src/gateway.ts';
import { signEnvelope } from '../../src/network/envelope.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, spawnGateway, startTestGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The peer network when things go wrong (issue 7), between real gateways on loopback, each with its own
// redis-server, certificates from a development CA made with openssl, mutual TLS and signed
// envelopes: the CLI that makes the material, store-and-retry while a peer is down, a peer that
// moves (map file edited under a running gateway), forged and altered messages from a client
// holding a real peer certificate, the undeliverable notice, backpressure across the hop, and
// a live permission rule for a peer. Every count is by message id.

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');

const A_ID = 'O=Bank A,L=London,C=GB';
const B_ID = 'O=Bank B,L=Paris,C=FR';
const A_PREFIX = `pma${process.pid}`;
const B_PREFIX = `pmb${process.pid}`;
const HORIZON = '10m'; // long: nothing in tests 2, 3, 6 may be dead-lettered for lack of time

// A and B load no flows: the resolve hook for flow files is installed once per process, for
// the first flows folder loaded, and test 5's gateway needs it for its own temp folder.
let tmp: string;
let noFlows: string;
let mapFile: string;
let redisA: TestRedis;
let redisB: TestRedis;
let net: Awaited<ReturnType<typeof testNetwork>>;
let a: Gateway | undefined;
let b: GatewayProcess | undefined;
let bPort: number;
let outboxRedis: Redis | undefined;
let outbox: Queue | undefined;
const extraGateways = new Set<Gateway>();
const connections = new Set<Connection>();

const PERMS = [
  { group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'start'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

/** B's peer entry in A's map file (A's only source of peers). */
function writeMap(port: number): void {
  const bank = net.nodes['bank-b']!;
  writeFileSync(mapFile, stringify({ peers: [{ alias: 'bank-b', identity: bank.identity, host: '127.0.0.1', port, verifyKey: bank.verifyKey, allow: ['queue:from-b.**'] }] }));
}

/**
 * Bank B in its own process (`switchboard start`) with its peer listener on `port`, always with the
 * same Redis data (prefix), so a restart keeps its dedup store and queues. Stopped with SIGTERM: the
 * gateway's own graceful stop.
 */
async function startB(port: number): Promise<GatewayProcess> {
  return spawnGateway(redisB.url, {
    permissions: PERMS,
    flows: { dir: noFlows },
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s', limits: [{ address: 'queue:inbound.bounded', maxDepth: 10 }] },
    network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { port, eventHorizon: HORIZON }),
  }, B_PREFIX);
}

async function stopB(): Promise<void> {
  const p = b;
  b = undefined;
  if (p) assert.equal(await p.kill('SIGTERM'), 0, `bank B stopped cleanly:\n${p.output()}`);
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'sb-peer-outages-'));
  noFlows = join(tmp, 'no-flows');
  mapFile = join(tmp, 'network-map.yaml');
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  net = await testNetwork([
    { alias: 'bank-a', identity: A_ID },
    { alias: 'bank-b', identity: B_ID },
  ]);
  bPort = net.nodes['bank-b']!.port;
  writeMap(bPort);
  b = await startB(bPort);
  a = await startTestGateway(redisA.url, {
    redis: { url: redisA.url, prefix: A_PREFIX },
    permissions: PERMS,
    flows: { dir: noFlows },
    network: networkConfig(net, 'bank-a', [], { eventHorizon: HORIZON, mapFile }),
  });
  // A's outbox for bank-b as BullMQ sees it: how many jobs are backing off after a failed attempt.
  outboxRedis = new Redis(redisA.url, { maxRetriesPerRequest: null });
  outbox = new Queue('{peer-out.bank-b}', { connection: outboxRedis, prefix: A_PREFIX });
});

after(async () => {
  for (const c of connections) c.close();
  for (const g of extraGateways) await g.stop();
  await a?.stop();
  await b?.kill('SIGTERM');
  await outbox?.close();
  await outboxRedis?.quit();
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// --- helpers ----------------------------------------------------------------------------------

/** waitFor for a value: resolves with what `fn` returned once it is defined. */
async function until<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  return (await waitFor(fn, timeoutMs, what)) as T;
}

type Door = { url: string };
const gwA = () => a!;
const gwB = () => b!;

async function send(gw: Door, to: string, id: string, body: unknown): Promise<void> {
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
}

/** Sends every id (a few at a time) to `to` through the HTTP API as ops. */
async function sendAll(gw: Door, to: string, ids: string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 25) await Promise.all(ids.slice(i, i + 25).map((id) => send(gw, to, id, { id })));
}

async function browse(gw: Door, address: string): Promise<{ depth: number; messages: Message[] }> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}?limit=1000`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

async function dlqDepth(gw: Door, address: string): Promise<number> {
  const r = await api(gw.url, 'GET', `/api/dlq/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.depth;
}

/** switchboard_queue_depth{address="…"} from /metrics (undefined when the series is absent). */
async function metricDepth(gw: Door, address: string): Promise<number | undefined> {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`switchboard_queue_depth{address="${address}"} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const outboxDepth = async (gw: Door) => metricDepth(gw, 'peer:bank-b/**');

async function peerDetail(gw: Door): Promise<string> {
  const r = (await (await fetch(`${gw.url}/readyz`)).json()) as { checks: Record<string, { detail?: string }> };
  return r.checks['endpoint:peer']?.detail ?? '';
}

/** Each id exactly once among `messages` (and nothing else). */
function assertOncePerId(messages: { id: string }[], ids: string[], what: string): void {
  const counts = new Map<string, number>();
  for (const m of messages) counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  const twice = [...counts].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const missing = ids.filter((id) => !counts.has(id));
  const strangers = [...counts.keys()].filter((id) => !ids.includes(id));
  assert.deepEqual({ twice, missing, strangers }, { twice: [], missing: [], strangers: [] }, what);
  assert.equal(messages.length, ids.length, what);
}

// --- 1. the CLI makes a development CA and node material ---------------------------------------

test('`switchboard network init-ca` and `network issue` make a CA and node material that openssl verifies, with private keys 0600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-cli-net-'));
  try {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.NODE_OPTIONS;
    const ca = await run(process.execPath, [BIN, 'network', 'init-ca', '--dir', dir], { cwd: ROOT, env });
    const caOut = JSON.parse(ca.stdout) as { key: string; cert: string };
    assert.deepEqual(caOut, { key: join(dir, 'network-ca.key'), cert: join(dir, 'network-ca.crt') });
    const identity = 'O=Bank Z,L=Oslo,C=NO';
    const node = await run(process.execPath, [BIN, 'network', 'issue', identity, '--alias', 'bank-z', '--dir', dir], { cwd: ROOT, env });
    const out = JSON.parse(node.stdout) as { key: string; cert: string; signingKey: string; verifyKey: string };
    assert.deepEqual(out, { key: join(dir, 'bank-z.key'), cert: join(dir, 'bank-z.crt'), signingKey: join(dir, 'bank-z-sign.key'), verifyKey: join(dir, 'bank-z-sign.pub') });

    for (const f of [caOut.key, caOut.cert, out.key, out.cert, out.signingKey, out.verifyKey]) assert.ok(existsSync(f), `${f} exists`);
    for (const secret of [caOut.key, out.key, out.signingKey]) assert.equal(statSync(secret).mode & 0o777, 0o600, `${secret} is readable by its owner only`);
    for (const pub of [caOut.cert, out.cert, out.verifyKey]) assert.equal(statSync(pub).mode & 0o022, 0, `${pub} is writable by its owner only`);

    // The node certificate chains to the CA, and its subject is the identity.
    const verify = await run('openssl', ['verify', '-CAfile', caOut.cert, out.cert]);
    assert.match(verify.stdout, /: OK\s*$/);
    const subject = await run('openssl', ['x509', '-in', out.cert, '-noout', '-subject', '-nameopt', 'RFC2253']);
    const rdns = (s: string) => s.split(',').map((p) => p.trim()).sort();
    assert.deepEqual(rdns(subject.stdout.replace(/^subject=\s*/, '').trim()), rdns(identity));
    const cert = new X509Certificate(readFileSync(out.cert));
    assert.equal(cert.subject, 'O=Bank Z\nL=Oslo\nC=NO');
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(new X509Certificate(readFileSync(caOut.cert))));
    assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(out.key))), 'the TLS key belongs to the certificate');
    assert.ok(cert.checkIP('127.0.0.1') && cert.checkHost('localhost'), 'valid for the default hosts');

    // The signing key pair is Ed25519 and its halves belong together.
    const signing = createPrivateKey(readFileSync(out.signingKey));
    const verifyKey = createPublicKey(readFileSync(out.verifyKey));
    assert.equal(signing.asymmetricKeyType, 'ed25519');
    const data = Buffer.from('hello bank z');
    assert.ok(edVerify(null, data, verifyKey, edSign(null, data, signing)));

    // A name that is not an X.500 name is refused with a reason, and nothing is written for it.
    const bad = await run(process.execPath, [BIN, 'network', 'issue', 'Bank Y', '--alias', 'bank-y', '--dir', dir], { cwd: ROOT, env }).then(() => undefined, (e: { code: number; stderr: string }) => e);
    assert.ok(bad, 'the CLI failed');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not an X\.500 name/);
    assert.ok(!existsSync(join(dir, 'bank-y.crt')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- 4. forged and altered messages from a client with a real peer certificate -----------------

interface Outcome {
  outcome: 'accepted' | 'rejected' | 'released' | 'modified';
  condition?: string;
  description?: string;
}

/** A rhea client with bank A's real TLS key and certificate, connected to B's peer listener. */
async function peerClient(port: number): Promise<{ sender: Sender; send(m: AmqpMessage): Promise<Outcome>; close(): Promise<void> }> {
  const bank = net.nodes['bank-a']!;
  const container = rhea.create_container({ id: `forger-${process.pid}` });
  const conn = container.connect({
    host: '127.0.0.1', port, transport: 'tls', reconnect: false, username: 'anonymous',
    key: readFileSync(bank.key), cert: readFileSync(bank.cert), ca: readFileSync(net.ca), rejectUnauthorized: true,
  } as never);
  connections.add(conn);
  const pending = new Map<number, (o: Outcome) => void>();
  const settle = (outcome: Outcome['outcome']) => (ctx: EventContext) => {
    const d = ctx.delivery;
    if (!d) return;
    const err = (d.remote_state as { error?: { condition?: string; description?: string } } | undefined)?.error;
    pending.get(d.id)?.({ outcome, ...(err?.condition ? { condition: err.condition } : {}), ...(err?.description ? { description: err.description } : {}) });
    pending.delete(d.id);
  };
  for (const o of ['accepted', 'rejected', 'released', 'modified'] as const) conn.on(o, settle(o));
  let failure: Error | undefined;
  conn.on('connection_error', (ctx: EventContext) => { failure = new Error(`connection error: ${JSON.stringify(ctx.connection.error)}`); });
  conn.on('disconnected', (ctx: EventContext) => { failure ??= new Error(`disconnected: ${(ctx as { error?: Error }).error?.message ?? '?'}`); });
  conn.on('error', () => {});
  const sender = conn.open_sender({ target: { address: 'inbound.forged' }, autosettle: true });
  await waitFor(async () => {
    if (failure) throw failure;
    return sender.sendable();
  }, 20_000, 'credit from the peer listener');
  return {
    sender,
    send: (m) => new Promise<Outcome>((res, rej) => {
      if (failure) return rej(failure);
      const d = sender.send(m as never);
      const t = setTimeout(() => rej(new Error(`no outcome for ${String(m.message_id)}`)), 20_000);
      pending.set(d.id, (o) => { clearTimeout(t); res(o); });
    }),
    close: () => new Promise<void>((res) => {
      if (!conn.is_open()) { connections.delete(conn); return res(); }
      const t = setTimeout(res, 3000);
      conn.once('connection_close', () => { clearTimeout(t); res(); });
      conn.once('disconnected', () => { clearTimeout(t); res(); });
      conn.close();
      connections.delete(conn);
    }),
  };
}

function envelope(id: string, body: unknown): Message {
  return { id, to: 'queue:inbound.forged', sender: { kind: 'user', name: 'teller' }, headers: { 'x-desk': 'fx' }, contentType: 'application/json', body, createdAt: new Date().toISOString() };
}

/** `m` as bank A's gateway would put it on the wire, with `signature` and bank A as origin. */
function wire(m: Message, signature: string): AmqpMessage {
  const amqp = toAmqp(m);
  (amqp.application_properties as Record<string, string>)['switchboard-signature'] = signature;
  (amqp.application_properties as Record<string, string>)['switchboard-origin'] = A_ID;
  return amqp;
}

test("a message signed with another key, or altered after signing, is rejected (unauthorized), audited as peer.forged and not routed; bank A's real signature is accepted", async () => {
  const realKey = createPrivateKey(readFileSync(net.nodes['bank-a']!.signingKey));
  const otherKey = generateKeyPairSync('ed25519').privateKey;
  const client = await peerClient(bPort);
  try {
    // 1. Forged: the envelope is intact but signed with a key that is not bank A's.
    const forged = envelope('forged-1', { pay: 100 });
    const r1 = await client.send(wire(forged, signEnvelope(otherKey, forged, 'inbound.forged', A_ID)));
    assert.equal(r1.outcome, 'rejected', JSON.stringify(r1));
    assert.equal(r1.condition, 'amqp:unauthorized-access');
    assert.match(r1.description ?? '', /signature/);

    // 2. Altered: signed with bank A's real key, then the body changed on the way.
    const original = envelope('altered-1', { pay: 100 });
    const signature = signEnvelope(realKey, original, 'inbound.forged', A_ID);
    const r2 = await client.send(wire({ ...original, body: { pay: 1_000_000 } }, signature));
    assert.equal(r2.outcome, 'rejected', JSON.stringify(r2));
    assert.equal(r2.condition, 'amqp:unauthorized-access');

    // 3. The same message as signed, on the same link from the same client: accepted. The
    //    rejections came from the signatures, and the altered copy did not use up the id.
    const r3 = await client.send(wire(original, signature));
    assert.deepEqual(r3, { outcome: 'accepted' });

    const q = await browse(gwB(), 'queue:inbound.forged');
    assertOncePerId(q.messages, ['altered-1'], 'only the genuine message was routed');
    assert.deepEqual(q.messages[0]!.body, { pay: 100 });
    assert.deepEqual(q.messages[0]!.sender, { kind: 'peer', name: A_ID, alias: 'bank-a' });

    const audit = await api(gwB().url, 'GET', '/api/audit?action=peer.forged&limit=100', { user: 'ops' });
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    const entries = audit.body.entries as { action: string; actor: string; target?: string; detail?: string }[];
    for (const id of ['forged-1', 'altered-1']) {
      const e = entries.find((x) => x.detail?.includes(`message ${id}:`));
      assert.ok(e, `a peer.forged entry for ${id}: ${JSON.stringify(entries)}`);
      assert.equal(e.actor, `peer:${A_ID}`);
      assert.equal(e.target, 'queue:inbound.forged');
    }
    assert.equal(entries.length, 2, JSON.stringify(entries));
  } finally {
    await client.close();
  }
});

// --- 7. a live permission rule for a peer ------------------------------------------------------

test("a peer without an allow pattern for an address may send there once a live rule for 'peer: bank-a' allows it", async () => {
  await send(gwA(), 'peer:bank-b/ruled.z', 'ruled-1', { n: 1 });
  await waitFor(async () => (await dlqDepth(gwA(), 'peer:bank-b/ruled.z')) === 1, 60_000, 'the refused message at A');
  const refused = (await api(gwA().url, 'GET', `/api/dlq/${enc('peer:bank-b/ruled.z')}`, { user: 'ops' })).body;
  assert.equal(refused.messages[0].id, 'ruled-1');
  assert.match(refused.messages[0].deadLetter.reason, /may not send on queue:ruled\.z/);

  const rule = await api(gwB().url, 'POST', '/api/permissions', { user: 'ops', body: { peer: 'bank-a', address: 'queue:ruled.**', verbs: ['send'], force: true } });
  assert.equal(rule.status, 201, JSON.stringify(rule.body));
  assert.equal(rule.body.rule.peer, 'bank-a');
  assert.equal(rule.body.rule.source, 'console');

  await send(gwA(), 'peer:bank-b/ruled.z', 'ruled-2', { n: 2 });
  const q = await until(async () => { const d = await browse(gwB(), 'queue:ruled.z'); return d.depth >= 1 ? d : undefined; }, 60_000, 'ruled-2 at B');
  assertOncePerId(q.messages, ['ruled-2'], 'the message sent after the rule, and only it');
  assert.deepEqual(q.messages[0]!.sender, { kind: 'peer', name: A_ID, alias: 'bank-a' });
  await waitFor(async () => (await outboxDepth(gwA())) === 0, 30_000, "A's outbox to empty");
  assert.equal(await dlqDepth(gwA(), 'peer:bank-b/ruled.z'), 1, 'only the message sent before the rule was refused');
});

// --- 6. backpressure across the hop ------------------------------------------------------------

test("backpressure: B's bounded queue fills to about maxDepth, the rest waits in A's outbox (nothing dead-lettered); draining B lets each through once", async () => {
  const address = 'queue:inbound.bounded';
  const ids = Array.from({ length: 40 }, (_, i) => `bp-${i}`);
  await sendAll(gwA(), 'peer:bank-b/inbound.bounded', ids);

  // B holds at its limit; everything else is still A's (outbox), none lost in between.
  const split = await until(async () => {
    const [atB, atA] = [(await browse(gwB(), address)).depth, await outboxDepth(gwA())];
    return atB >= 10 && atA !== undefined && atA > 0 && atA + atB === ids.length ? { atA, atB } : undefined;
  }, 60_000, "B's queue at its limit and the rest in A's outbox");
  // The limit is checked before each add, not atomically: concurrent deliveries (A sends at most
  // 20 at once) may overshoot it by their number, never more.
  const bound = 10 + 20;
  assert.ok(split.atB <= bound, `B holds ${split.atB}`);
  // It stays there while nobody consumes (B gives no credit back for what it holds), and A
  // dead-letters nothing.
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 300));
    const atB = (await browse(gwB(), address)).depth;
    assert.ok(atB <= bound, `B holds ${atB}`);
  }
  assert.ok(((await outboxDepth(gwA())) ?? 0) > 0, 'the rest waits at A');
  assert.equal(await dlqDepth(gwA(), 'peer:bank-b/inbound.bounded'), 0, 'nothing dead-lettered before the horizon');

  // Drain B: everything comes through, each id once.
  const received: Message[] = [];
  await waitFor(async () => {
    const r = await api(gwB().url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 10, leaseSeconds: 300 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const got = r.body.messages as (Message & { lease: string })[];
    if (got.length > 0) {
      const ack = await api(gwB().url, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: got.map((m) => m.lease) } });
      assert.equal(ack.status, 200, JSON.stringify(ack.body));
      received.push(...got);
    }
    return new Set(received.map((m) => m.id)).size >= ids.length;
  }, 150_000, 'every message through B');
  await waitFor(async () => (await outboxDepth(gwA())) === 0, 60_000, "A's outbox to empty");
  assert.equal((await browse(gwB(), address)).depth, 0, 'no second copy came after the drain');
  assertOncePerId(received, ids, 'each message through B once');
  assert.ok(received.every((m) => m.sender.kind === 'peer' && m.sender.name === A_ID && m.sender.alias === 'bank-a'));
  assert.equal(await dlqDepth(gwA(), 'peer:bank-b/inbound.bounded'), 0);
});

// --- 2. store and retry ------------------------------------------------------------------------

test('store and retry: with B stopped, 300 messages wait in A\'s outbox (seen in /metrics and /readyz); B started again receives each exactly once', async () => {
  await stopB();
  const ids = Array.from({ length: 300 }, (_, i) => `sr-${i}`);
  await sendAll(gwA(), 'peer:bank-b/inbound.x', ids);

  await waitFor(async () => (await outboxDepth(gwA())) === 300, 30_000, 'outbox depth 300 in /metrics');
  await waitFor(async () => /bank-b: (down|connecting), outbox 300\b/.test(await peerDetail(gwA())), 30_000, '/readyz to show bank-b down with 300 waiting');
  // The bridge's attempts fail and the messages back off (retry), still all in the outbox.
  await waitFor(async () => (await outbox!.getDelayedCount()) > 0, 60_000, 'failed attempts backing off');
  assert.equal(await outboxDepth(gwA()), 300);
  assert.equal(await dlqDepth(gwA(), 'peer:bank-b/inbound.x'), 0);

  b = await startB(bPort);
  const q = await until(async () => { const d = await browse(gwB(), 'queue:inbound.x'); return d.depth >= 300 ? d : undefined; }, 120_000, 'all 300 at B');
  await waitFor(async () => (await outboxDepth(gwA())) === 0, 60_000, "A's outbox to empty");
  await waitFor(async () => /bank-b: open, outbox 0\b/.test(await peerDetail(gwA())), 30_000, '/readyz to show bank-b open and empty');
  const final = await browse(gwB(), 'queue:inbound.x');
  assertOncePerId(final.messages, ids, 'each of the 300 at B once');
  assert.equal(final.depth, 300);
  assert.equal(q.depth, 300);
  assert.ok(final.messages.every((m) => m.sender.kind === 'peer' && m.sender.name === A_ID && m.sender.alias === 'bank-a'));
});

// --- 3. the peer moves ----------------------------------------------------------------------

test("the map moves: B restarts on another port, A's queued messages wait, and go to the new address once the map file says so (no restart of A)", async () => {
  const oldPort = bPort;
  await stopB();
  let newPort = await freePort();
  while (newPort === oldPort) newPort = await freePort();
  b = await startB(newPort);
  bPort = newPort;

  const ids = Array.from({ length: 30 }, (_, i) => `mv-${i}`);
  await sendAll(gwA(), 'peer:bank-b/inbound.moved', ids);
  await waitFor(async () => (await outboxDepth(gwA())) === 30, 30_000, 'outbox depth 30');
  // A still tries the old address, and fails there.
  await waitFor(async () => new RegExp(`bank-b: down, outbox 30 .*${oldPort}`).test(await peerDetail(gwA())), 30_000, `/readyz to show bank-b down at port ${oldPort}`);
  assert.equal((await browse(gwB(), 'queue:inbound.moved')).depth, 0);

  writeMap(newPort);
  const q = await until(async () => { const d = await browse(gwB(), 'queue:inbound.moved'); return d.depth >= 30 ? d : undefined; }, 120_000, 'all 30 at B\'s new address');
  await waitFor(async () => (await outboxDepth(gwA())) === 0, 60_000, "A's outbox to empty");
  const final = await browse(gwB(), 'queue:inbound.moved');
  assertOncePerId(final.messages, ids, 'each moved message once');
  assert.equal(q.depth, 30);
  assert.equal(await dlqDepth(gwA(), 'peer:bank-b/inbound.moved'), 0);
});

// --- 5. the undeliverable notice --------------------------------------------------------------

test('past the event horizon: a flow waiting in ctx.receive() gets the undeliverable notice; a non-flow sender\'s notice goes to network.noticesTo', async () => {
  const flowsDir = join(tmp, 'flows');
  mkdirSync(flowsDir, { recursive: true });
  writeFileSync(join(flowsDir, 'peer-notice.ts'), `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'peer-notice',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const sent = await ctx.send('peer:bank-b/inbound.offline', { ref: input.ref });
    const m = await ctx.receive({ timeout: '5m' });
    return { sent: sent.id, body: m.body, headers: m.headers, sender: m.sender, from: m.from ?? null };
  },
});
`);
  const closed = await freePort(); // nobody listens there: bank-b stays offline for this gateway
  const c = await startTestGateway(redisA.url, {
    redis: { url: redisA.url, prefix: `${A_PREFIX}n` },
    permissions: PERMS,
    flows: { dir: flowsDir },
    network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [], port: closed }], { port: 0, eventHorizon: '2s', noticesTo: 'queue:network.notices' }),
  });
  extraGateways.add(c);
  try {
    const started = await api(c.url, 'POST', '/api/flows/peer-notice', { user: 'ops', body: { input: { ref: 'T-1' } } });
    assert.equal(started.status, 202, JSON.stringify(started.body));
    const instanceId = started.body.instanceId as string;
    await send(c, 'peer:bank-b/inbound.offline', 'plain-1', { ref: 'T-2' });

    const done = await until(async () => {
      const v = (await api(c.url, 'GET', `/api/flows/peer-notice/${instanceId}`, { user: 'ops' })).body;
      return ['completed', 'failed', 'cancelled'].includes(v.status) ? v : undefined;
    }, 120_000, 'the flow to get its notice');
    assert.equal(done.status, 'completed', JSON.stringify(done));
    const r = done.result;
    assert.equal(r.body.notice, 'undeliverable');
    assert.equal(r.body.id, r.sent);
    assert.equal(r.body.to, 'peer:bank-b/inbound.offline');
    assert.equal(r.body.deadLetter, 'dlq:peer:bank-b/inbound.offline');
    assert.match(r.body.reason, /event horizon/);
    assert.equal(r.headers['switchboard-notice'], 'undeliverable');
    assert.deepEqual(r.sender, { kind: 'system', name: 'switchboard' });

    const notices = await until(async () => { const d = await browse(c, 'queue:network.notices'); return d.depth >= 1 ? d : undefined; }, 120_000, 'the notice for plain-1');
    assert.equal(notices.depth, 1, 'the flow\'s notice went to the flow only');
    const n = notices.messages[0]!;
    assert.deepEqual(n.body, { notice: 'undeliverable', id: 'plain-1', to: 'peer:bank-b/inbound.offline', reason: (n.body as { reason: string }).reason, deadLetter: 'dlq:peer:bank-b/inbound.offline' });
    assert.match((n.body as { reason: string }).reason, /event horizon/);
    assert.equal(n.headers['switchboard-notice'], 'undeliverable');

    const dl = (await api(c.url, 'GET', `/api/dlq/${enc('peer:bank-b/inbound.offline')}`, { user: 'ops' })).body;
    assert.deepEqual(dl.messages.map((m: Message) => m.id).sort(), [r.sent, 'plain-1'].sort());
  } finally {
    await c.stop();
    extraGateways.delete(c);
  }
});
