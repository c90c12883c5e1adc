/**
 * DESIGN §3 and §9 under crashes: durable flows survive `kill -9` of the gateway process.
 *
 * 1. 200 instances of a flow that sends 3 messages to a sink queue, with a journaled step and two
 *    durable sleeps (1–3.7 s) between the sends, run in a `switchboard start` process. The process
 *    is killed with SIGKILL at a random point while they run (some but not all completed), a new
 *    process on the same Redis and prefix is started, killed again at a random later point, and a
 *    third process finishes the work.
 * 2. The same flow, but the process is killed while the 200 starts arrive over HTTP; the senders
 *    then retry every start on a new process (same message ids).
 * 3. A flow whose first step is a durable sleep longer than the lock timeout plus a restart: the
 *    process is killed while the starts arrive (runs are scheduling their timers); every timer
 *    must still fire on the new process.
 *
 * Each ends with the same checks (verifyAll):
 * - every instance is `completed` with its result and the full step history;
 * - the sink, drained with peek-lock receive/ack and counted by id, holds each `<instanceId>:<step>`
 *   of every send exactly once, no others, nothing dead-lettered (a re-run send carries the same
 *   id and is deduplicated at the queue);
 * - starting them all again with the same message ids is reported as duplicates and sends nothing;
 * - GET /api/flows lists every instance.
 *
 * Runs lost with the killed process are found by BullMQ's stalled check (1 s) once their lock
 * (3 s) expires; the instance lock expires likewise. The flows folder is a temp folder without a
 * package.json. Real redis-server (AOF, fsync always); polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { openRedis } from '../../src/store/redis.ts';
import { api, enc, waitFor, type ApiResponse, type GatewayProcess } from '../support/gateway.ts';
import { assertExactlyOnce, drain, duplicatesCaught } from '../support/counting-sink.ts';
import { GatewayFleet } from '../support/fleet.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const N = 200;

/** A flow of this file: its source, its sink, which steps send, and what it ends with. */
interface FlowSpec {
  name: string;
  sink: string;
  /** Step numbers of its sends: the ids at the sink are `<instanceId>:<n>`. */
  sendSteps: number[];
  stepKinds: string[];
  result(i: number): unknown;
  source: string;
}

const CRASHY: FlowSpec = {
  name: 'crashy',
  sink: 'queue:flowcrash.sink',
  // 0 send, 1 step, 2 sleep, 3 send, 4 sleep, 5 send
  sendSteps: [0, 3, 5],
  stepKinds: ['send', 'step', 'sleep', 'send', 'sleep', 'send'],
  result: (i) => ({ i, doubled: i * 2, sent: 3 }),
  source: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: 'crashy',
  input: z.object({ i: z.number().int().min(0) }),
  async run(ctx, input) {
    await ctx.send('queue:flowcrash.sink', { i: input.i, part: 1 });
    // A step that takes a while: a kill often lands in the middle of one (it then runs again).
    const doubled = await ctx.step('work', async () => {
      await new Promise((r) => setTimeout(r, 250));
      return input.i * 2;
    });
    // Sleeps of 1 to 3.7 s, spread by input so that completions spread over several seconds and
    // the kills land while instances are at every stage.
    await ctx.sleep(\`\${1000 + (input.i % 10) * 300}ms\`);
    await ctx.send('queue:flowcrash.sink', { i: input.i, part: 2, doubled });
    await ctx.sleep(\`\${1000 + (input.i % 7) * 200}ms\`);
    await ctx.send('queue:flowcrash.sink', { i: input.i, part: 3 });
    return { i: input.i, doubled, sent: 3 };
  },
});
`,
};

const SLEEPER: FlowSpec = {
  name: 'sleeper',
  sink: 'queue:flowcrash.woken',
  // 0 sleep, 1 send
  sendSteps: [1],
  stepKinds: ['sleep', 'send'],
  result: (i) => ({ i, woke: true }),
  source: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: 'sleeper',
  input: z.object({ i: z.number().int().min(0) }),
  async run(ctx, input) {
    // Longer than the lock timeout (3 s) plus a restart: a run lost in the crash is replayed
    // before this timer is due, so the timer itself must have been scheduled durably.
    await ctx.sleep('12s');
    await ctx.send('queue:flowcrash.woken', { i: input.i });
    return { i: input.i, woke: true };
  },
});
`,
};

let redis: TestRedis | undefined;
let client: Redis | undefined;
let flowsDir: string | undefined;
const fleet = new GatewayFleet(() => redis!.url);

before(async () => {
  redis = await startTestRedis();
  client = await openRedis(redis.url);
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-flows-crash-'));
  // No package.json: flow files are ES modules wherever they lie, in `switchboard start` too.
  for (const spec of [CRASHY, SLEEPER]) writeFileSync(join(flowsDir, `${spec.name}.ts`), spec.source);
});

after(async () => {
  await fleet.stopAll();
  await client?.quit().catch(() => client?.disconnect());
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

const randomInt = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));
const messageIdsFor = (tag: string) => Array.from({ length: N }, (_, i) => `${tag}-${String(i).padStart(4, '0')}`);

function gatewayExtra(): Record<string, unknown> {
  return {
    flows: { dir: flowsDir, concurrency: 20, lockTimeout: '3s', stalledCheck: '1s' },
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  };
}

const spawnGw = (prefix: string) => fleet.spawn(prefix, gatewayExtra());

/** api() with a clear error when the request itself fails: which call, why, and that gateway's output. */
async function call(base: string, method: string, path: string, opts: Parameters<typeof api>[3] = {}): Promise<ApiResponse> {
  try {
    return await api(base, method, path, opts);
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    const p = fleet.processes.find((x) => x.url === base);
    throw new Error(`${method} ${path} on ${base} (pid ${p?.pid}) failed: ${(err as Error).message}${cause ? ` (${String(cause)})` : ''}\n--- its output:\n${p?.output() ?? '?'}`);
  }
}

type Counts = Record<string, number>;

function tally(values: Iterable<string>): Counts {
  const out: Counts = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

/** Instances of the flow by status, through GET /api/flows. */
async function statusCounts(base: string, flow: string): Promise<{ counts: Counts; rows: { instanceId: string; status: string }[] }> {
  const r = await call(base, 'GET', `/api/flows?name=${flow}&limit=500`, { user: 'ops' });
  assert.equal(r.status, 200, `list flows: ${r.status} ${JSON.stringify(r.body)}`);
  const rows = r.body.instances as { instanceId: string; status: string }[];
  return { counts: tally(rows.map((row) => row.status)), rows };
}

/**
 * Status of each instance: from GET /api/flows, and for any that list does not hold, from
 * GET /api/flows/:name/:id (an instance missing from the list is still found and waited for).
 */
async function instanceStatuses(gw: GatewayProcess, flow: string, ids: string[]): Promise<{ status: Map<string, string>; unlisted: string[] }> {
  const { rows } = await statusCounts(gw.url, flow);
  const status = new Map(rows.map((r) => [r.instanceId, r.status]));
  const unlisted = ids.filter((id) => !status.has(id));
  for (const id of unlisted) {
    const r = await call(gw.url, 'GET', `/api/flows/${flow}/${id}`, { user: 'ops' });
    status.set(id, r.status === 200 ? r.body.status : `HTTP ${r.status}`);
  }
  return { status, unlisted };
}

/**
 * Polls until at least `atLeast` instances completed while some run is in progress (or, failing
 * that, `atLeast + 15` completed, at most N - 5), then returns the counts and the duplicates the
 * gateway caught so far: the caller kills right away. Fails clearly if every instance completed
 * first (the kill would not be mid-run).
 */
async function waitUntilCompleted(base: string, flow: string, atLeast: number, what: string): Promise<{ counts: Counts; duplicates: number }> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const [{ counts, rows }, duplicates] = await Promise.all([statusCounts(base, flow), duplicatesCaught(base)]);
    const done = counts.completed ?? 0;
    if (done >= N) throw new Error(`${what}: all ${N} instances completed before the kill (wanted it at ≥${atLeast} of ${N}): make the flow slower`);
    if (rows.length === N && ((done >= atLeast && (counts.running ?? 0) > 0) || done >= Math.max(atLeast, Math.min(atLeast + 15, N - 5)))) return { counts, duplicates };
    if (Date.now() > deadline) throw new Error(`${what}: only ${done} instances completed within 120 s (${JSON.stringify(counts)})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts every instance with its known message id (8 requests in flight); returns the instance ids. */
async function startAll(base: string, flow: string, ids: string[], expectDuplicate: boolean): Promise<Map<string, string>> {
  const instances = new Map<string, string>();
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < ids.length) {
      const i = next++;
      const id = ids[i]!;
      const r = await call(base, 'POST', `/api/flows/${flow}`, { user: 'ops', body: { id, input: { i } } });
      assert.equal(r.status, 202, `start ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, expectDuplicate, `start ${id}: duplicate should be ${expectDuplicate}`);
      instances.set(id, r.body.instanceId);
    }
  }));
  return instances;
}

/**
 * Starts all N with 8 senders and kills the gateway under them after `killAt` acknowledged starts;
 * the senders keep sending until a start fails (connection reset or refused), then stop.
 */
async function startAndKill(t: TestContext, gw: GatewayProcess, flow: string, ids: string[], killAt: number): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  let next = 0;
  let killing: Promise<number | null> | undefined;
  let failures = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < N) {
      const i = next++;
      const id = ids[i]!;
      try {
        const r = await api(gw.url, 'POST', `/api/flows/${flow}`, { user: 'ops', body: { id, input: { i } } });
        assert.equal(r.status, 202, `start ${id}: ${r.status} ${JSON.stringify(r.body)}`);
        acked.set(id, r.body.instanceId);
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        failures++;
        return;
      }
      if (acked.size >= killAt) killing ??= gw.kill('SIGKILL');
    }
  }));
  const code = await killing;
  t.diagnostic(`kill -9 of pid ${gw.pid} (exit ${code}) after ${acked.size} acknowledged starts (aimed at ${killAt}); ${failures} start(s) in flight failed; ${N - next} never sent`);
  assert.ok(acked.size < N, 'the kill landed after every start was acknowledged');
  return acked;
}

/** The senders retry every start (not knowing which got through): acknowledged ones must be duplicates. */
async function retryStarts(t: TestContext, gw: GatewayProcess, flow: string, ids: string[], acked: Map<string, string>): Promise<Map<string, string>> {
  const instances = new Map<string, string>();
  let next = 0;
  const duplicates = { acked: 0, unacked: 0 };
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < N) {
      const i = next++;
      const id = ids[i]!;
      const r = await call(gw.url, 'POST', `/api/flows/${flow}`, { user: 'ops', body: { id, input: { i } } });
      assert.equal(r.status, 202, `retried start ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      if (acked.has(id)) {
        assert.equal(r.body.duplicate, true, `start ${id} was acknowledged before the kill, yet its retry was not a duplicate`);
        assert.equal(r.body.instanceId, acked.get(id));
        duplicates.acked++;
      } else if (r.body.duplicate) duplicates.unacked++;
      instances.set(id, r.body.instanceId);
    }
  }));
  t.diagnostic(`retried all ${N} starts on pid ${gw.pid}: duplicates ${JSON.stringify(duplicates)} (unacked: created before the kill, not acknowledged)`);
  assert.equal(new Set(instances.values()).size, N, 'every start message made its own instance');
  return instances;
}

/** Jobs of the flow-run queue that would run `instanceId` (queued, delayed, in flight), for diagnostics. */
async function runJobsFor(prefix: string, instanceIds: string[]): Promise<Record<string, string[]>> {
  const runs = new Queue('{flow-runs}', { connection: client!, prefix });
  try {
    const jobs = await runs.getJobs(['wait', 'active', 'delayed', 'prioritized']);
    const out: Record<string, string[]> = {};
    for (const id of instanceIds) {
      out[id] = await Promise.all(jobs.filter((j) => j?.data?.id === id).map(async (j) => `${await j.getState()}${j.delay ? ` (delay ${j.delay} ms from ${new Date(j.timestamp).toISOString()})` : ''}`));
    }
    return out;
  } finally {
    await runs.close();
  }
}

/**
 * After the last restart: every instance completes with its result and full history; the sink,
 * drained and counted by id, holds each of their sends exactly once; repeated starts (the senders'
 * retries) are duplicates and send nothing more; and every instance is listed by GET /api/flows.
 */
async function verifyAll(t: TestContext, gw: GatewayProcess, prefix: string, spec: FlowSpec, messageIds: string[], instances: Map<string, string>, context: string): Promise<void> {
  const ids = [...instances.values()];
  let last: Awaited<ReturnType<typeof instanceStatuses>> | undefined;
  await waitFor(async () => {
    last = await instanceStatuses(gw, spec.name, ids);
    return ids.every((id) => last!.status.get(id) === 'completed');
  }, 120_000, `all ${N} instances to complete after the restarts`).catch(async (err: Error) => {
    const stuck = ids.filter((id) => last?.status.get(id) !== 'completed').slice(0, 5);
    const views = await Promise.all(stuck.map(async (id) => (await call(gw.url, 'GET', `/api/flows/${spec.name}/${id}`, { user: 'ops' })).body));
    throw new Error(`${err.message} (${context}): ${JSON.stringify(tally(last?.status.values() ?? []))}; first unfinished: ${JSON.stringify(views)}; ` +
      `their run jobs (queued/delayed/active): ${JSON.stringify(await runJobsFor(prefix, stuck))}\n--- gateway output:\n${gw.output().slice(-3000)}`);
  });

  // Every instance: completed, the right result, the full history, nothing left waiting.
  const problems: string[] = [];
  for (const [messageId, instanceId] of instances) {
    const i = messageIds.indexOf(messageId);
    const v = (await call(gw.url, 'GET', `/api/flows/${spec.name}/${instanceId}`, { user: 'ops' })).body;
    const kinds = (v.steps as { kind: string; done: boolean }[]).map((s) => s.kind);
    if (v.status !== 'completed') problems.push(`${instanceId}: status ${v.status}`);
    else if (JSON.stringify(v.result) !== JSON.stringify(spec.result(i))) problems.push(`${instanceId}: result ${JSON.stringify(v.result)}`);
    else if (JSON.stringify(kinds) !== JSON.stringify(spec.stepKinds)) problems.push(`${instanceId}: steps ${JSON.stringify(kinds)}`);
    else if (!(v.steps as { done: boolean }[]).every((s) => s.done)) problems.push(`${instanceId}: a step not done`);
    else if (v.waitingOn !== undefined || v.error !== undefined) problems.push(`${instanceId}: waitingOn/error left: ${JSON.stringify(v)}`);
  }
  assert.deepEqual(problems.slice(0, 20), [], `${problems.length} instance(s) not as expected`);

  t.diagnostic(`re-sent messages the last gateway caught as duplicates at the sink: ${await duplicatesCaught(gw.url)}`);

  const counts = new Map<string, number>();
  await drain(gw.url, spec.sink, counts, { request: call });
  const expected = ids.flatMap((id) => spec.sendSteps.map((n) => `${id}:${n}`));
  assert.equal(expected.length, N * spec.sendSteps.length);
  const dlq = (await call(gw.url, 'GET', `/api/dlq/${enc(spec.sink)}`, { user: 'ops' })).body.depth;
  assertExactlyOnce(expected, counts, `; dead letters ${dlq}; ${context}`);
  assert.equal(dlq, 0, 'dead letters at the sink');

  // The senders retry their starts after the crashes: the same message ids start nothing new.
  const again = await startAll(gw.url, spec.name, messageIds, true);
  assert.deepEqual(again, instances, 'a repeated start message maps to the same instance');
  const final = await instanceStatuses(gw, spec.name, ids);
  assert.deepEqual(tally(final.status.values()), { completed: N }, 'instances after the repeated starts');
  const late = new Map<string, number>();
  // Give any (wrongly) re-run instance time to send before looking: poll a few times for nothing.
  for (let k = 0; k < 10; k++) {
    await new Promise((r) => setTimeout(r, 200));
    await drain(gw.url, spec.sink, late, { request: call });
  }
  assert.deepEqual([...late.keys()], [], 'repeated starts of completed instances sent messages again');

  // Last, as it loses nothing: GET /api/flows lists every instance (its index is written apart
  // from the instance, so a crash in between must be repaired, e.g. by the sender's retry).
  assert.deepEqual(final.unlisted, [], `${final.unlisted.length} completed instance(s) missing from GET /api/flows?name=${spec.name} (${context})`);
}

test(`kill -9 of the gateway twice while ${N} flows run: all complete, each of their ${N * 3} sends at the sink exactly once`, { timeout: 300_000 }, async (t: TestContext) => {
  const prefix = `fcrash${Math.random().toString(36).slice(2, 8)}`;
  const messageIds = messageIdsFor('fc-start');

  const first = await spawnGw(prefix);
  const instances = await startAll(first.url, CRASHY.name, messageIds, false);
  assert.equal(new Set(instances.values()).size, N, 'every start message made its own instance');

  // First kill: at a random number of completed instances (1‥60), while the rest still run.
  const k1 = randomInt(1, 60);
  const atKill1 = await waitUntilCompleted(first.url, CRASHY.name, k1, 'first kill');
  const code1 = await first.kill('SIGKILL');
  t.diagnostic(`kill -9 #1 of pid ${first.pid} (exit ${code1}) aiming at ≥${k1} completed; last seen ${JSON.stringify(atKill1.counts)}`);

  // Second process: killed again at a random point between where the first stopped and the end.
  const second = await spawnGw(prefix);
  const seen1 = await statusCounts(second.url, CRASHY.name);
  assert.ok((seen1.counts.completed ?? 0) < N, `every instance had completed before the first kill landed: ${JSON.stringify(seen1.counts)}`);
  const c1 = seen1.counts.completed ?? 0;
  const k2 = randomInt(c1 + 1, c1 + Math.max(1, Math.floor((N - c1) / 2)));
  const atKill2 = await waitUntilCompleted(second.url, CRASHY.name, k2, 'second kill');
  const code2 = await second.kill('SIGKILL');
  t.diagnostic(`restarted (pid ${second.pid}) with ${JSON.stringify(seen1.counts)}; kill -9 #2 (exit ${code2}) aiming at ≥${k2} completed; last seen ${JSON.stringify(atKill2.counts)}; re-sent messages it had caught as duplicates at the sink by then: ${atKill2.duplicates}`);

  // Third process finishes the work.
  const third = await spawnGw(prefix);
  const seen2 = await statusCounts(third.url, CRASHY.name);
  // (It may have finished them all by now: timers that fell due while no process ran fire at once.
  // The kill itself was mid-run: waitUntilCompleted saw fewer than N completed just before it.)
  t.diagnostic(`restarted (pid ${third.pid}) with ${JSON.stringify(seen2.counts)}`);

  await verifyAll(t, third, prefix, CRASHY, messageIds, instances, `statuses at kill 1 ${JSON.stringify(atKill1.counts)}, at kill 2 ${JSON.stringify(atKill2.counts)}`);
  await third.kill('SIGTERM');
});

test(`kill -9 of the gateway while the ${N} starts arrive: the senders retry on a new process, each instance once, each send once`, { timeout: 300_000 }, async (t: TestContext) => {
  const prefix = `fstart${Math.random().toString(36).slice(2, 8)}`;
  const messageIds = messageIdsFor('fs-start');
  const first = await spawnGw(prefix);
  const killAt = randomInt(20, 150);
  const acked = await startAndKill(t, first, CRASHY.name, messageIds, killAt);
  const second = await spawnGw(prefix);
  const instances = await retryStarts(t, second, CRASHY.name, messageIds, acked);
  await verifyAll(t, second, prefix, CRASHY, messageIds, instances, `killed after ${acked.size} acknowledged starts`);
  await second.kill('SIGTERM');
});

test(`kill -9 of the gateway while ${N} flows schedule a 12 s timer: every timer fires on the new process`, { timeout: 300_000 }, async (t: TestContext) => {
  const prefix = `ftimer${Math.random().toString(36).slice(2, 8)}`;
  const messageIds = messageIdsFor('ft-start');
  const first = await spawnGw(prefix);
  const killAt = randomInt(30, 150);
  const acked = await startAndKill(t, first, SLEEPER.name, messageIds, killAt);
  const second = await spawnGw(prefix);
  const instances = await retryStarts(t, second, SLEEPER.name, messageIds, acked);
  await verifyAll(t, second, prefix, SLEEPER, messageIds, instances, `killed after ${acked.size} acknowledged starts`);
  await second.kill('SIGTERM');
});
