/**
 * The router's dedup store (src/core/dedup.ts) against a real redis-server and a real Redis
 * Cluster: looks and marks asked for in one turn go as one MGET and one script per scope, each
 * caller still gets its own answer, keys and their time to live are what one command a message
 * wrote before (ids remembered by an older process are still seen), and a failed command fails
 * its callers with the error. Commands are counted with INFO commandstats, not timed.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { dedupKey, DedupStore } from '../../src/core/dedup.ts';
import { createRedisClient, openRedis } from '../../src/store/redis.ts';
import { startTestCluster, type TestCluster } from '../support/redis-cluster.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const servers: TestRedis[] = [];
const clusters: TestCluster[] = [];
const clients: Redis[] = [];

after(async () => {
  for (const c of clients) c.disconnect();
  for (const c of clusters) await c.stop().catch(() => {});
  for (const s of servers) await s.dispose().catch(() => {});
});

/** Calls of each command so far (INFO commandstats; commands run inside scripts count too). */
async function calls(admin: Redis): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await admin.info('commandstats')).split('\n')) {
    const m = /^cmdstat_(\w+):calls=(\d+)/.exec(line.trim());
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** A private redis-server, a store on one client of it and a second client to look with. */
async function storeOnRedis(): Promise<{ store: DedupStore; admin: Redis }> {
  const redis = await startTestRedis();
  servers.push(redis);
  const client = await openRedis(redis.url);
  const admin = await openRedis(redis.url);
  clients.push(client, admin);
  return { store: new DedupStore(client, 'sb', 60_000), admin };
}

const key = (id: string) => dedupKey({ to: 'mq:legacy/B', sender: { kind: 'broker', name: 'legacy' }, id });

test('a turn of looks is one MGET and a turn of marks one script; each caller gets its own answer, keys keep their name and time to live', { timeout: 60_000 }, async () => {
  const { store, admin } = await storeOnRedis();
  // Remembered by one SET a message, as the store did before it batched: still seen.
  const old = key('old-1');
  await admin.set(`sb:dedup:{mq:legacy/B}:${createHash('sha256').update(old).digest('hex')}`, '1', 'PX', 60_000);

  const before = await calls(admin);
  const ids = Array.from({ length: 40 }, (_, i) => key(`m-${i}`));
  await Promise.all(ids.slice(0, 20).map((id) => store.remember('mq:legacy/B', id)));
  const mid = await calls(admin);
  assert.equal((mid.eval ?? 0) - (before.eval ?? 0), 1, 'twenty marks in one turn: one script');
  assert.equal((mid.set ?? 0) - (before.set ?? 0), 20, 'each id set once, inside the script');

  const answers = await Promise.all([...ids, old].map((id) => store.seen('mq:legacy/B', id)));
  const after1 = await calls(admin);
  assert.equal((after1.mget ?? 0) - (mid.mget ?? 0), 1, 'forty-one looks in one turn: one MGET');
  assert.deepEqual(answers, [...ids.map((_, i) => i < 20), true], 'the remembered twenty and the old one are seen, the other twenty are not');
  assert.deepEqual(await Promise.all([store.seen('mq:legacy/A', ids[0]!), store.seen('mq:legacy/B', ids[0]!)]), [false, true], 'another scope is another set of ids');

  const k = `sb:dedup:{mq:legacy/B}:${createHash('sha256').update(ids[0]!).digest('hex')}`;
  assert.equal(await admin.get(k), '1');
  const ttl = await admin.pttl(k);
  assert.ok(ttl > 50_000 && ttl <= 60_000, `time to live ${ttl} ms, set to 60 s`);

  // A burst past 500 keys is split, still answered one by one.
  const many = Array.from({ length: 1_200 }, (_, i) => key(`burst-${i}`));
  const b0 = await calls(admin);
  await Promise.all(many.filter((_, i) => i % 2 === 0).map((id) => store.remember('mq:legacy/B', id)));
  const seen = await Promise.all(many.map((id) => store.seen('mq:legacy/B', id)));
  const b1 = await calls(admin);
  assert.equal((b1.eval ?? 0) - (b0.eval ?? 0), 2, '600 marks: two scripts of at most 500 keys');
  assert.equal((b1.mget ?? 0) - (b0.mget ?? 0), 3, '1,200 looks: three MGETs of at most 500 keys');
  assert.deepEqual(seen, many.map((_, i) => i % 2 === 0));
});

test('a look or a mark whose command fails fails its callers with the error; later ones work again', { timeout: 60_000 }, async () => {
  const { store, admin } = await storeOnRedis();
  // A read-only replica refuses writes: the script fails, the MGET is still answered.
  await admin.replicaof('127.0.0.1', 1); // nothing listens there: it stays a read-only replica of nobody
  const marks = await Promise.allSettled([store.remember('mq:x/q', key('f-1')), store.remember('mq:x/q', key('f-2'))]);
  assert.deepEqual(marks.map((m) => m.status), ['rejected', 'rejected']);
  assert.match(String((marks[0] as PromiseRejectedResult).reason), /READONLY|read only/i);
  assert.deepEqual(await Promise.all([store.seen('mq:x/q', key('f-1'))]), [false], 'nothing was remembered');
  await admin.replicaof('NO', 'ONE');
  await store.remember('mq:x/q', key('f-1'));
  assert.equal(await store.seen('mq:x/q', key('f-1')), true);
});

test('on a Redis Cluster the batched looks and marks of a scope run on the node of its slot', { timeout: 120_000 }, async () => {
  const cluster = await startTestCluster({ masters: 3 });
  clusters.push(cluster);
  const client = createRedisClient({ cluster: { nodes: cluster.urls } }) as unknown as Redis;
  await client.connect();
  clients.push(client);
  const store = new DedupStore(client, 'sb', 60_000);
  const scopes = ['mq:legacy/A', 'mq:legacy/B', 'queue:c', 'tmp:d'];
  const ids = Array.from({ length: 30 }, (_, i) => key(`c-${i}`));
  await Promise.all(scopes.flatMap((s) => ids.slice(0, 15).map((id) => store.remember(s, id))));
  const answers = await Promise.all(scopes.map((s) => Promise.all(ids.map((id) => store.seen(s, id)))));
  for (const a of answers) assert.deepEqual(a, ids.map((_, i) => i < 15));
});
