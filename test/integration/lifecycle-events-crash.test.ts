/**
 * Lifecycle events are never lost and never doubled across kill -9 (issue 18.1: "emitted after the
 * state change is durable, with the same delivery guarantee as any message").
 *
 * A `switchboard start` process with `switchboard.flow.*` and `switchboard.task.*` mapped to a
 * queue runs 150 flows (each sleeps, works, completes) and 5 flows that ask group:ops. It is
 * killed -9 while the starts arrive, a second process takes over (every start is sent again with
 * its message id, as a sender that got no answer would), some tasks are decided there, that one
 * is killed -9 right after deciding, and a third process finishes. At the sink every event is
 * counted: each id exactly once, and per instance exactly one started and one completed, per task
 * one created and one decided. A change made just before a kill has its event in the journal of
 * the change's own slot; the survivor's journal poll (every second, due 10 s after the change)
 * delivers it.
 *
 * Real redis-server; gateways are child processes killed by PID; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { drain } from '../support/counting-sink.ts';
import { GatewayFleet, prefixFor, sleep } from '../support/fleet.ts';
import { api, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const N = 150;
const ASKS = 5;
const SINK = 'queue:evcrash.sink';

const FLOWS: Record<string, string> = {
  'evwork.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'evwork',
  input: z.object({ i: z.number().int().min(0) }),
  async run(ctx, input) {
    await ctx.sleep(\`\${200 + (input.i % 6) * 150}ms\`);
    const twice = await ctx.step('work', async () => input.i * 2);
    return { twice };
  },
});
`,
  'evask.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'evask',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const d = await ctx.ask('group:ops', { title: 'Crash ask ' + input.ref, actions: ['ok'] });
    return d.action;
  },
});
`,
};

let redis: TestRedis | undefined;
let dir: string | undefined;
const fleet = new GatewayFleet(() => redis!.url);

before(async () => {
  redis = await startTestRedis();
  dir = mkdtempSync(join(tmpdir(), 'sb-evcrash-'));
  for (const [f, text] of Object.entries(FLOWS)) writeFileSync(join(dir, f), text);
});

after(async () => {
  await fleet.stopAll();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const extra = () => ({
  flows: { dir, concurrency: 20, lockTimeout: '2s', stalledCheck: '1s' },
  queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' },
  events: [{ types: ['switchboard.flow.*', 'switchboard.task.*'], to: SINK }],
  permissions: [
    { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'group:ops', verbs: ['consume'] }] },
    { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
  ],
});

interface Start {
  flow: string;
  id: string;
  input: unknown;
}

const STARTS: Start[] = [
  ...Array.from({ length: ASKS }, (_, i) => ({ flow: 'evask', id: `ask-${i}`, input: { ref: `R${i}` } })),
  ...Array.from({ length: N }, (_, i) => ({ flow: 'evwork', id: `work-${String(i).padStart(3, '0')}`, input: { i } })),
];

/** Sends every start (6 in flight); returns the instance of each acknowledged one. `killAt`: kill -9 the gateway after that many. */
async function sendStarts(gw: GatewayProcess, killAt = Infinity): Promise<{ acked: Map<string, string>; killed?: Promise<number | null> }> {
  const acked = new Map<string, string>();
  let next = 0;
  let killed: Promise<number | null> | undefined;
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < STARTS.length) {
      const s = STARTS[next++]!;
      let r;
      try {
        r = await api(gw.url, 'POST', `/api/flows/${s.flow}`, { user: 'ops', body: { id: s.id, input: s.input } });
      } catch {
        return; // the process is gone: this sender stops, its starts are sent again later
      }
      assert.equal(r.status, 202, `start ${s.id}: ${r.status} ${JSON.stringify(r.body)}`);
      acked.set(s.id, r.body.instanceId);
      if (acked.size >= killAt) killed ??= gw.kill('SIGKILL');
    }
  }));
  return { acked, ...(killed ? { killed } : {}) };
}

/** How many journals in the index still hold events (what a killed process had not forwarded yet). */
async function undrained(prefix: string): Promise<number> {
  const r = new Redis(redis!.url);
  try {
    const keys = await r.zrange(`${prefix}:{event-journals}`, 0, -1);
    let n = 0;
    for (const k of keys) if ((await r.hlen(k)) > 0) n++;
    return n;
  } finally {
    r.disconnect();
  }
}

async function openTasks(gw: GatewayProcess): Promise<{ id: string; title: string }[]> {
  const r = await api(gw.url, 'GET', '/api/tasks', { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body.tasks as { id: string; title: string }[]).filter((t) => t.title.startsWith('Crash ask '));
}

async function statuses(gw: GatewayProcess, flow: string): Promise<Map<string, string>> {
  const r = await api(gw.url, 'GET', `/api/flows?name=${flow}&limit=500`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return new Map((r.body.instances as { instanceId: string; status: string }[]).map((i) => [i.instanceId, i.status]));
}

test('kill -9 twice while flows start, run and tasks are decided: every flow and task event arrives exactly once', { timeout: 300_000 }, async (t) => {
  const prefix = prefixFor('evcrash');
  const gw1 = await fleet.spawn(prefix, extra());
  const first = await sendStarts(gw1, 40 + Math.floor(Math.random() * 60));
  const code = await first.killed;
  t.diagnostic(`kill -9 of pid ${gw1.pid} (exit ${code}) after ${first.acked.size} acknowledged starts`);
  assert.ok(first.acked.size < STARTS.length, 'the kill landed while starts were arriving');
  t.diagnostic(`journals the killed process left undrained: ${await undrained(prefix)}`);

  const gw2 = await fleet.spawn(prefix, extra());
  // The senders send every start again (same ids): acknowledged ones are duplicates of the same instance.
  const second = await sendStarts(gw2);
  assert.equal(second.acked.size, STARTS.length);
  for (const [id, instance] of first.acked) assert.equal(second.acked.get(id), instance, `start ${id} again is the same instance`);
  const instances = new Map([...second.acked].map(([id, instance]) => [instance, id]));

  // Two tasks decided, then kill -9 right after the second decision was acknowledged.
  let tasks: { id: string; title: string }[] = [];
  await waitFor(async () => (tasks = await openTasks(gw2)).length === ASKS, 60_000, 'the asked tasks');
  for (const task of tasks.slice(0, 2)) {
    const r = await api(gw2.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'ok' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await gw2.kill('SIGKILL');
  t.diagnostic(`journals the second killed process left undrained: ${await undrained(prefix)}`);

  const gw3 = await fleet.spawn(prefix, extra());
  const left = await openTasks(gw3);
  assert.deepEqual(left.map((x) => x.id).sort(), tasks.slice(2).map((x) => x.id).sort(), 'the two decisions survived the kill');
  for (const task of left) {
    const r = await api(gw3.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'ok' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await waitFor(async () => {
    const [work, ask] = await Promise.all([statuses(gw3, 'evwork'), statuses(gw3, 'evask')]);
    return [...work.values()].filter((s) => s === 'completed').length === N && [...ask.values()].filter((s) => s === 'completed').length === ASKS;
  }, 180_000, 'every instance to complete');

  // Drain the sink until every expected event is there, then once more after the journal grace
  // (10 s) and a poll: a late duplicate would show up by then.
  const counts = new Map<string, number>();
  const events: { id: string; type: string; subject: string; data: Record<string, unknown> }[] = [];
  const take = async () => {
    for (const m of await drain(gw3.url, SINK, counts)) events.push({ id: m.id, type: m.body.type, subject: m.body.subject, data: m.body.data });
  };
  const expected = { started: STARTS.length, completed: STARTS.length, created: ASKS, decided: ASKS };
  const tally = () => ({
    started: events.filter((e) => e.type === 'switchboard.flow.started').length,
    completed: events.filter((e) => e.type === 'switchboard.flow.completed').length,
    created: events.filter((e) => e.type === 'switchboard.task.created').length,
    decided: events.filter((e) => e.type === 'switchboard.task.decided').length,
  });
  await waitFor(async () => {
    await take();
    const n = tally();
    return n.started >= expected.started && n.completed >= expected.completed && n.created >= expected.created && n.decided >= expected.decided;
  }, 90_000, 'every flow and task event at the sink').catch((err: Error) => { throw new Error(`${err.message}: have ${JSON.stringify(tally())}, want ${JSON.stringify(expected)}`); });
  await sleep(11_500);
  await take();
  t.diagnostic(`${events.length} events at the sink: ${JSON.stringify(tally())}`);

  const doubled = [...counts].filter(([, n]) => n > 1);
  assert.deepEqual(doubled, [], 'each event id arrives once');
  assert.deepEqual(tally(), expected);
  for (const type of ['switchboard.flow.started', 'switchboard.flow.completed']) {
    const subjects = events.filter((e) => e.type === type).map((e) => e.subject);
    assert.equal(new Set(subjects).size, subjects.length, `one ${type} per instance`);
    for (const s of subjects) {
      const [, instance] = /^flow:ev(?:work|ask)\/(.+)$/.exec(s) ?? [];
      assert.ok(instance && instances.has(instance), `${type} of an instance that was started: ${s}`);
    }
  }
  for (const type of ['switchboard.task.created', 'switchboard.task.decided']) {
    const subjects = events.filter((e) => e.type === type).map((e) => e.subject).sort();
    assert.deepEqual(subjects, tasks.map((x) => `task:${x.id}`).sort(), `one ${type} per task`);
  }
  // Waits are events too; each (instance, step) once, whatever the replays after the kills.
  const waits = events.filter((e) => e.type === 'switchboard.flow.waiting').map((e) => `${e.subject}#${String(e.data.step)}`);
  assert.equal(new Set(waits).size, waits.length, 'one waiting event per instance and step');
});
