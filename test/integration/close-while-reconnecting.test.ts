/**
 * A stop that comes while a Redis client waits to reconnect (its server just ended, its next try
 * is ~200 ms away) finishes at once: ioredis alone never ends such a client, and BullMQ's
 * Worker.close() waited for that forever (src/store/ioredis-end-on-disconnect.ts). Real
 * redis-server, killed and started again on its port; the clients are the gateway's own settings.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { Queue, Worker } from 'bullmq';
import { openRedis } from '../../src/store/redis.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const servers: TestRedis[] = [];
after(async () => { for (const s of servers) await s.dispose(); });

/** Resolves true if `p` settles within `ms`. */
const within = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);

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
