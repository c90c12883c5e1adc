/**
 * The private redis-server (no redis.url): stopping is as reliable as running (issue 15.7) and
 * exactly one Redis per data folder, ever; its password is random, kept 0600 and reused (issue 13).
 *
 * - SIGTERM and SIGINT sent to the whole process group of `switchboard start` (what Ctrl-C and
 *   systemd's KillMode=control-group do to the group): the gateway exits 0 within its drain time
 *   and its redis-server is gone.
 * - kill -9 of the gateway three times, restarting each time: one redis-server for the folder
 *   (checked with ps and /proc/<pid>/cwd), the orphan adopted, data kept.
 *
 * Real processes; every test stops what it started, by PID.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, testConfig } from '../support/gateway.ts';

/** Within this the gateway must have drained and exited (http 5 s + routes + Redis stop). */
const DRAIN_MS = 20_000;
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs');
const started: ChildProcess[] = [];
const dirs: string[] = [];

after(async () => {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) {
    for (const pid of redisServersFor(join(d, 'redis'))) process.kill(pid, 'SIGKILL');
    rmSync(d, { recursive: true, force: true });
  }
});

/** Live (not zombie) redis-server processes whose working folder is `dataDir`. */
function redisServersFor(dataDir: string): number[] {
  const ps = spawnSync('ps', ['-eo', 'pid=,stat=,comm='], { encoding: 'utf8' }).stdout;
  return ps.split('\n').map((l) => l.trim().split(/\s+/)).filter(([, stat, comm]) => comm?.startsWith('redis-server') && !stat?.startsWith('Z')).map(([pid]) => Number(pid)).filter((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/cwd`) === dataDir;
    } catch {
      return false;
    }
  });
}

interface Started { child: ChildProcess; url: string; output: () => string; exited: Promise<{ code: number | null; at: number }> }

/** `switchboard start` in its own process group (detached), so the test can signal the whole group. */
async function startGateway(dir: string, configFile: string, port: number): Promise<Started> {
  const child = spawn(process.execPath, [BIN, 'start', '--config', configFile], { cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  child.stderr!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  const exited = new Promise<{ code: number | null; at: number }>((r) => child.once('exit', (code) => r({ code, at: Date.now() })));
  const url = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 100))) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}: ${out}`);
    if (Date.now() > deadline) throw new Error(`gateway not ready after 30 s: ${out}`);
    if (await fetch(`${url}/readyz`).then((r) => r.status === 200, () => false)) break;
  }
  return { child, url, output: () => out, exited };
}

async function setUp(name: string): Promise<{ dir: string; dataDir: string; configFile: string; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), `sb-embedded-${name}-`));
  dirs.push(dir);
  const port = await freePort();
  const raw = await testConfig('unused', { log: { level: 'info' } });
  raw.http = { port, host: '127.0.0.1' };
  raw.redis = { dataDir: join(dir, 'redis'), prefix: 'emb' };
  const configFile = join(dir, 'switchboard.yaml');
  writeFileSync(configFile, stringify(raw));
  return { dir, dataDir: join(dir, 'redis'), configFile, port };
}

/**
 * Signals the gateway's whole process group and waits: it must exit 0 within its drain time and
 * leave no redis-server for its data folder (killed after DRAIN_MS + 30 s so a hang fails by name).
 */
async function signalAndExpectCleanExit(t: TestContext, gw: Started, dataDir: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const sentAt = Date.now();
  process.kill(-gw.child.pid!, signal); // the group: the gateway and anything left in it
  const timer = setTimeout(() => gw.child.kill('SIGKILL'), DRAIN_MS + 30_000);
  const { code, at } = await gw.exited;
  clearTimeout(timer);
  t.diagnostic(`exited with ${code} after ${at - sentAt} ms`);
  assert.equal(code, 0, `exit code after ${signal} to the group; output:\n${gw.output()}`);
  assert.ok(at - sentAt < DRAIN_MS, `exited after ${at - sentAt} ms, drain time ${DRAIN_MS} ms; output:\n${gw.output()}`);
  assert.deepEqual(redisServersFor(dataDir), [], 'the embedded redis-server is gone after the gateway exited');
}

const send = (url: string, id: string) => api(url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:emb.kept', id, body: { id } } });

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} to the whole process group: the gateway exits 0 within its drain time and its redis-server is gone`, { timeout: 90_000 }, async (t) => {
    const { dir, dataDir, configFile, port } = await setUp(signal.toLowerCase());
    const gw = await startGateway(dir, configFile, port);
    assert.equal((await send(gw.url, `${signal}-1`)).status, 202);
    const redisPids = redisServersFor(dataDir);
    assert.equal(redisPids.length, 1, `one redis-server for ${dataDir}: ${JSON.stringify(redisPids)}`);

    await signalAndExpectCleanExit(t, gw, dataDir, signal);
    assert.equal(spawnSync('ps', ['-o', 'stat=', '-p', String(redisPids[0])], { encoding: 'utf8' }).stdout.trim().replace(/^Z.*/, ''), '', 'not running (a zombie nobody reaps counts as gone)');
  });
}

/** A gateway that has stored a message, and then its redis-server alone is sent SIGTERM. */
async function gatewayWhoseRedisEnds(name: string): Promise<{ gw: Started; dataDir: string }> {
  const { dir, dataDir, configFile, port } = await setUp(name);
  const gw = await startGateway(dir, configFile, port);
  assert.equal((await send(gw.url, `${name}-1`)).status, 202);
  const [redisPid] = redisServersFor(dataDir);
  process.kill(redisPid!, 'SIGTERM');
  return { gw, dataDir };
}

test('the redis-server stops first (SIGTERM to it alone): the gateway starts it again on its data and still exits 0 within its drain time', { timeout: 90_000 }, async (t) => {
  const { gw, dataDir } = await gatewayWhoseRedisEnds('redisfirst');
  await signalAndExpectCleanExit(t, gw, dataDir);
});

test('stopped while it starts its ended redis-server again (its clients waiting to reconnect): the gateway exits 0 within its drain time and stops the new server too', { timeout: 90_000 }, async (t) => {
  const { gw, dataDir } = await gatewayWhoseRedisEnds('midrestart');
  // The stop comes as soon as the gateway has seen the end: its Redis clients retry ~200 ms later.
  for (const deadline = Date.now() + 10_000; !/the private redis-server ended/.test(gw.output()); await new Promise((r) => setTimeout(r, 5))) {
    assert.ok(Date.now() < deadline, `the gateway did not notice its redis-server ended; output:\n${gw.output()}`);
  }
  await signalAndExpectCleanExit(t, gw, dataDir);
});

test('kill -9 of the gateway three times: one redis-server per data folder, the orphan adopted, data kept, password 0600 and reused', { timeout: 180_000 }, async (t) => {
  const { dir, dataDir, configFile, port } = await setUp('kill9');
  let gw = await startGateway(dir, configFile, port);
  const passwordFile = join(dataDir, 'switchboard-redis.password');
  const password = readFileSync(passwordFile, 'utf8');
  assert.equal(statSync(passwordFile).mode & 0o777, 0o600, 'password file mode');
  const firstRedis = redisServersFor(dataDir);
  assert.equal(firstRedis.length, 1);

  const ids: string[] = [];
  for (let round = 1; round <= 3; round++) {
    const id = `kill9-${round}`;
    assert.equal((await send(gw.url, id)).status, 202);
    ids.push(id);
    gw.child.kill('SIGKILL');
    await gw.exited;
    const orphans = redisServersFor(dataDir);
    assert.equal(orphans.length, 1, `round ${round}: the redis-server outlives a kill -9 of its gateway (an orphan holding the AOF)`);

    gw = await startGateway(dir, configFile, port);
    const now = redisServersFor(dataDir);
    t.diagnostic(`round ${round}: orphan ${orphans[0]}, after restart ${JSON.stringify(now)}`);
    assert.deepEqual(now, orphans, `round ${round}: exactly one redis-server for the folder, the orphan adopted; output:\n${gw.output()}`);
    assert.match(gw.output(), /left running by an earlier gateway/);
    assert.equal(readFileSync(passwordFile, 'utf8'), password, 'the password is reused');
  }

  // The data survived: every message sent before each kill is in the queue.
  const r = await api(gw.url, 'GET', '/api/queues/queue:emb.kept', { user: 'ops' });
  assert.equal(r.status, 200);
  assert.equal(r.body.depth, ids.length);
  assert.deepEqual((r.body.messages as { id: string }[]).map((m) => m.id).sort(), ids.sort());

  // The embedded Redis requires its password (issue 13).
  const lock = JSON.parse(readFileSync(join(dataDir, 'switchboard-redis.lock.json'), 'utf8')) as { port: number };
  const anonymous = new Redis({ host: '127.0.0.1', port: lock.port, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  anonymous.on('error', () => {});
  await anonymous.connect();
  await assert.rejects(anonymous.get('x'), /NOAUTH/);
  anonymous.disconnect();

  process.kill(gw.child.pid!, 'SIGTERM');
  assert.equal((await gw.exited).code, 0, gw.output());
  assert.deepEqual(redisServersFor(dataDir), []);
});
