import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { EagerStarts } from '../../src/flows/eager-starts.ts';
import { FlowKeys } from '../../src/flows/keys.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The bookkeeping of eager flow starts on a real redis-server: the backlog's bound, a start that
// cannot run here going to the run queue, and the hand-over of a dead process's starts (and only
// a dead one's). The runs themselves are stand-ins recorded in arrays; the gateway-level tests
// (flows-eager-start.test.ts) run real flows and kill real processes.

let server: TestRedis;
let redis: Redis;
const log = pino({ level: 'silent' });

before(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  redis?.disconnect();
  await server?.dispose();
});

let n = 0;
const unlock = async () => {};

function eager(options: { concurrency?: number; backlog?: number; leaseMs?: number; wake?: (id: string) => Promise<void> } = {}) {
  const keys = new FlowKeys(`es${++n}`);
  const woken: string[] = [];
  const e = new EagerStarts({
    redis, keys, log,
    wake: options.wake ?? (async (id) => { woken.push(id); }),
    concurrency: options.concurrency ?? 1,
    backlog: options.backlog ?? 2,
    leaseMs: options.leaseMs ?? 60_000,
    sweepMs: 3_600_000,
  });
  return { e, keys, woken };
}

const gate = () => {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
};

test('a start is claimed in the owner\'s set until its run is done; beyond concurrency + backlog a start is refused (it goes to the run queue)', async () => {
  const { e, keys, woken } = eager({ concurrency: 1, backlog: 2 });
  await e.start();
  assert.deepEqual(await redis.smembers(keys.eagerOwners()), [e.owner]);
  assert.ok((await redis.pttl(keys.eagerAlive(e.owner))) > 0, 'the heartbeat has a lease');

  const g = gate();
  const ran: string[] = [];
  const ids = ['a', 'b', 'c'];
  for (const id of ids) {
    assert.equal(e.reserve(), true, `place for ${id}`);
    await e.claim(id);
  }
  assert.equal(e.reserve(), false, 'a fourth start finds no place (1 running + 2 waiting)');
  assert.equal(e.stats.overflow, 1);
  assert.deepEqual((await redis.smembers(keys.eagerIds(e.owner))).sort(), ids, 'claimed before the start is acknowledged');
  for (const id of ids) e.begin({ id, run: async () => { await g.opened; ran.push(id); return 'done'; }, unlock });

  g.open();
  await waitUntil(async () => (await redis.scard(keys.eagerIds(e.owner))) === 0, 'every start settled');
  assert.deepEqual(ran, ids, 'run here, in order');
  assert.deepEqual(woken, [], 'nothing went to the run queue');
  await e.close();
  assert.deepEqual(await redis.smembers(keys.eagerOwners()), [], 'a clean stop leaves the registry');
  assert.equal(await redis.exists(keys.eagerAlive(e.owner)), 0);
});

test('a run that finds the instance busy, or fails, hands it to the run queue; a run that cannot even do that stays claimed for the sweep', async () => {
  let wakeFails = true;
  const woken: string[] = [];
  const { e, keys } = eager({ concurrency: 2, wake: async (id) => { if (id === 'broken' && wakeFails) throw new Error('redis down'); woken.push(id); } });
  await e.start();
  for (const id of ['busy', 'throws', 'broken']) {
    assert.equal(e.reserve(), true);
    await e.claim(id);
  }
  e.begin({ id: 'busy', run: async () => 'busy', unlock });
  e.begin({ id: 'throws', run: async () => { throw new Error('boom'); }, unlock });
  e.begin({ id: 'broken', run: async () => { throw new Error('boom'); }, unlock });
  await waitUntil(async () => woken.length === 2 && (await redis.scard(keys.eagerIds(e.owner))) === 1, 'two handed over');
  assert.deepEqual(woken.sort(), ['busy', 'throws']);
  assert.deepEqual(await redis.smembers(keys.eagerIds(e.owner)), ['broken'], 'the one whose hand-over failed is still claimed');
  wakeFails = false;
  await e.sweep();
  assert.deepEqual(woken.sort(), ['broken', 'busy', 'throws'], 'the sweep of our own set hands it over');
  assert.equal(await redis.scard(keys.eagerIds(e.owner)), 0);
  await e.close();
});

test('the starts of a process whose heartbeat expired are handed to the run queue by another, once; a live process\'s are left alone', async () => {
  const keys = new FlowKeys(`es${++n}`);
  const woken: string[] = [];
  const make = (leaseMs: number) => new EagerStarts({ redis, keys, log, wake: async (id) => { woken.push(id); }, concurrency: 1, backlog: 10, leaseMs, sweepMs: 3_600_000 });
  const alive = make(60_000);
  const rescuer = make(60_000);
  await Promise.all([alive.start(), rescuer.start()]);
  assert.equal(alive.reserve(), true);
  await alive.claim('a1');
  // What a process killed with -9 leaves: its name in the registry, its claims, a heartbeat running out.
  const dead = 'killed-process';
  await redis.sadd(keys.eagerOwners(), dead);
  await redis.sadd(keys.eagerIds(dead), 'd1', 'd2');
  await redis.set(keys.eagerAlive(dead), dead, 'PX', 300);
  await rescuer.sweep();
  assert.deepEqual(woken, [], 'nothing is taken while the heartbeat lives');
  await waitUntil(async () => (await redis.exists(keys.eagerAlive(dead))) === 0, 'the dead owner\'s lease to expire');

  await rescuer.sweep();
  assert.deepEqual(woken.sort(), ['d1', 'd2'], 'the dead owner\'s starts, not the live one\'s');
  assert.equal(rescuer.stats.recovered, 2);
  assert.equal(await redis.exists(keys.eagerIds(dead)), 0);
  assert.equal(await redis.exists(keys.eagerAlive(dead)), 0, 'the rescuer gave the lease back');
  assert.equal(await redis.sismember(keys.eagerOwners(), dead), 0, 'the dead owner left the registry');
  assert.deepEqual(await redis.smembers(keys.eagerIds(alive.owner)), ['a1'], 'the live owner keeps its claim');

  await alive.sweep();
  assert.deepEqual(woken.sort(), ['d1', 'd2'], 'a second sweep hands nothing over twice');
  alive.release('a1');
  await Promise.all([alive.close(), rescuer.close()]);
});

test('a stop with starts waiting hands them to the run queue and leaves the registry', async () => {
  const { e, keys, woken } = eager({ concurrency: 1, backlog: 5 });
  await e.start();
  const g = gate();
  const ran: string[] = [];
  const unlocked: string[] = [];
  for (const id of ['x', 'y', 'z']) {
    assert.equal(e.reserve(), true);
    await e.claim(id);
    e.begin({ id, run: async () => { await g.opened; ran.push(id); return 'done'; }, unlock: async () => { unlocked.push(id); } });
  }
  const closing = e.close();
  assert.equal(e.reserve(), false, 'no start is taken while stopping');
  g.open();
  await closing;
  assert.deepEqual(ran, ['x'], 'the run in progress ends');
  assert.deepEqual(woken, ['y', 'z'], 'the waiting ones go to the run queue');
  assert.deepEqual(unlocked, ['y', 'z'], 'without the lock their creation took');
  assert.equal(await redis.exists(keys.eagerIds(e.owner)), 0);
  assert.deepEqual(await redis.smembers(keys.eagerOwners()), []);
});

test('a stop waits for a start reserved before it (its instance still being created) and hands that one over too', async () => {
  const { e, keys, woken } = eager({ concurrency: 1, backlog: 5 });
  await e.start();
  assert.equal(e.reserve(), true);
  await e.claim('late');
  let closed = false;
  const closing = e.close().then(() => { closed = true; });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(closed, false, 'the stop waits while a reserved start is unresolved');
  e.begin({ id: 'late', run: async () => 'done', unlock });
  await closing;
  assert.deepEqual(woken, ['late'], 'begun during the stop: handed to the run queue, not run');
  assert.equal(await redis.exists(keys.eagerIds(e.owner)), 0, 'nothing left claimed');
  assert.deepEqual(await redis.smembers(keys.eagerOwners()), [], 'the registry left');
});

async function waitUntil(fn: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
