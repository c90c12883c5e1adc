/**
 * Lifecycle events recorded in the same atomic step as their change (src/core/event-journal.ts),
 * on a real redis-server:
 * - a flow's start, wait, cancel and end, and a task's creation, claim and decision write their
 *   event into the journal of the change's own slot in the script that makes the change; a
 *   refused, stale or repeated change writes none;
 * - with events off (no journal, or no mapping for the type) no journal or index key is touched;
 * - a journal left by a process that died before forwarding it is delivered by another drainer,
 *   which then drops it from the index; an announcement made meanwhile keeps it there.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { LifecycleJournal } from '../../src/core/event-journal.ts';
import type { LifecycleEvent } from '../../src/core/lifecycle.ts';
import type { Decision, Task } from '../../src/core/task.ts';
import { buildCloudEvent } from '../../src/events/cloudevent.ts';
import { FlowKeys } from '../../src/flows/keys.ts';
import { InstanceStore, type InstanceMeta } from '../../src/flows/store.ts';
import { TaskKeys } from '../../src/people/keys.ts';
import { TaskStore } from '../../src/people/task-store.ts';
import { loadScripts } from '../../src/store/scripts.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const log = pino({ level: 'silent' });
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

const now = () => new Date().toISOString();
const meta = (id: string): InstanceMeta => ({ id, flow: 'f', status: 'running', input: { a: 1 }, createdAt: now(), updatedAt: now(), startedBy: 'user:ann' });
const ev = (type: string, key: string): LifecycleEvent => ({ type, subject: `s:${key}`, key, data: { key } });
const newTask = (id: string) => ({ id, title: `task ${id}`, data: {}, actions: ['ok'], sender: 'flow:test', createdAt: now(), group: 'ops' }) as unknown as Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>;
const decision = (by: string): Decision => ({ action: 'ok', by, at: now() }) as Decision;

/**
 * A real journal whose forwarding is held (as if the process died before it): what the scripts
 * wrote stays in Redis to be looked at. `wanted`: the types some mapping wants.
 */
function heldJournal(prefix: string, wanted = (_type: string) => true): LifecycleJournal {
  return new LifecycleJournal({
    redis, prefix, log, graceMs: 60_000,
    encode: (events) => events.filter((e) => wanted(e.type)).map((e): [string, string] => { const c = buildCloudEvent(e, 'urn:test'); return [c.id, JSON.stringify(c)]; }),
    forward: () => Promise.reject(new Error('held: this process "died" before forwarding')),
  });
}

/** The types of the events journaled under `key`. */
async function journaled(key: string): Promise<string[]> {
  return Object.values(await redis.hgetall(key)).map((v) => (JSON.parse(v) as { type: string }).type).sort();
}

test('flow changes journal their event in the same script; a repeated, stale or refused change journals none', async () => {
  const prefix = 'fj';
  const store = new InstanceStore(redis, prefix, heldJournal(prefix));
  const key = new FlowKeys(prefix).instance('i1', 'events');
  assert.equal(await store.create(meta('i1'), () => [ev('switchboard.flow.started', 'i1')]), true);
  assert.deepEqual(await journaled(key), ['switchboard.flow.started']);
  assert.equal(await redis.hget(new FlowKeys(prefix).instance('i1', 'meta'), 'status'), 'running', 'the change and its event are there together');
  assert.ok(await redis.zscore(`${prefix}:{event-journals}`, key), 'the journal is announced in the index');

  // The same start again (another event key, so a write would show): nothing.
  assert.equal(await store.create(meta('i1'), () => [ev('switchboard.flow.started', 'i1-again')]), false);
  assert.equal(await redis.hlen(key), 1);

  // A wait is journaled with it; a cancel too; after the cancel a run's park and end write none.
  assert.equal(await store.park('i1', 'tok', [], { step: 0, kind: 'sleep' }, () => [ev('switchboard.flow.waiting', 'i1-0')]), 'running');
  assert.deepEqual(await journaled(key), ['switchboard.flow.started', 'switchboard.flow.waiting']);
  assert.equal(await store.cancel('i1', 'user:ann', () => [ev('switchboard.flow.cancelled', 'i1-c')]), 'waiting');
  assert.equal(await redis.hget(new FlowKeys(prefix).instance('i1', 'meta'), 'status'), 'cancelled');
  assert.equal(await store.park('i1', 'tok', [], { step: 1, kind: 'sleep' }, () => [ev('switchboard.flow.waiting', 'i1-1')]), 'cancelled');
  assert.equal(await store.finish('i1', { status: 'completed' }, [], 60_000, () => [ev('switchboard.flow.completed', 'i1-done')]), 'cancelled');
  assert.equal(await store.cancel('i1', 'user:bob', () => [ev('switchboard.flow.cancelled', 'i1-c2')]), 'cancelled', 'a second cancel changes nothing');
  assert.deepEqual(await journaled(key), ['switchboard.flow.cancelled', 'switchboard.flow.started', 'switchboard.flow.waiting']);

  // An end that is recorded carries its event; one of a missing instance writes nothing.
  assert.equal(await store.create(meta('i2'), () => []), true);
  assert.equal(await store.finish('i2', { status: 'completed' }, [], 60_000, () => [ev('switchboard.flow.completed', 'i2')]), 'running');
  assert.deepEqual(await journaled(new FlowKeys(prefix).instance('i2', 'events')), ['switchboard.flow.completed']);
  assert.equal(await store.finish('nope', { status: 'completed' }, [], 60_000, () => [ev('switchboard.flow.completed', 'nope')]), null);
  assert.equal(await redis.exists(new FlowKeys(prefix).instance('nope', 'events')), 0);
});

test('task changes journal their event with the change; a claim of someone else\'s task, a repeat claim and a second decision journal none', async () => {
  const prefix = 'tj';
  const store = new TaskStore(redis, prefix, 1, heldJournal(prefix));
  const key = new TaskKeys(prefix).events('t1');
  assert.equal(await store.create(newTask('t1'), { messageId: 'm1' }, () => [ev('switchboard.task.created', 't1')]), true);
  assert.equal(await store.create(newTask('t1'), { messageId: 'm1' }, () => [ev('switchboard.task.created', 't1-again')]), false);
  assert.deepEqual(await store.claim('t1', 'user:a', undefined, 'claim', () => [ev('switchboard.task.claimed', 't1-a')]), { ok: true });
  assert.deepEqual(await store.claim('t1', 'user:a', undefined, 'claim', () => [ev('switchboard.task.claimed', 't1-a2')]), { ok: true }, 'claiming one\'s own task is a no-op');
  assert.deepEqual(await store.claim('t1', 'user:b', undefined, 'claim', () => [ev('switchboard.task.claimed', 't1-b')]), { ok: false, reason: 'claimed', holder: 'user:a' });
  assert.deepEqual(await journaled(key), ['switchboard.task.claimed', 'switchboard.task.created']);
  const task = (await store.get('t1'))!;
  assert.deepEqual(await store.decide(task, decision('user:a'), undefined, () => [ev('switchboard.task.decided', 't1')]), { ok: true });
  assert.deepEqual(await store.decide(task, decision('user:a'), undefined, () => [ev('switchboard.task.decided', 't1-again')]), { ok: false, reason: 'decided', holder: 'user:a' });
  assert.deepEqual(await journaled(key), ['switchboard.task.claimed', 'switchboard.task.created', 'switchboard.task.decided']);
  assert.equal((await store.get('t1'))!.status, 'decided');
});

test('events off: no journal and no index key is read or written, and no extra command is sent', async () => {
  const watched: string[][] = [];
  const monitor = await redis.monitor();
  monitor.on('monitor', (_time: string, args: string[]) => watched.push(args));
  try {
    // No journal at all (no `events:`), and a journal no mapping of these types wants.
    // 'on1' is the control: a journal that wants them, so the same calls do touch journals.
    for (const [prefix, journal] of [['off1', undefined], ['off2', heldJournal('off2', () => false)], ['on1', heldJournal('on1')]] as const) {
      const flows = new InstanceStore(redis, prefix, journal);
      const tasks = new TaskStore(redis, prefix, 1, journal);
      await flows.create(meta('x'), () => [ev('switchboard.flow.started', 'x')]);
      await flows.park('x', 'tok', [], { step: 0, kind: 'sleep' }, () => [ev('switchboard.flow.waiting', 'x')]);
      await flows.finish('x', { status: 'completed' }, [], 60_000, () => [ev('switchboard.flow.completed', 'x')]);
      await tasks.create(newTask('y'), { messageId: 'my' }, () => [ev('switchboard.task.created', 'y')]);
      await tasks.decide((await tasks.get('y'))!, decision('user:a'), undefined, () => [ev('switchboard.task.decided', 'y')]);
    }
    await redis.ping();
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    monitor.disconnect();
  }
  const control = watched.filter((args) => !/^eval/i.test(args[0]!) && args.some((a) => /^on1:.*(:events$|event-journals)/.test(a)));
  assert.ok(control.some((args) => args[0]!.toLowerCase() === 'hset') && control.some((args) => args[0]!.toLowerCase() === 'zadd'), 'MONITOR shows a script\'s own writes to a journal (the control)');
  const mine = watched.filter((args) => args.some((a) => /^off[12]:/.test(a)));
  assert.ok(mine.length >= 10, `saw the stores' commands (${mine.length})`);
  // A script is called with its journal among its KEYS either way (its file declares them); what
  // counts is that nothing reads or writes it: MONITOR shows the commands a script runs too.
  const touching = mine.filter((args) => !/^eval/i.test(args[0]!) && args.some((a) => /:events$|event-journals/.test(a)));
  assert.deepEqual(touching, [], 'no command reads or writes a journal or the index');
  assert.equal(mine.filter((a) => a[0]!.toLowerCase() === 'zadd' && a[1]!.includes('event')).length, 0);
  assert.deepEqual(await redis.keys('off*event*'), []);
  // Both runs sent the same commands: a journal that records nothing costs nothing.
  const shape = (p: string) => mine.filter((args) => args.some((a) => a.startsWith(`${p}:`))).map((args) => args[0]!.toLowerCase());
  assert.deepEqual(shape('off2'), shape('off1'));
});

test('a journal left by a process that died before forwarding is delivered by another drainer, then dropped from the index', async () => {
  const prefix = 'dj';
  const dead = heldJournal(prefix);
  const store = new InstanceStore(redis, prefix, dead);
  await store.create(meta('d1'), () => [ev('switchboard.flow.started', 'd1')]);
  await dead.close();
  const key = new FlowKeys(prefix).instance('d1', 'events');
  assert.equal(await redis.hlen(key), 1);

  const forwarded: string[] = [];
  const survivor = new LifecycleJournal({
    redis, prefix, log, graceMs: 300, pollMs: 100,
    encode: () => [],
    forward: async (id, json) => { forwarded.push(`${id} ${(JSON.parse(json) as { type: string }).type}`); },
  });
  // Due only after its grace: make it due now, as time would.
  await redis.zadd(`${prefix}:{event-journals}`, Date.now() - 1, key);
  survivor.start();
  try {
    const deadline = Date.now() + 10_000;
    while ((await redis.zscore(`${prefix}:{event-journals}`, key)) !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(forwarded.length, 1, forwarded.join(', '));
    assert.match(forwarded[0]!, /^ev-\S+ switchboard\.flow\.started$/);
    assert.equal(await redis.exists(key), 0, 'forwarded entries are deleted');
    assert.equal(await redis.zscore(`${prefix}:{event-journals}`, key), null, 'and the journal leaves the index');
  } finally {
    await survivor.close();
  }
});

test('forgetEventJournal drops an index entry only if nobody announced the journal again since it was read', async () => {
  const scripts = loadScripts(redis, new URL('../../src/core/scripts/', import.meta.url), { forgetEventJournal: 1 });
  const index = 'fg:{event-journals}';
  await redis.zadd(index, 1000.25, 'j');
  const read = (await redis.zrange(index, 0, -1, 'WITHSCORES'))[1]!;
  assert.equal(await scripts.forgetEventJournal([index], 'j', read), 1);
  assert.equal(await redis.zscore(index, 'j'), null);
  await redis.zadd(index, 1000.25, 'j');
  const stale = (await redis.zrange(index, 0, -1, 'WITHSCORES'))[1]!;
  await redis.zadd(index, 2000.5, 'j'); // a writer announced a new change meanwhile
  assert.equal(await scripts.forgetEventJournal([index], 'j', stale), 0);
  assert.equal(await redis.zscore(index, 'j'), '2000.5');
});

test('a writer whose clock runs behind the drainer\'s still has its journal looked at after the grace (the index runs on Redis\'s clock)', async () => {
  const prefix = 'sk';
  const key = new FlowKeys(prefix).instance('s1', 'events');
  const forwarded: string[] = [];
  const drainer = new LifecycleJournal({ redis, prefix, log, graceMs: 1000, encode: () => [], forward: async (id) => { forwarded.push(id); } });
  const writer = new LifecycleJournal({ redis, prefix, log, graceMs: 1000, encode: () => [], forward: () => Promise.reject(new Error('held')) });
  const realNow = Date.now;
  try {
    // The writer announces with a clock two minutes behind, as a gateway out of NTP sync would.
    Date.now = () => realNow() - 120_000;
    try {
      await writer.expect(key);
    } finally {
      Date.now = realNow;
    }
    // The drainer looks before the writer's script ran: nothing to forward yet.
    await drainer.poll();
    assert.deepEqual(forwarded, []);
    // The script runs, and the writer dies before draining it (its journal is all that is left).
    await redis.hset(key, 'ev-skewed', JSON.stringify({ type: 'switchboard.flow.started' }));
    for (const deadline = realNow() + 15_000; forwarded.length === 0 && realNow() < deadline;) {
      await new Promise((r) => setTimeout(r, 50));
      await drainer.poll();
    }
    assert.deepEqual(forwarded, ['ev-skewed'], 'the journal was still in the index when its grace was over');
  } finally {
    await writer.close();
    await drainer.close();
  }
});

test('announceEventJournal: every announcement moves the score, even many within one millisecond', async () => {
  const scripts = loadScripts(redis, new URL('../../src/core/scripts/', import.meta.url), { announceEventJournal: 1 });
  const index = 'an:{event-journals}';
  const [sec] = await redis.time();
  const scores = await Promise.all(Array.from({ length: 50 }, () => scripts.announceEventJournal([index], 'j', 1000)));
  assert.equal(new Set(scores).size, 50, `no two announcements left the same score: ${scores.join(' ')}`);
  assert.ok(Number(scores[0]) >= Number(sec) * 1000 + 1000, 'scored by Redis\'s time plus the grace');
});
