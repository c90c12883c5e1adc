/**
 * Issue 16.1/16.3: what makes a flow instance cheaper in Redis, on a real redis-server — the input
 * in listpack-sized pieces of the meta hash (multi-byte characters never cut), one index entry per
 * instance with listing over every flow still merged (instances of earlier versions too), instance
 * ids derived from the start id (no key per start; an earlier version's binding still honoured),
 * the lock released by the run mark, and inbox keys kept for the retention only when there are any.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Router } from '../../src/core/router.ts';
import { FlowKeys } from '../../src/flows/keys.ts';
import { FlowRuntime } from '../../src/flows/runtime.ts';
import { InstanceStore, type InstanceMeta } from '../../src/flows/store.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PREFIX = 'fsc';
const keys = new FlowKeys(PREFIX);
let server: TestRedis;
let redis: Redis;

before(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  redis?.disconnect();
  await server?.dispose();
});

const meta = (id: string, input: unknown, flow = 'f', createdAt = new Date().toISOString()): InstanceMeta => ({
  id, flow, status: 'running', input, createdAt, updatedAt: createdAt, startedBy: 'user:ann', secret: 'S'.repeat(22),
});

test('an input up to 1 KB is kept in pieces of the meta hash, which stays a listpack; multi-byte characters are never cut; longer inputs get their own key', async () => {
  const store = new InstanceStore(redis, PREFIX);
  // 3-byte and 4-byte characters across every 64-byte boundary.
  const input = { note: '€😀x'.repeat(40), n: 1 };
  await store.create(meta('c1', input));
  assert.equal(await redis.exists(keys.instance('c1', 'input')), 0, 'no input key');
  assert.equal(await redis.call('OBJECT', 'ENCODING', keys.instance('c1', 'meta')), 'listpack');
  const fields = await redis.hgetall(keys.instance('c1', 'meta'));
  assert.equal(fields.id, undefined, 'the id is the key, not a field');
  assert.ok(Object.keys(fields).filter((f) => /^i\d+$/.test(f)).length > 3);
  for (const [f, v] of Object.entries(fields)) assert.ok(Buffer.byteLength(v) <= 64, `${f} is ${Buffer.byteLength(v)} bytes`);
  assert.deepEqual((await store.meta('c1'))?.input, input);
  assert.deepEqual(await store.input('c1'), input);
  assert.equal((await store.meta('c1'))?.id, 'c1');

  const big = { note: 'y'.repeat(2000) };
  await store.create(meta('c2', big));
  assert.equal(await redis.exists(keys.instance('c2', 'input')), 1, 'over 1 KB: a key of its own');
  assert.deepEqual((await store.meta('c2', true))?.input, big);
  const begun = await store.beginRun('c2', 'tok', 5000, true);
  assert.ok(typeof begun === 'object');
  assert.deepEqual(begun.meta?.input, big);

  await store.create(meta('c3', { a: 1 }));
  assert.equal(await redis.hget(keys.instance('c3', 'meta'), 'input'), '{"a":1}', 'short: one field');
  assert.equal(await store.meta('nope'), null);
});

test('one index entry per instance; listing every flow merges the flows, newest first, with instances indexed by an earlier version', async () => {
  const store = new InstanceStore(redis, 'fsl');
  const t = Date.parse('2026-01-01T00:00:00Z');
  await store.create(meta('a1', {}, 'alpha', new Date(t + 1000).toISOString()));
  await store.create(meta('b1', {}, 'beta', new Date(t + 2000).toISOString()));
  await store.create(meta('a2', {}, 'alpha', new Date(t + 3000).toISOString()));
  const fk = new FlowKeys('fsl');
  assert.equal(await redis.exists(fk.index()), 0, 'the all-flows index is not written');
  // As an earlier version left it: in its flow's index and in the all-flows index.
  await redis.zadd(fk.index('gamma'), t + 500, 'g1');
  await redis.zadd(fk.index(), t + 500, 'gamma/g1', t + 1000, 'alpha/a1');
  assert.deepEqual(await store.list(undefined, 10), [{ flow: 'alpha', id: 'a2' }, { flow: 'beta', id: 'b1' }, { flow: 'alpha', id: 'a1' }, { flow: 'gamma', id: 'g1' }]);
  assert.deepEqual(await store.list(undefined, 2), [{ flow: 'alpha', id: 'a2' }, { flow: 'beta', id: 'b1' }]);
  assert.deepEqual(await store.list('alpha', 10), [{ flow: 'alpha', id: 'a2' }, { flow: 'alpha', id: 'a1' }]);
});

test('instance ids: the same starter and start id is the same instance, another starter another; no key per start; an earlier binding is honoured after an upgrade', async () => {
  const log = pino({ level: 'silent' });
  const runtime = (prefix: string) => new FlowRuntime({ redis, prefix, router: {} as Router, flows: new Map(), concurrency: 1, lockMs: 5000, stalledCheckMs: 5000, retentionMs: 60_000, log });
  const fresh = runtime('fsi');
  try {
    const a = await fresh.instanceId('f', 'user:ann', 'start-1');
    assert.equal(await fresh.instanceId('f', 'user:ann', 'start-1'), a);
    assert.notEqual(await fresh.instanceId('f', 'user:bob', 'start-1'), a, "another starter's start id is another instance");
    assert.notEqual(await fresh.instanceId('g', 'user:ann', 'start-1'), a);
    assert.match(a, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(a, 'start-1');
    assert.deepEqual(await redis.keys('fsi:flow-start:*'), []);
    assert.match((await redis.get('fsi:flow-id-key'))!, /^[A-Za-z0-9_-]{43}\.0$/, 'no earlier instances: never looks for start keys');
  } finally {
    await fresh.close();
  }

  // An upgraded deployment: the earlier version's all-flows index exists, and a start key.
  const { createHash } = await import('node:crypto');
  await redis.zadd('fsu:flows', Date.now(), 'f/old-instance');
  const digest = createHash('sha256').update('f\0user:ann\0start-1').digest('base64url').slice(0, 22);
  await redis.set(new FlowKeys('fsu').start(digest), 'old-instance');
  const upgraded = runtime('fsu');
  try {
    assert.equal(await upgraded.instanceId('f', 'user:ann', 'start-1'), 'old-instance');
    assert.notEqual(await upgraded.instanceId('f', 'user:ann', 'start-2'), 'old-instance');
  } finally {
    await upgraded.close();
  }
});

test("a finished instance's lock is left to expire: a later run hears 'finished', not 'busy', and a retry drops it; inbox keys are kept for the retention only when a message came", async () => {
  const store = new InstanceStore(redis, PREFIX);
  const lock = keys.instance('l1', 'lock');
  await store.create(meta('l1', { a: 1 }));
  assert.equal(typeof (await store.beginRun('l1', 'first', 60_000, true)), 'object');
  assert.equal(await store.beginRun('l1', 'other', 60_000, true), 'busy', 'a running instance is busy for another run');
  // The first run's lock expired and a second run took the instance.
  await redis.del(lock);
  assert.equal(typeof (await store.beginRun('l1', 'second', 60_000, true)), 'object');
  await store.park('l1', 'first', [], { step: 0, kind: 'receive' });
  assert.equal(await redis.get(lock), 'second', "the stale run's end leaves the second run's lock standing");
  await store.finish('l1', { status: 'failed' }, [], 60_000);
  assert.equal(await redis.get(lock), 'second', 'a finish does not spend a command on the lock');
  const ttl = await redis.pttl(lock);
  assert.ok(ttl > 0 && ttl <= 60_000, `the lock still expires (${ttl} ms)`);
  assert.equal(await store.beginRun('l1', 'third', 60_000, true), 'finished', 'nothing to run: not busy');
  assert.equal(await redis.get(lock), 'second', "a finished answer takes nothing");
  // An admin retry makes it run again at once, not when the lock times out.
  await store.persist('l1');
  assert.equal(await redis.exists(lock), 0);
  await store.update('l1', { status: 'running' });
  assert.equal(typeof (await store.beginRun('l1', 'fourth', 60_000, true)), 'object');
  await store.finish('l1', { status: 'completed' }, [], 60_000);
  assert.equal(await redis.exists(keys.instance('l1', 'inbox'), keys.instance('l1', 'seen')), 0);

  await store.create(meta('l2', {}));
  await store.deliver('l2', { id: 'm1', to: 'flow:f/l2', sender: { kind: 'user', name: 'ann' }, headers: {}, contentType: 'application/json', body: 1, createdAt: new Date().toISOString() });
  assert.equal(typeof (await store.beginRun('l2', 't', 60_000, true)), 'object');
  await store.finish('l2', { status: 'completed' }, [], 60_000);
  for (const part of ['meta', 'journal', 'inbox', 'seen'] as const) {
    const ttl = await redis.pttl(keys.instance('l2', part));
    assert.ok(part === 'journal' ? ttl === -2 || ttl > 0 : ttl > 0 && ttl <= 60_000, `${part}: ${ttl}`);
  }

  // Stored by an earlier version (an id field, no inbox mark): its inbox is still kept for the retention only.
  await redis.hset(keys.instance('l3', 'meta'), 'id', 'l3', 'flow', 'f', 'status', 'running', 'run', 'x');
  await redis.rpush(keys.instance('l3', 'inbox'), '{}');
  await store.finish('l3', { status: 'completed' }, [], 60_000);
  assert.ok((await redis.pttl(keys.instance('l3', 'inbox'))) > 0);
});
