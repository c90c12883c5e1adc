/**
 * Redis Cluster (issue 15.1, DESIGN §9): a real 3-master cluster (redis-server --cluster-enabled,
 * `redis-cli --cluster create`), with a password from the environment.
 * - A cluster node written as redis.url is refused at start with what to write instead.
 * - redis.cluster.nodes: the gateway connects, and a message sent through the HTTP API is received
 *   and acknowledged through the HTTP API. (Slot-safe scripts everywhere are issue 15's other points;
 *   this proves config, connection and the queue path.)
 * Every server is stopped by PID.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { freePort, redisServerBinary } from '../../src/store/embedded-redis.ts';
import { api, testConfig, waitFor, type ApiResponse } from '../support/gateway.ts';

const PASSWORD = 'cluster-test-pw-1234';
const dir = mkdtempSync(join(tmpdir(), 'sb-cluster-'));
const nodes: { port: number; child: ChildProcess }[] = [];
let gw: Gateway | undefined;

before(async () => {
  const bin = redisServerBinary();
  assert.ok(bin, 'redis-server is installed');
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    mkdirSync(join(dir, String(port)));
    const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', join(dir, String(port)), '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--appendonly', 'yes', '--save', '', '--maxmemory-policy', 'noeviction', '--requirepass', PASSWORD, '--masterauth', PASSWORD], { stdio: 'ignore' });
    nodes.push({ port, child });
  }
  for (const n of nodes) {
    await waitFor(async () => spawnSync('redis-cli', ['-p', String(n.port), '-a', PASSWORD, '--no-auth-warning', 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 15_000, `cluster node ${n.port}`);
  }
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes', '-a', PASSWORD, '--no-auth-warning'], { encoding: 'utf8' });
  assert.match(create.stdout, /All 16384 slots covered/, create.stdout + create.stderr);
  await waitFor(async () => spawnSync('redis-cli', ['-p', String(nodes[0]!.port), '-a', PASSWORD, '--no-auth-warning', 'cluster', 'info'], { encoding: 'utf8' }).stdout.includes('cluster_state:ok'), 15_000, 'cluster_state:ok');
});

after(async () => {
  await gw?.stop();
  await Promise.all(nodes.map(async (n) => {
    if (n.child.exitCode === null && n.child.signalCode === null) {
      const exited = new Promise((r) => n.child.once('exit', r));
      n.child.kill('SIGTERM');
      await exited;
    }
  }));
  rmSync(dir, { recursive: true, force: true });
});

async function config(redis: Record<string, unknown>) {
  const raw = await testConfig('unused', { redis });
  return parseConfig(stringify(raw), 'cluster-test.yaml', { REDIS_PASSWORD: PASSWORD });
}

test('a cluster node given as redis.url is refused at start, saying to write redis.cluster.nodes instead', async () => {
  const url = `redis://:${PASSWORD}@127.0.0.1:${nodes[0]!.port}`;
  await assert.rejects(startGateway({ config: await config({ url }), log: createLogger('silent') }), (err: Error) => {
    assert.match(err.message, /this Redis is a cluster node: write redis\.cluster\.nodes: \[.*\] instead of redis\.url/);
    assert.ok(!err.message.includes(PASSWORD), 'the password is not in the message');
    return true;
  });
});

test('redis.cluster.nodes with the password from ${REDIS_PASSWORD}: the gateway starts, and a message goes in and out through the HTTP API', { timeout: 120_000 }, async (t) => {
  const c = await config({ cluster: { nodes: nodes.map((n) => `redis://127.0.0.1:${n.port}`) }, password: '${REDIS_PASSWORD}', prefix: 'cl' });
  assert.equal(c.redis.password, PASSWORD);
  gw = await startGateway({ config: c, log: createLogger('warn') });
  const sent: ApiResponse = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:cluster.orders', id: 'c-1', body: { n: 1 } } });
  t.diagnostic(`send: ${sent.status} ${JSON.stringify(sent.body)}`);
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const received = await waitFor(async () => {
    const r: ApiResponse = await api(gw!.url, 'POST', '/api/queues/queue:cluster.orders/receive', { user: 'ops', body: { max: 10, leaseSeconds: 30 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.messages.length > 0 ? r.body.messages as { id: string; lease: string; body: unknown }[] : undefined;
  }, 20_000, 'the message to be received') as { id: string; lease: string; body: unknown }[];
  assert.deepEqual(received.map((m) => [m.id, m.body]), [['c-1', { n: 1 }]]);
  const acked: ApiResponse = await api(gw.url, 'POST', '/api/queues/queue:cluster.orders/ack', { user: 'ops', body: { leases: received.map((m) => m.lease) } });
  assert.equal(acked.status, 200, JSON.stringify(acked.body));
  assert.equal(acked.body.acked, 1);
});
