import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Bank A reaches Bank B only through a proxy (network.proxy): Debian's tinyproxy for HTTP CONNECT
// and Dante (danted) for SOCKS5, each a private instance on a free loopback port with its own
// config in a temp folder, stopped by PID. TLS runs inside the tunnel, so B's certificate and the
// envelope signature are checked exactly as on a direct connection.
// SOCKS5 with username/password runs against microsocks (credentials on its command line; Dante
// checks them against the system's user database, which a test must not change).
// Install the proxies with: scripts/services.sh install tinyproxy && scripts/services.sh install dante && scripts/services.sh install microsocks

const TINYPROXY = '/usr/bin/tinyproxy';
const DANTED = '/usr/sbin/danted';
const MICROSOCKS = '/usr/bin/microsocks';
const missing = [TINYPROXY, DANTED, MICROSOCKS].filter((p) => !existsSync(p));
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }];

let redisA: TestRedis;
let redisB: TestRedis;
let b: Gateway;
let net_: Awaited<ReturnType<typeof testNetwork>>;
let dir: string;
const running = new Set<ChildProcess>();

interface Proxy { port: number; log: string; stop: () => Promise<void> }

async function listening(port: number, ms = 10_000): Promise<void> {
  await waitFor(() => new Promise<boolean>((r) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); r(true); });
    s.on('error', () => r(false));
  }), ms, `a proxy listening on ${port}`);
}

async function startProcess(bin: string, args: string[], port: number, out: string): Promise<() => Promise<void>> {
  const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(p);
  let output = '';
  p.stdout!.on('data', (d) => { output += d; });
  p.stderr!.on('data', (d) => { output += d; });
  p.on('exit', () => writeFileSync(out, output));
  try {
    await listening(port);
  } catch (err) {
    p.kill();
    throw new Error(`${bin} did not start: ${output}`, { cause: err });
  }
  return async () => {
    if (p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((r) => { p.once('exit', () => r()); p.kill('SIGTERM'); });
    running.delete(p);
  };
}

/** tinyproxy on `port` (a fresh free one by default); CONNECT allowed only to `connectPorts`. */
async function startTinyproxy(o: { connectPorts: number[]; auth?: [string, string]; port?: number; name: string }): Promise<Proxy> {
  const port = o.port ?? await freePort();
  const log = join(dir, `${o.name}.log`);
  const conf = join(dir, `${o.name}.conf`);
  // Without any ConnectPort line tinyproxy allows CONNECT to every port; Debian's default allows 443 and 563.
  writeFileSync(conf, [`Port ${port}`, 'Listen 127.0.0.1', 'Timeout 60', `LogFile "${log}"`, 'LogLevel Connect', 'MaxClients 20', 'Allow 127.0.0.1',
    ...o.connectPorts.map((p) => `ConnectPort ${p}`), ...(o.auth ? [`BasicAuth ${o.auth[0]} ${o.auth[1]}`] : [])].join('\n') + '\n');
  const stop = await startProcess(TINYPROXY, ['-d', '-c', conf], port, join(dir, `${o.name}.out`));
  return { port, log, stop };
}

/** Dante's danted as a SOCKS5 server without authentication, passing (or, `block`, refusing) CONNECTs within 127.0.0.0/8. */
async function startDanted(o: { name: string; block?: boolean } = { name: 'danted' }): Promise<Proxy> {
  const port = await freePort();
  const log = join(dir, `${o.name}.log`);
  const conf = join(dir, `${o.name}.conf`);
  writeFileSync(conf, `logoutput: ${log}\ninternal: 127.0.0.1 port = ${port}\nexternal: 127.0.0.1\nsocksmethod: none\nclientmethod: none\n`
    + 'user.privileged: root\nuser.unprivileged: nobody\n'
    + 'client pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}\n'
    + `socks ${o.block ? 'block' : 'pass'} {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect error\n}\n`);
  const stop = await startProcess(DANTED, ['-f', conf], port, join(dir, `${o.name}.out`));
  return { port, log, stop };
}

/** microsocks on `port` (a fresh free one by default): SOCKS5 that takes only `user` with `password`. */
async function startMicrosocks(o: { name: string; user: string; password: string; port?: number }): Promise<Proxy> {
  const port = o.port ?? await freePort();
  const stop = await startProcess(MICROSOCKS, ['-i', '127.0.0.1', '-p', String(port), '-u', o.user, '-P', o.password], port, join(dir, `${o.name}.out`));
  return { port, log: join(dir, `${o.name}.out`), stop };
}

/** A Bank A gateway (own Redis prefix) whose peer bridges go through `proxy`. */
const sender = (prefix: string, proxy: Record<string, unknown>) => startTestGateway(redisA.url, {
  redis: { url: redisA.url, prefix }, permissions: PERMS,
  network: networkConfig(net_, 'bank-a', [{ alias: 'bank-b', allow: [] }], { port: 0, proxy }),
});
const atB = async (queue: string) => (await api(b.url, 'GET', `/api/queues/${enc(queue)}`, { user: 'ops' })).body as { depth: number; messages: { id: string; sender: unknown; body: unknown }[] };
const peerDetail = async (gw: Gateway) => ((await (await fetch(`${gw.url}/readyz`)).json()) as { checks: Record<string, { detail?: string }> }).checks['endpoint:peer']?.detail ?? '';
const send = async (gw: Gateway, queue: string, id: string) => {
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: `peer:bank-b/${queue}`, id, body: { id } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
};

before(async () => {
  if (missing.length) return;
  dir = mkdtempSync(join(tmpdir(), 'sb-proxy-'));
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  net_ = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  b = await startTestGateway(redisB.url, { permissions: PERMS, network: networkConfig(net_, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }]) });
});
after(async () => {
  await b?.stop();
  for (const p of running) if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
  await redisA?.dispose();
  await redisB?.dispose();
  if (net_) rmSync(net_.dir, { recursive: true, force: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const skip = missing.length ? `proxy binaries missing (${missing.join(', ')}): scripts/services.sh install tinyproxy; scripts/services.sh install dante; scripts/services.sh install microsocks` : false;

test('through an HTTP CONNECT proxy (tinyproxy, Basic auth): the message arrives signed and identity-checked, and the proxy logged the CONNECT', { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  const proxy = await startTinyproxy({ name: 'tinyproxy-auth', connectPorts: [peerPort], auth: ['alice', 's3cret'] });
  const a = await sender('via-http', { url: `http://127.0.0.1:${proxy.port}`, username: 'alice', password: 's3cret' });
  try {
    await send(a, 'inbound.http', 'via-http-1');
    const q = (await waitFor(async () => { const d = await atB('queue:inbound.http'); return d.depth === 1 ? d : undefined; }, 30_000, 'the message at bank B'))!;
    assert.deepEqual(q.messages[0]!.sender, { kind: 'peer', name: 'O=Bank A,L=London,C=GB', alias: 'bank-a' });
    assert.match(readFileSync(proxy.log, 'utf8'), new RegExp(`CONNECT 127\\.0\\.0\\.1:${peerPort} HTTP/1\\.1`));
  } finally {
    await a.stop();
    await proxy.stop();
  }
});

test('through a SOCKS5 proxy (danted): the message arrives, and the proxy logged the connect to the peer', { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  const proxy = await startDanted();
  const a = await sender('via-socks', { url: `socks5://127.0.0.1:${proxy.port}` });
  try {
    await send(a, 'inbound.socks', 'via-socks-1');
    const q = (await waitFor(async () => { const d = await atB('queue:inbound.socks'); return d.depth === 1 ? d : undefined; }, 30_000, 'the message at bank B'))!;
    assert.deepEqual(q.messages[0]!.sender, { kind: 'peer', name: 'O=Bank A,L=London,C=GB', alias: 'bank-a' });
    assert.match(readFileSync(proxy.log, 'utf8'), new RegExp(`tcp/connect .*-> .* 127\\.0\\.0\\.1\\.${peerPort}`));
  } finally {
    await a.stop();
    await proxy.stop();
  }
});

test("wrong proxy credentials: the message waits in the outbox and the bridge state names the proxy's refusal", { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  const proxy = await startTinyproxy({ name: 'tinyproxy-407', connectPorts: [peerPort], auth: ['alice', 's3cret'] });
  const a = await sender('bad-auth', { url: `http://127.0.0.1:${proxy.port}`, username: 'alice', password: 'wrong' });
  try {
    await send(a, 'inbound.auth', 'bad-auth-1');
    const detail = (await waitFor(async () => { const d = await peerDetail(a); return /refused/.test(d) ? d : undefined; }, 30_000, 'the refusal in the bridge state'))!;
    // RFC 9110 says 407 Proxy Authentication Required; tinyproxy 1.11 answers 401 Unauthorized. The
    // state quotes whatever the proxy said.
    assert.match(detail, new RegExp(`bank-b: down, outbox 1 \\(proxy http://127\\.0\\.0\\.1:${proxy.port} refused CONNECT to 127\\.0\\.0\\.1:${peerPort}: (407 Proxy Authentication Required|401 Unauthorized)\\)`));
    assert.doesNotMatch(detail, /wrong|s3cret/, 'no credentials in the state');
    assert.equal((await atB('queue:inbound.auth')).depth, 0);
  } finally {
    await a.stop();
    await proxy.stop();
  }
});

test('a proxy that refuses the peer port (tinyproxy without its ConnectPort): the message waits, the state names the 403; once the proxy is fixed it is delivered once', { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  let proxy = await startTinyproxy({ name: 'tinyproxy-403', connectPorts: [443, 563] });
  const a = await sender('refused', { url: `http://127.0.0.1:${proxy.port}` });
  try {
    await send(a, 'inbound.refused', 'refused-1');
    const detail = (await waitFor(async () => { const d = await peerDetail(a); return /refused/.test(d) ? d : undefined; }, 30_000, 'the refusal in the bridge state'))!;
    assert.match(detail, new RegExp(`proxy http://127\\.0\\.0\\.1:${proxy.port} refused CONNECT to 127\\.0\\.0\\.1:${peerPort}: 403 `));
    assert.match(detail, /outbox 1/);
    assert.equal((await atB('queue:inbound.refused')).depth, 0);
    // The proxy's admin fixes the rule (same address): the bridge's next try goes through.
    await proxy.stop();
    proxy = await startTinyproxy({ name: 'tinyproxy-fixed', connectPorts: [peerPort], port: proxy.port });
    const q = (await waitFor(async () => { const d = await atB('queue:inbound.refused'); return d.depth >= 1 ? d : undefined; }, 90_000, 'delivery after the fix'))!;
    await waitFor(async () => /outbox 0/.test(await peerDetail(a)), 30_000, 'the outbox empty');
    assert.deepEqual(q.messages.map((m) => m.id), ['refused-1']);
    assert.equal((await atB('queue:inbound.refused')).depth, 1, 'delivered once');
  } finally {
    await a.stop();
    await proxy.stop();
  }
});

test("a SOCKS5 proxy whose rules refuse the peer (danted 'socks block'): the message waits and the state gives the SOCKS reply", { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  const proxy = await startDanted({ name: 'danted-block', block: true });
  const a = await sender('socks-block', { url: `socks5://127.0.0.1:${proxy.port}` });
  try {
    await send(a, 'inbound.blocked', 'blocked-1');
    const detail = (await waitFor(async () => { const d = await peerDetail(a); return /refused/.test(d) ? d : undefined; }, 30_000, 'the refusal in the bridge state'))!;
    assert.match(detail, new RegExp(`outbox 1 \\(proxy socks5://127\\.0\\.0\\.1:${proxy.port} refused CONNECT to 127\\.0\\.0\\.1:${peerPort}: connection not allowed by ruleset\\)`));
    assert.equal((await atB('queue:inbound.blocked')).depth, 0);
  } finally {
    await a.stop();
    await proxy.stop();
  }
});

test('through a SOCKS5 proxy with username/password (RFC 1929, microsocks): nothing passes while the proxy is away, then the message arrives once, signed and identity-checked', { skip }, async () => {
  const port = await freePort();
  const a = await sender('socks-auth', { url: `socks5://127.0.0.1:${port}`, username: 'alice', password: 's3cret' });
  let proxy: Proxy | undefined;
  try {
    await send(a, 'inbound.socks-auth', 'socks-auth-1');
    // The bridge dials only the proxy: with the proxy away the message waits, so what arrives later came through it.
    const away = (await waitFor(async () => { const d = await peerDetail(a); return /unreachable/.test(d) ? d : undefined; }, 30_000, 'the bridge to find the proxy away'))!;
    assert.match(away, new RegExp(`proxy socks5://127\\.0\\.0\\.1:${port} unreachable`));
    assert.equal((await atB('queue:inbound.socks-auth')).depth, 0);
    proxy = await startMicrosocks({ name: 'microsocks-auth', user: 'alice', password: 's3cret', port });
    const q = (await waitFor(async () => { const d = await atB('queue:inbound.socks-auth'); return d.depth >= 1 ? d : undefined; }, 90_000, 'the message at bank B'))!;
    await waitFor(async () => /outbox 0/.test(await peerDetail(a)), 30_000, 'the outbox empty');
    assert.deepEqual(q.messages.map((m) => m.id), ['socks-auth-1']);
    assert.deepEqual(q.messages[0]!.sender, { kind: 'peer', name: 'O=Bank A,L=London,C=GB', alias: 'bank-a' });
  } finally {
    await a.stop();
    await proxy?.stop();
  }
});

test('SOCKS5 with a wrong password: the state names the proxy and the refusal (never the credentials), nothing reaches the peer', { skip }, async () => {
  const peerPort = net_.nodes['bank-b']!.port;
  const proxy = await startMicrosocks({ name: 'microsocks-wrong', user: 'alice', password: 's3cret' });
  const a = await sender('socks-wrong', { url: `socks5://127.0.0.1:${proxy.port}`, username: 'alice', password: 'guessed-wrong' });
  try {
    await send(a, 'inbound.socks-wrong', 'socks-wrong-1');
    const detail = (await waitFor(async () => { const d = await peerDetail(a); return /refused/.test(d) ? d : undefined; }, 30_000, 'the refusal in the bridge state'))!;
    assert.match(detail, new RegExp(`bank-b: down, outbox 1 \\(proxy socks5://127\\.0\\.0\\.1:${proxy.port} refused CONNECT to 127\\.0\\.0\\.1:${peerPort}: username/password rejected\\)`));
    assert.doesNotMatch(detail, /alice|guessed-wrong|s3cret/, 'no credentials in the state');
    // A few more tries (backoff) change nothing: still refused, still nothing at B.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal((await atB('queue:inbound.socks-wrong')).depth, 0);
    assert.match(await peerDetail(a), /outbox 1 .*username\/password rejected/);
  } finally {
    await a.stop();
    await proxy.stop();
  }
});
