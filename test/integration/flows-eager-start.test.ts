/**
 * Eager start (DESIGN §9): a new flow instance runs in the gateway process that acknowledged its
 * start, without a BullMQ run job, and nothing acknowledged is lost when that process dies.
 *
 * 1. In process: 40 starts run to completion with no run job ever added (the run queue's job id
 *    counter is never made), nothing left claimed; with `flows.eagerStart: false` each start
 *    adds one run job, as before.
 * 2. kill -9 of a `switchboard start` process whose started instances mostly wait for a run
 *    there (flows.concurrency 1, a 150 ms step): a second process hands them to its run queue
 *    once the dead one's lease (lockTimeout 3 s) has expired; every instance completes, each send
 *    at the sink exactly once, and the dead process's claim is gone from Redis.
 * 3. SIGTERM of such a process: its waiting starts go to the run queue before it exits (nothing
 *    waits for a lease), and a second process completes them, each send once.
 *
 * Real redis-server (AOF, fsync always), real gateway processes; polls only, no timing asserts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import type { Redis } from 'ioredis';
import { FlowKeys } from '../../src/flows/keys.ts';
import { InstanceStore } from '../../src/flows/store.ts';
import { openRedis } from '../../src/store/redis.ts';
import { assertExactlyOnce, drain } from '../support/counting-sink.ts';
import { GatewayFleet, prefixFor } from '../support/fleet.ts';
import { api, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: 'hop',
  input: z.object({ i: z.number().int().min(0) }),
  async run(ctx, input) {
    await ctx.send('queue:eager.sink', { i: input.i, part: 1 });
    // Slow enough that, one run at a time, most started instances wait for their run.
    const doubled = await ctx.step('work', async () => {
      await new Promise((r) => setTimeout(r, 150));
      return input.i * 2;
    });
    await ctx.send('queue:eager.sink', { i: input.i, part: 2, doubled });
    return { doubled };
  },
});
`;
const SINK = 'queue:eager.sink';

let redis: TestRedis | undefined;
let client: Redis | undefined;
let flowsDir: string | undefined;
const fleet = new GatewayFleet(() => redis!.url);

before(async () => {
  redis = await startTestRedis();
  client = await openRedis(redis.url);
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-flows-eager-'));
  writeFileSync(join(flowsDir, 'hop.ts'), FLOW);
});

after(async () => {
  await fleet.stopAll();
  await client?.quit().catch(() => client?.disconnect());
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

function extra(flows: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    flows: { dir: flowsDir, concurrency: 1, lockTimeout: '3s', stalledCheck: '1s', ...flows },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  };
}

/** Starts `n` instances over HTTP, 8 at a time; their instance ids by input. */
async function startAll(base: string, tag: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < n) {
      const i = next++;
      const r = await api(base, 'POST', '/api/flows/hop', { user: 'ops', body: { id: `${tag}-${i}`, input: { i } } });
      assert.equal(r.status, 202, `start ${i}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, false);
      ids[i] = r.body.instanceId;
    }
  }));
  return ids;
}

/** Statuses of the instances, tallied. */
async function statuses(base: string, ids: string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const id of ids) {
    const r = await api(base, 'GET', `/api/flows/hop/${id}`, { user: 'ops' });
    const s = r.status === 200 ? r.body.status : `HTTP ${r.status}`;
    out[s] = (out[s] ?? 0) + 1;
  }
  return out;
}

/** Every instance completes on `gw`; the sink holds each of their two sends exactly once. */
async function verifyAll(gw: { url: string }, ids: string[], context: string): Promise<void> {
  let last: Record<string, number> = {};
  await waitFor(async () => (last = await statuses(gw.url, ids)).completed === ids.length, 60_000, `all ${ids.length} instances to complete`)
    .catch((err: Error) => { throw new Error(`${err.message} (${context}): ${JSON.stringify(last)}`); });
  const counts = new Map<string, number>();
  await drain(gw.url, SINK, counts);
  assertExactlyOnce(ids.flatMap((id) => [`${id}:0`, `${id}:2`]), counts, `; ${context}`);
}

/** Every eager owner in the registry, with how many instances it still claims. */
async function claims(prefix: string): Promise<Record<string, number>> {
  const keys = new FlowKeys(prefix);
  const owners = await client!.smembers(keys.eagerOwners());
  return Object.fromEntries(await Promise.all(owners.map(async (o) => [o, await client!.scard(keys.eagerIds(o))] as const)));
}

test('a start runs in the process that took it, with no run job; eagerStart: false adds a run job per start', async () => {
  const prefix = prefixFor('eager');
  const gw = await fleet.start(prefix, extra({ concurrency: 4 }));
  const ids = await startAll(gw.url, 'in', 40);
  await verifyAll(gw, ids, 'eager, in process');
  assert.equal(await client!.get(`${prefix}:{flow-runs}:id`), null, 'no run job was ever added');
  await waitFor(async () => Object.values(await claims(prefix)).every((n) => n === 0), 5_000, 'every start to be settled');
  assert.equal(Object.keys(await claims(prefix)).length, 1, 'one process registered');

  const off = prefixFor('queued');
  const gw2 = await fleet.start(off, extra({ concurrency: 4, eagerStart: false }));
  const ids2 = await startAll(gw2.url, 'q', 40);
  await verifyAll(gw2, ids2, 'eager start off');
  assert.equal(await client!.get(`${off}:{flow-runs}:id`), '40', 'one run job per start');
  assert.deepEqual(await claims(off), {}, 'nothing registered with eager start off');
});

test('kill -9 of a process holding acknowledged starts not yet run: another process runs every one once its lease expires, each send once', { timeout: 120_000 }, async (t: TestContext) => {
  const prefix = prefixFor('eagerkill');
  const first: GatewayProcess = await fleet.spawn(prefix, extra());
  const ids = await startAll(first.url, 'k', 60);
  const before = await claims(prefix);
  const held = Object.values(before)[0] ?? 0;
  t.diagnostic(`claimed by the first process when killed: ${JSON.stringify(before)}`);
  assert.ok(held >= 20, `most acknowledged starts should still wait for a run there (claimed: ${held} of 60)`);
  await first.kill('SIGKILL');

  const second = await fleet.spawn(prefix, extra());
  await verifyAll(second, ids, `after kill -9 with ${held} claimed`);
  const after = await claims(prefix);
  assert.deepEqual(Object.keys(after).filter((o) => o in before), [], 'the dead process is gone from the registry');
  assert.ok(Object.values(after).every((n) => n === 0), `nothing left claimed: ${JSON.stringify(after)}`);
  assert.match(second.output(), /flow starts of a stopped process handed to the run queue/);
});

test('SIGTERM with starts waiting: they go to the run queue before the process exits, and run on the next one', { timeout: 120_000 }, async () => {
  const prefix = prefixFor('eagerterm');
  const first = await fleet.spawn(prefix, extra());
  const ids = await startAll(first.url, 't', 60);
  const held = Object.values(await claims(prefix))[0] ?? 0;
  assert.ok(held >= 20, `most starts should still wait for a run (claimed: ${held} of 60)`);
  assert.equal(await first.kill('SIGTERM'), 0, `a clean exit: ${first.output().slice(-2000)}`);
  assert.deepEqual(await claims(prefix), {}, 'the stopped process left the registry with nothing claimed');
  // Runs went on while the doors closed; what had not run yet must be in the run queue.
  const store = new InstanceStore(client!, prefix);
  const notDone = (await Promise.all(ids.map((id) => store.status(id)))).filter((s) => s !== 'completed').length;
  const queued = await client!.llen(`${prefix}:{flow-runs}:wait`);
  assert.ok(notDone > 0, 'some starts had not run when the process stopped (make the step slower)');
  // Waiting, not delayed: handed over without the lock their creation took.
  assert.ok(queued >= notDone, `each instance not run yet has a run waiting in the queue (${queued} runs waiting, ${notDone} instances not completed, ${held} claimed at SIGTERM)`);

  const second = await fleet.spawn(prefix, extra());
  await verifyAll(second, ids, 'after SIGTERM');
});
