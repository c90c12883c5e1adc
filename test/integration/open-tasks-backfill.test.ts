// Tasks opened before the open-by-due index existed are counted (issue 18.6): a one-time,
// idempotent, lease-held backfill at start, with a real redis-server. Tasks made the old way
// (no index entry) are counted by `switchboard_tasks_open{due}` once a gateway starts; a decided
// task is not; a second pass, or a second start, changes nothing; and tasks decided while the
// backfill runs are never added back (the check and the add are one script).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import type { Gateway } from '../../src/gateway.ts';
import { TaskKeys } from '../../src/people/keys.ts';
import { backfillMarkerKey, indexOpenTaskKeys, indexOpenTasks, OpenByDueBackfill, OPEN_BY_DUE_VERSION } from '../../src/people/open-by-due-backfill.ts';
import { TaskStore } from '../../src/people/task-store.ts';
import { createRedisClient } from '../../src/store/redis.ts';
import { loadScripts } from '../../src/store/scripts.ts';
import { startTestCluster } from '../support/redis-cluster.ts';
import { api, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const log = pino({ level: 'silent' });
let redis: TestRedis;
let client: Redis;

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url);
});

after(async () => {
  client?.disconnect();
  await redis?.dispose();
});

const PREFIX = 'bf';
const INDEX = `${PREFIX}:{tasks}:open-by-due`;

function gateway(): Promise<Gateway> {
  return startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    permissions: [{ group: 'ops', allow: [{ address: 'person:ops', verbs: ['send', 'consume'] }] }],
  });
}

/** The open-task gauge by due label, as /metrics shows it. */
async function openGauge(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Object.fromEntries([...text.matchAll(/^switchboard_tasks_open\{due="(\w+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
}

test('tasks stored without an index entry are counted after the next start; a decided one is not; running twice changes nothing', { timeout: 90_000 }, async () => {
  let gw = await gateway();
  const ids: string[] = [];
  try {
    const task = async (title: string, due?: string) => {
      const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'person:ops', body: { title, actions: ['ok'], ...(due ? { due } : {}) } } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const listed = (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks as { id: string; title: string }[];
      const id = listed.find((t) => t.title === title)!.id;
      ids.push(id);
      return id;
    };
    await task('late', '2020-01-01T00:00:00Z');
    await task('on time', '30d');
    await task('no due 1');
    await task('no due 2');
    const decided = await task('decided');
    assert.equal((await api(gw.url, 'POST', `/api/tasks/${decided}/decision`, { user: 'ops', body: { action: 'ok' } })).status, 200);
    assert.deepEqual(await openGauge(gw.url), { on_time: 1, late: 1, none: 2 }, 'counted from the index while it is kept');
  } finally {
    await gw.stop();
  }
  assert.equal(await client.get(backfillMarkerKey(PREFIX)), String(OPEN_BY_DUE_VERSION), 'the first start marked the (empty) store as backfilled');

  // A store from before the index: the same tasks, no index, no marker.
  await client.del(INDEX, backfillMarkerKey(PREFIX));
  gw = await gateway();
  try {
    const counted = await waitFor(async () => {
      const g = await openGauge(gw.url);
      return g.late === 1 && g.on_time === 1 && g.none === 2 ? g : undefined;
    }, 30_000, 'the backfilled tasks to be counted');
    assert.deepEqual(counted, { on_time: 1, late: 1, none: 2 });
    assert.equal(await client.zcard(INDEX), 4, 'the decided task was not indexed');
    await waitFor(async () => (await client.get(backfillMarkerKey(PREFIX))) === String(OPEN_BY_DUE_VERSION), 30_000, 'the marker');
    const scores = Object.fromEntries(await Promise.all(ids.slice(0, 4).map(async (id) => [id, await client.zscore(INDEX, id)])));
    assert.equal(scores[ids[0]!], String(Date.parse('2020-01-01T00:00:00Z')), 'scored by its due date, as createTask does');
    assert.equal(scores[ids[2]!], 'inf');

    // Twice: a pass by hand adds nothing, and a new start finds the marker and does nothing.
    assert.deepEqual(await indexOpenTasks({ redis: client, prefix: PREFIX, shards: 1, log }), { tasks: 5, added: 0 });
    const again = new OpenByDueBackfill({ redis: client, prefix: PREFIX, shards: 1, log });
    await again.start();
    assert.equal(await again.finished, undefined, 'up to date: no pass');
    assert.deepEqual(await openGauge(gw.url), { on_time: 1, late: 1, none: 2 });
    assert.equal(await client.zcard(INDEX), 4);
  } finally {
    await gw.stop();
  }
});

test('tasks decided while the backfill runs are never added back; the open ones all are; one process of several runs it', { timeout: 90_000 }, async () => {
  const prefix = 'race';
  const shards = 4;
  const store = new TaskStore(client, prefix, shards);
  const keys = new TaskKeys(prefix, shards);
  const ids = Array.from({ length: 600 }, (_, i) => TaskStore.idFor(`race-${i}`));
  const now = new Date().toISOString();
  await Promise.all(ids.map((id, i) => store.create({ id, kind: 'task', title: `t${i}`, data: {}, actions: ['ok'], fields: {}, assignee: 'ops', createdAt: now, sender: 'user:ops', ...(i % 3 === 0 ? { due: '2030-01-01T00:00:00.000Z' } : {}) }, { messageId: `race-${i}` })));
  // The old layout: no task in the index.
  await client.del(...keys.tags.map((t) => keys.openByDueIn(t)));

  // The script alone: a decided task is not indexed.
  const scripts = loadScripts(client, new URL('../../src/people/scripts/', import.meta.url), { indexOpenTask: 2 });
  const first = (await store.get(ids[0]!))!;
  assert.ok((await store.decide(first, { action: 'ok', fields: {}, by: 'user:ops', at: now })).ok);
  assert.equal(await scripts.indexOpenTask(indexOpenTaskKeys(keys, ids[0]!), ids[0]!, '+inf'), 0);

  // Two processes start at once (small batches, so the pass takes a while), and every other task
  // is decided while they run.
  const a = new OpenByDueBackfill({ redis: client, prefix, shards, log, batch: 10 });
  const b = new OpenByDueBackfill({ redis: client, prefix, shards, log, batch: 10 });
  await Promise.all([a.start(), b.start()]);
  const toDecide = ids.filter((_, i) => i % 2 === 0 && i !== 0);
  await Promise.all(toDecide.map(async (id) => {
    const t = (await store.get(id))!;
    assert.ok((await store.decide(t, { action: 'ok', fields: {}, by: 'user:ops', at: new Date().toISOString() })).ok);
  }));
  const results = await Promise.all([a.finished, b.finished]);
  await Promise.all([a.stop(), b.stop()]);
  assert.equal(results.filter((r) => r !== undefined).length, 1, `one process ran the pass: ${JSON.stringify(results)}`);

  const indexed = new Set((await Promise.all(keys.tags.map((t) => client.zrange(keys.openByDueIn(t), 0, -1)))).flat());
  const open = ids.filter((_, i) => i % 2 === 1);
  assert.equal(indexed.size, open.length, 'exactly the open tasks are indexed');
  for (const id of open) assert.ok(indexed.has(id), `open task ${id} is indexed`);
  assert.deepEqual(await store.openByDue(Date.parse('2029-01-01T00:00:00Z')), { on_time: open.filter((id) => ids.indexOf(id) % 3 === 0).length, late: 0, none: open.filter((id) => ids.indexOf(id) % 3 !== 0).length });
  assert.equal(await client.get(backfillMarkerKey(prefix)), String(OPEN_BY_DUE_VERSION));
});

test('on a Redis Cluster every master is scanned: tasks of every shard are indexed', { timeout: 90_000 }, async () => {
  const cluster = await startTestCluster({ masters: 3 });
  const c = createRedisClient({ cluster: { nodes: cluster.urls } });
  try {
    const shards = 6;
    const store = new TaskStore(c, 'cl', shards);
    const keys = new TaskKeys('cl', shards);
    const ids = Array.from({ length: 60 }, (_, i) => TaskStore.idFor(`cl-${i}`));
    const now = new Date().toISOString();
    for (const [i, id] of ids.entries()) await store.create({ id, kind: 'task', title: `c${i}`, data: {}, actions: ['ok'], fields: {}, group: 'ops', createdAt: now, sender: 'user:ops' }, { messageId: `cl-${i}` });
    for (const id of ids.slice(0, 20)) assert.ok((await store.decide((await store.get(id))!, { action: 'ok', fields: {}, by: 'user:ops', at: now })).ok);
    for (const t of keys.tags) await c.del(keys.openByDueIn(t));
    const slots = new Set(keys.tags.map((t) => cluster.cli(cluster.nodes[0]!.port, 'CLUSTER', 'KEYSLOT', keys.openByDueIn(t)).trim()));
    assert.ok(slots.size > 1, 'the shards lie in different slots');
    assert.deepEqual(await indexOpenTasks({ redis: c, prefix: 'cl', shards, log, batch: 7 }), { tasks: 60, added: 40 });
    assert.deepEqual(await store.openByDue(), { on_time: 0, late: 0, none: 40 });
  } finally {
    c.disconnect();
    await cluster.stop();
  }
});
