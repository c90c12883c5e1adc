import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { isPasswordHash, verifyPassword } from '../../src/auth/password.ts';
import type { Subscription } from '../../src/core/endpoint.ts';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, testConfig, waitFor, USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

// The real CLI (`node bin/switchboard.mjs …`) against an in-process gateway: it goes through the
// HTTP API like any client, prints JSON, and exits 0 (ok), 1 (failed) or 2 (usage).

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');

let redis: TestRedis;
let gw: Gateway;
let dir: string;
const children = new Set<ChildProcess>();
before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
  dir = mkdtempSync(join(tmpdir(), 'sb-cli-'));
});
after(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
  await gw?.stop();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** A clean environment: nothing from the developer's shell decides which gateway or config is used. */
function baseEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SWITCHBOARD_URL', 'SWITCHBOARD_USER', 'SWITCHBOARD_PASSWORD', 'SWITCHBOARD_CONFIG', 'SWITCHBOARD_TOKEN', 'SWITCHBOARD_REDIS_URL', 'NODE_OPTIONS']) delete env[k];
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

function cli(args: string[], opts: { user?: keyof typeof USERS | null; url?: string; password?: string; input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const user = opts.user === undefined ? 'ops' : opts.user;
  const env = baseEnv({
    SWITCHBOARD_URL: opts.url ?? gw.url,
    SWITCHBOARD_USER: user ?? undefined,
    SWITCHBOARD_PASSWORD: opts.password ?? (user ? USERS[user] : undefined),
    ...opts.env,
  });
  return new Promise((res, rej) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      if (err && code === -1) return rej(new Error(`the CLI did not run: ${err.message}\n${stderr}`));
      res({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

function json(r: Run): any {
  assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function assertNoStack(text: string): void {
  assert.doesNotMatch(text, /^\s+at /m, `a stack trace in: ${text}`);
}

async function browse(address: string) {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as { depth: number; inFlight: number; messages: any[] };
}

async function deadLetter(address: string, id: string, body: unknown): Promise<void> {
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, body } })).status, 202);
  const sub: Subscription = await gw.router.consume(address, async () => {
    throw new Error('the CLI test consumer always fails');
  }, { maxInFlight: 1 }, SYSTEM_CALLER);
  try {
    await waitFor(async () => (await api(gw.url, 'GET', `/api/dlq/${enc(address)}`, { user: 'ops' })).body.messages?.some((m: { id: string }) => m.id === id), 30_000, `${id} to be dead-lettered`);
  } finally {
    await sub.close();
  }
}

test('send --json prints {id, duplicate}; the message carries body, headers and the CLI user as sender', async () => {
  const q = 'queue:cli.orders';
  const r = await cli(['send', q, '--json', '{"order":7,"items":["a","b"]}', '--id', 'cli-order-7', '--header', 'kind=order', '--correlation-id', 'corr-7']);
  assert.deepEqual(json(r), { id: 'cli-order-7', duplicate: false });
  const again = await cli(['send', q, '--json', '{"order":7}', '--id', 'cli-order-7']);
  assert.deepEqual(json(again), { id: 'cli-order-7', duplicate: true });

  const b = await browse(q);
  assert.equal(b.depth, 1);
  const [m] = b.messages;
  assert.equal(m.id, 'cli-order-7');
  assert.deepEqual(m.body, { order: 7, items: ['a', 'b'] });
  assert.deepEqual(m.headers, { kind: 'order' });
  assert.equal(m.correlationId, 'corr-7');
  assert.deepEqual(m.sender, { kind: 'user', name: 'ops' });

  const asClerk = await cli(['send', 'queue:in.cli', '--json', '"hello"'], { user: 'clerk' });
  const { id } = json(asClerk);
  const inbox = await browse('queue:in.cli');
  assert.deepEqual(inbox.messages.map((x) => [x.id, x.body, x.sender.name]), [[id, 'hello', 'clerk']]);
});

test('send --file reads the body from a file, or from stdin with -', async () => {
  const q = 'queue:cli.files';
  const file = join(dir, 'body.json');
  writeFileSync(file, JSON.stringify({ from: 'file', n: [1, 2, 3] }));
  const r = json(await cli(['send', q, '--file', file, '--id', 'from-file']));
  assert.deepEqual(r, { id: 'from-file', duplicate: false });
  const s = json(await cli(['send', q, '--file', '-', '--id', 'from-stdin'], { input: '{"from":"stdin"}\n' }));
  assert.deepEqual(s, { id: 'from-stdin', duplicate: false });
  const b = await browse(q);
  assert.deepEqual(b.messages.map((m) => [m.id, m.body]), [['from-file', { from: 'file', n: [1, 2, 3] }], ['from-stdin', { from: 'stdin' }]]);
});

test('receive prints one JSON line per message and acknowledges them', async () => {
  const q = 'queue:cli.receive';
  for (const n of [1, 2, 3]) json(await cli(['send', q, '--json', JSON.stringify({ n }), '--id', `rcv-${n}`]));
  const r = await cli(['receive', q, '--max', '2']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((m) => [m.id, m.body]), [['rcv-1', { n: 1 }], ['rcv-2', { n: 2 }]]);
  for (const m of lines) assert.equal(typeof m.lease, 'string');
  // Acknowledged: gone, not in flight.
  let b = await browse(q);
  assert.equal(b.depth, 1);
  assert.equal(b.inFlight, 0);

  const rest = await cli(['receive', q]);
  assert.deepEqual(rest.stdout.trim().split('\n').map((l) => JSON.parse(l).id), ['rcv-3']);
  b = await browse(q);
  assert.equal(b.depth, 0);
  assert.equal(b.inFlight, 0);

  const none = await cli(['receive', q]);
  assert.equal(none.code, 0, none.stderr);
  assert.equal(none.stdout, '');
});

test('receive --peek leaves the message leased; it comes back after the lease', async () => {
  const q = 'queue:cli.peek';
  json(await cli(['send', q, '--json', '{"peek":true}', '--id', 'peek-1']));
  const r = await cli(['receive', q, '--peek', '--lease', '1']);
  assert.equal(r.code, 0, r.stderr);
  const [line, ...more] = r.stdout.trim().split('\n');
  assert.equal(more.length, 0);
  const m = JSON.parse(line!);
  assert.equal(m.id, 'peek-1');
  assert.deepEqual(m.body, { peek: true });

  const back = await waitFor(async () => {
    const got = await api(gw.url, 'POST', `/api/queues/${enc(q)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 60 } });
    return got.body.messages?.[0];
  }, 30_000, 'the peeked message to come back after its lease');
  assert.equal(back.id, 'peek-1');
  const ack = await api(gw.url, 'POST', `/api/queues/${enc(q)}/ack`, { user: 'ops', body: { leases: [back.lease] } });
  assert.deepEqual(ack.body, { acked: 1, expired: [] });
});

test('browse prints the depth and the first messages', async () => {
  const q = 'queue:cli.browse';
  for (const n of [1, 2, 3]) json(await cli(['send', q, '--json', String(n), '--id', `br-${n}`]));
  const all = json(await cli(['browse', q]));
  assert.equal(all.address, q);
  assert.equal(all.depth, 3);
  assert.deepEqual(all.messages.map((m: { id: string }) => m.id), ['br-1', 'br-2', 'br-3']);
  const first = json(await cli(['browse', q, '--limit', '1']));
  assert.equal(first.depth, 3);
  assert.deepEqual(first.messages.map((m: { id: string }) => m.id), ['br-1']);
  assert.equal((await browse(q)).depth, 3, 'browsing takes nothing');
});

test('dlq ls lists dead letters; dlq replay --id and dlq replay move them back', async () => {
  const q = 'queue:cli.dead';
  await deadLetter(q, 'dead-1', { n: 1 });
  await deadLetter(q, 'dead-2', { n: 2 });

  const ls = json(await cli(['dlq', 'ls', q]));
  assert.equal(ls.address, `dlq:${q}`);
  assert.equal(ls.depth, 2);
  assert.deepEqual(ls.messages.map((m: { id: string }) => m.id).sort(), ['dead-1', 'dead-2']);
  for (const m of ls.messages) {
    assert.equal(m.deadLetter.attempts, 3);
    assert.match(m.deadLetter.reason, /always fails/);
  }

  assert.deepEqual(json(await cli(['dlq', 'replay', q, '--id', 'dead-2'])), { replayed: 1 });
  assert.deepEqual(json(await cli(['dlq', 'ls', q])).messages.map((m: { id: string }) => m.id), ['dead-1']);
  assert.deepEqual((await browse(q)).messages.map((m) => m.id), ['dead-2']);

  assert.deepEqual(json(await cli(['dlq', 'replay', q])), { replayed: 1 });
  assert.equal(json(await cli(['dlq', 'ls', q])).depth, 0);
  const got = await cli(['receive', q, '--max', '10']);
  assert.deepEqual(got.stdout.trim().split('\n').map((l) => JSON.parse(l).id).sort(), ['dead-1', 'dead-2']);
  assert.equal((await browse(q)).depth, 0);

  // Permissions apply to the CLI as to everyone: clerk may not replay on this queue.
  await deadLetter(q, 'dead-3', 3);
  const denied = await cli(['dlq', 'replay', q], { user: 'clerk' });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /403: user:clerk may not send on queue:cli\.dead/);
  assert.equal(json(await cli(['dlq', 'ls', q])).depth, 1);
});

test('can explains a decision (as the admin ops); a non-admin is refused', async () => {
  const yes = json(await cli(['can', 'ops', 'send', 'queue:orders.eu']));
  assert.equal(yes.allowed, true);
  assert.equal(yes.verb, 'send');
  assert.equal(yes.address, 'queue:orders.eu');
  assert.equal(yes.user, 'ops');
  assert.equal(yes.rule.group, 'ops');
  assert.equal(yes.rule.address, 'queue:**');

  const clerk = json(await cli(['can', 'clerk', 'send', 'queue:in.payments']));
  assert.equal(clerk.allowed, true);
  assert.equal(clerk.rule.address, 'queue:in.*');
  const clerkDeep = json(await cli(['can', 'clerk', 'send', 'queue:in.payments.eu']));
  assert.equal(clerkDeep.allowed, false);
  assert.equal(clerkDeep.rule, undefined);

  const no = json(await cli(['can', 'nobody', 'browse', 'queue:orders']));
  assert.equal(no.allowed, false);
  assert.equal(no.rule, undefined);

  const notAdmin = await cli(['can', 'ops', 'send', 'queue:orders'], { user: 'clerk' });
  assert.equal(notAdmin.code, 1);
  assert.match(notAdmin.stderr, /403: user:clerk may not admin on queue:orders/);
  assertNoStack(notAdmin.stderr);

  const unknown = await cli(['can', 'ghost', 'send', 'queue:orders']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /404: .*ghost/);
});

test('gateway errors are printed as one clear line with exit 1', async () => {
  const bad = await cli(['send', 'foo:bar', '--json', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^switchboard: 400: invalid address 'foo:bar': unknown scheme 'foo'/);
  assertNoStack(bad.stderr);

  const wrongPw = await cli(['browse', 'queue:cli.orders'], { password: 'wrong-password' });
  assert.equal(wrongPw.code, 1);
  assert.match(wrongPw.stderr, /401: invalid user name or password/);
  assert.equal(wrongPw.stdout, '');

  const noUser = await cli(['browse', 'queue:cli.orders'], { user: null });
  assert.equal(noUser.code, 1);
  assert.match(noUser.stderr, /401: authentication required/);
});

test('check-config accepts a good file and lists every problem of a bad one, naming file and path', async () => {
  const good = join(dir, 'good.yaml');
  writeFileSync(good, stringify(await testConfig(redis.url)));
  const ok = await cli(['check-config', good], { user: null });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, new RegExp(`^${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: OK`));

  const badFile = join(dir, 'bad.yaml');
  const raw = await testConfig(redis.url);
  (raw.http as Record<string, unknown>).port = 70000;
  (raw.queues as Record<string, unknown>).backoff = 'soon';
  raw.routes = [{ from: 'queue:a', to: 'nowhere' }];
  raw.bogus = true;
  writeFileSync(badFile, stringify(raw));
  const bad = await cli(['check-config', badFile], { user: null });
  assert.notEqual(bad.code, 0);
  assert.equal(bad.stdout, '');
  assertNoStack(bad.stderr);
  assert.ok(bad.stderr.includes(badFile), `the output names the file: ${bad.stderr}`);
  // One line per problem, each naming the file and the path inside it.
  const problems = bad.stderr.split('\n').filter((l) => l.startsWith(`${badFile}: `) && !/problem\(s\)/.test(l));
  const paths = ['http.port', 'queues.backoff', 'routes[0].to', 'bogus'];
  assert.equal(problems.length, paths.length, `one line per problem:\n${bad.stderr}`);
  for (const p of paths) assert.equal(problems.filter((l) => l.includes(`${badFile}: ${p}:`)).length, 1, `one line naming ${p}:\n${bad.stderr}`);
  assert.ok(problems.some((l) => l.includes('routes[0].to') && l.includes('"nowhere"')), 'the problem says what was found');

  const missing = await cli(['check-config', join(dir, 'no-such.yaml')], { user: null });
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /no-such\.yaml.*file not found/s);

  // SWITCHBOARD_CONFIG names the file when no argument is given.
  const viaEnv = await cli(['check-config'], { user: null, env: { SWITCHBOARD_CONFIG: good } });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.ok(viaEnv.stdout.startsWith(`${good}: OK`));
});

test('hash-password reads stdin and prints a hash that verifies; empty stdin is a usage error', async () => {
  const r = await cli(['hash-password'], { user: null, input: 'correct horse battery\n' });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n').filter(Boolean);
  assert.equal(lines.length, 1);
  const hash = lines[0]!;
  assert.ok(isPasswordHash(hash), hash);
  assert.equal(await verifyPassword('correct horse battery', hash), true);
  assert.equal(await verifyPassword('correct horse battery\n', hash), false, 'the trailing newline is not part of the password');
  assert.equal(await verifyPassword('wrong', hash), false);

  const again = await cli(['hash-password'], { user: null, input: 'correct horse battery' });
  assert.notEqual(again.stdout.trim(), hash, 'salted: the same password hashes differently');
  assert.equal(await verifyPassword('correct horse battery', again.stdout.trim()), true);

  const empty = await cli(['hash-password'], { user: null, input: '' });
  assert.equal(empty.code, 2);
  assert.match(empty.stderr, /no password on stdin/);
});

test('--help on a subcommand shows its usage', async () => {
  const send = await cli(['send', '--help'], { user: null });
  assert.equal(send.code, 0);
  assert.match(send.stdout, /Usage: switchboard send \[options\] <address>/);
  for (const o of ['--json', '--file', '--id', '--header']) assert.ok(send.stdout.includes(o), `send --help mentions ${o}`);
  const replay = await cli(['dlq', 'replay', '--help'], { user: null });
  assert.equal(replay.code, 0);
  assert.match(replay.stdout, /Usage: switchboard dlq replay/);
  assert.ok(replay.stdout.includes('--id'));
});

test('an unreachable gateway is a clear one-line error and exit 1', async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const r = await cli(['browse', 'queue:x'], { url });
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, new RegExp(`cannot reach the gateway at ${url.replace(/[.]/g, '\\.')}`));
  assert.match(r.stderr, /ECONNREFUSED/);
  assert.match(r.stderr, /SWITCHBOARD_URL/);
  assertNoStack(r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

test('usage errors exit 2 and change nothing', async () => {
  const q = 'queue:cli.usage';
  const cases: [string[], RegExp, string?][] = [
    [['send', q], /exactly one of --json or --file/],
    [['send', q, '--json', '1', '--file', join(dir, 'body.json')], /exactly one of --json or --file/],
    [['send', q, '--json', '{not json'], /the body is not valid JSON/],
    [['send', q, '--json', '1', '--header', 'no-equals-sign'], /--header 'no-equals-sign': expected key=value/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.stderr}`);
    assert.match(r.stderr, message);
    assertNoStack(r.stderr);
  }
  assert.equal((await browse(q)).depth, 0);
});

test('start honours SWITCHBOARD_CONFIG, gets ready, and exits 0 on SIGTERM', async () => {
  const port = await freePort();
  const raw = await testConfig(redis.url);
  (raw.http as Record<string, unknown>).port = port;
  (raw.log as Record<string, unknown>).level = 'info';
  const file = join(dir, 'start.yaml');
  writeFileSync(file, stringify(raw));
  const child = spawn(process.execPath, [BIN, 'start'], { cwd: ROOT, env: baseEnv({ SWITCHBOARD_CONFIG: file }), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;

  const ready = await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`the gateway exited with ${child.exitCode}: ${out}`);
    try {
      const r = await fetch(`${url}/readyz`);
      return r.status === 200 ? ((await r.json()) as { status: string }) : undefined;
    } catch {
      return undefined;
    }
  }, 60_000, `the gateway from ${file} to be ready on port ${port}`);
  assert.equal(ready!.status, 'ready');

  // It is the test config that runs: its user clerk (not in the demo config) may send to queue:in.*.
  const sent = await api(url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.started', body: 'hi' } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  assert.match(out, new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'the log names the config file');

  child.kill('SIGTERM');
  assert.equal(await exited, 0, `exit code after SIGTERM; output: ${out.slice(-2000)}`);
  children.delete(child);
  await assert.rejects(fetch(`${url}/healthz`), 'no longer listening');
});
