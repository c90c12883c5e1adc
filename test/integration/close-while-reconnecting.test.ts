/**
 * A stop that comes while a Redis client waits to reconnect (its server just ended, its next try
 * is ~200 ms away) finishes at once: ioredis alone never ends such a client, and BullMQ's
 * Worker.close() waited for that forever (src/store/ioredis-end-on-disconnect.ts). Real
 * redis-server, killed and started again on its port; the clients are the gateway's own settings.
 * A cluster client closes too when every node is gone and it waits to reconnect, and once closed
 * it stays ended (ioredis set it back to 'close', where a command waits forever); so workers on a
 * cluster whose master was just killed close. A real Redis Cluster.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { Queue, Worker } from 'bullmq';
import { createRedisClient, keySlot, openRedis } from '../../src/store/redis.ts';
import { startTestCluster, type TestCluster } from '../support/redis-cluster.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { waitFor } from '../support/gateway.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const servers: TestRedis[] = [];
const clusters: TestCluster[] = [];
after(async () => {
  for (const s of servers) await s.dispose();
  for (const c of clusters) await c.stop();
});

/** Resolves true if `p` settles within `ms`. */
const within = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);

/** A private cluster (stopped after the file) and a connected client with the gateway's settings. */
async function connectedCluster(o: { masters: number; replicas?: number }) {
  const cluster = await startTestCluster(o);
  clusters.push(cluster);
  const client = createRedisClient({ cluster: { nodes: cluster.urls } });
  await client.connect();
  return { cluster, client };
}

/** What a command sent now comes to: 'failed: <message>' or 'answered'. */
const outcome = (p: Promise<unknown>) => p.then(() => 'answered', (err: Error) => `failed: ${err.message}`);

test('a BullMQ worker closed while its connection waits to reconnect closes within 5 s, though its Redis is back meanwhile', { timeout: 60_000 }, async () => {
  const redis = await startTestRedis();
  servers.push(redis);
  const client = await openRedis(redis.url);
  const queue = new Queue('reconnect-close', { connection: client });
  const worker = new Worker('reconnect-close', async () => {}, { connection: client });
  worker.on('error', () => {});
  queue.on('error', () => {});
  await worker.waitUntilReady();
  await queue.add('one', {});
  await sleep(300);

  const reconnecting = once(client, 'reconnecting');
  await redis.stop();
  await reconnecting;
  await redis.restart();
  assert.equal(client.status, 'reconnecting', 'the stop must come while the client waits for its next try');

  assert.ok(await within(worker.close(), 5_000), 'Worker.close() did not finish within 5 s');
  assert.ok(await within(queue.close(), 5_000), 'Queue.close() did not finish within 5 s');
  client.disconnect();
});

test('a plain client told to disconnect while it waits to reconnect ends, and the command it held fails with "Connection is closed."', { timeout: 60_000 }, async () => {
  const redis = await startTestRedis();
  servers.push(redis);
  const client = await openRedis(redis.url);
  const reconnecting = once(client, 'reconnecting');
  await redis.stop();
  await reconnecting;
  const held = client.get('k');
  const ended = once(client, 'end');
  client.disconnect();
  assert.ok(await within(ended, 2_000), 'no end event');
  assert.equal(client.status, 'end');
  await assert.rejects(held, /Connection is closed/);
  // It can still be connected again, as a BullMQ worker's blocking client is after a pause.
  await redis.restart();
  await client.connect();
  assert.equal(await client.ping(), 'PONG');
  client.disconnect();
});

test('a cluster client, closed, stays ended: a command sent after the close fails at once instead of waiting forever', { timeout: 60_000 }, async () => {
  const { client } = await connectedCluster({ masters: 3 });
  // Live connections to some nodes, idle ones to the rest: they end at different times.
  await Promise.all(['a', 'b', 'c', 'd'].map((k) => client.set(k, '1')));
  const ended = once(client, 'end');
  client.disconnect();
  assert.ok(await within(ended, 2_000), 'no end event');
  await sleep(300);
  assert.equal(client.status, 'end', 'the status went back after the end');
  const after = outcome(client.get('a'));
  assert.ok(await within(after, 2_000), 'a command after the close waits forever');
  assert.equal(await after, 'failed: Connection is closed.');
});

test('BullMQ workers on a cluster whose queue master was just killed (kill -9) close within 10 s', { timeout: 120_000 }, async () => {
  const { cluster, client } = await connectedCluster({ masters: 3, replicas: 1 });
  // Queues in every slot range, so some workers block on the master that is killed and some on the others.
  const names = Array.from({ length: 6 }, (_, i) => `{kill-close-${i}}`);
  const queues = names.map((n) => new Queue(n, { connection: client }));
  const workers = names.map((n) => new Worker(n, async () => {}, { connection: client }));
  for (const q of queues) q.on('error', () => {});
  for (const w of workers) w.on('error', () => {});
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  await Promise.all(queues.map((q) => q.add('one', {})));
  await sleep(500);
  const slot = keySlot(names[0]!);
  const victim = cluster.masterOf(slot);
  assert.ok(victim, `the master of slot ${slot}`);
  await victim.kill('SIGKILL');

  const closing = Promise.all([...workers.map((w) => w.close()), ...queues.map((q) => q.close())]);
  assert.ok(await within(closing, 10_000), 'the workers and queues did not close within 10 s of the kill');
  client.disconnect();
});

test('a cluster client whose every node is gone, told to close while it waits to reconnect, ends; the commands it held fail', { timeout: 60_000 }, async () => {
  const { cluster, client } = await connectedCluster({ masters: 3 });
  await client.set('a', '1');
  await Promise.all(cluster.nodes.map((n) => n.kill('SIGKILL')));
  // Commands sent now find every node gone: the pool empties and the client waits to reconnect.
  const held = ['a', 'b', 'c'].map((k) => outcome(client.get(k)));
  const pool = (client as unknown as { connectionPool: { getNodes(): unknown[] } }).connectionPool;
  await waitFor(async () => client.status === 'reconnecting' && pool.getNodes().length === 0, 15_000, 'the cluster client waiting to reconnect with no node left');
  const ended = once(client, 'end');
  client.disconnect();
  assert.ok(await within(ended, 2_000), `no end event (status ${client.status})`);
  assert.equal(client.status, 'end');
  assert.ok(await within(Promise.all(held), 2_000), 'the commands it held are still pending');
  for (const r of await Promise.all(held)) assert.match(r, /^failed: /);
});

test('a BullMQ worker on a cluster whose every node is gone closes within 5 s', { timeout: 60_000 }, async () => {
  const { cluster, client } = await connectedCluster({ masters: 3 });
  const worker = new Worker('{all-gone}', async () => {}, { connection: client });
  worker.on('error', () => {});
  await worker.waitUntilReady();
  await sleep(300);
  await Promise.all(cluster.nodes.map((n) => n.kill('SIGKILL')));
  await sleep(1_000);
  assert.ok(await within(worker.close(), 5_000), 'Worker.close() did not finish within 5 s');
  client.disconnect();
});

test('a cluster client closed twice stays ended, and a command after the second close fails at once', { timeout: 60_000 }, async () => {
  const { client } = await connectedCluster({ masters: 3 });
  await client.set('a', '1');
  const ended = once(client, 'end');
  client.disconnect();
  assert.ok(await within(ended, 2_000), 'no end event');
  await sleep(300);
  client.disconnect();
  await client.quit().catch(() => undefined);
  assert.equal(client.status, 'end');
  const after = outcome(client.get('a'));
  assert.ok(await within(after, 2_000), 'a command after the second close waits forever');
  assert.equal(await after, 'failed: Connection is closed.');
});

test('a connect to a cluster that is down settles: it is rejected when the client is closed, where ioredis left it pending forever', { timeout: 60_000 }, async () => {
  // Three masters, no replica: once one is killed and the others mark it failed, CLUSTER INFO says
  // cluster_state:fail for good, so the client's ready check fails on every try.
  const cluster = await startTestCluster({ masters: 3 });
  clusters.push(cluster);
  const [victim, ...alive] = cluster.nodes;
  await victim!.kill('SIGKILL');
  await waitFor(async () => cluster.cli(alive[0]!.port, 'cluster', 'info').includes('cluster_state:fail'), 20_000, 'cluster_state:fail');
  const client = createRedisClient({ cluster: { nodes: alive.map((n) => n.url) } });
  client.on('error', () => {});
  const connecting = client.connect().then(() => 'connected', () => 'failed');
  await waitFor(async () => client.status === 'reconnecting' || client.status === 'connecting', 10_000, 'the client trying again after a failed ready check');
  await sleep(1_000);
  client.disconnect();
  assert.ok(await within(connecting, 3_000), `connect() is still pending after the close (status ${client.status})`);
  assert.equal(await connecting, 'failed');
});
