/**
 * DESIGN §3 at scale: "a flow can wait days … with nothing held in memory". 10,000 instances of a
 * flow waiting on `ctx.receive()` (no timeout) in one in-process gateway:
 *
 * - all 10,000 reach `waiting`, with no run job left in the flow-run queue for any of them (a
 *   waiting instance is only its Redis records);
 * - the process RSS after a forced GC barely grows between 1,000 and 10,000 waiting instances
 *   (generous bound: < 150 MB; the real numbers are printed as diagnostics);
 * - a message delivered to a random sample of them resumes each one, which completes with that
 *   message, while the others keep waiting;
 * - a repeated delivery (same message id) to one of the completed instances is accepted as a
 *   duplicate, not refused (DESIGN §2: id seen before → accepted, not delivered again).
 *
 * Forced GC: `node --test` runs without --expose-gc, so the flag is set at run time and `gc` taken
 * from a fresh context. Real redis-server; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { createMessage, type Principal } from '../../src/core/message.ts';
import { FlowRuntime } from '../../src/flows/runtime.ts';
import { InstanceStore, type FlowStatus } from '../../src/flows/store.ts';
import type { Gateway } from '../../src/gateway.ts';
import { openRedis } from '../../src/store/redis.ts';
import { startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FLOW = 'waiter';
const TOTAL = 10_000;
const FIRST = 1_000;
const SAMPLE = 200;
const RSS_GROWTH_BOUND_MB = 150;
const START_BATCH = 250; // router.send calls in flight at once

const FLOW_SOURCE = `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: '${FLOW}',
  input: z.object({ i: z.number().int().min(0) }),
  async run(ctx, input) {
    const m = await ctx.receive();
    return { i: input.i, got: m.body };
  },
});
`;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let redis: TestRedis | undefined;
let flowsDir: string | undefined;
let gw: Gateway | undefined;
let client: Redis | undefined;
let runs: Queue | undefined;
const prefix = `fscale${Math.random().toString(36).slice(2, 8)}`;
const principal: Principal = { kind: 'system', name: 'scale-test' };

before(async () => {
  redis = await startTestRedis();
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-flows-scale-'));
  writeFileSync(join(flowsDir, `${FLOW}.ts`), FLOW_SOURCE);
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix },
    flows: { dir: flowsDir, concurrency: 50, lockTimeout: '30s', stalledCheck: '15s' },
    log: { level: 'warn' },
  });
  client = await openRedis(redis.url);
  runs = new Queue('{flow-runs}', { connection: client, prefix });
});

after(async () => {
  await runs?.close().catch(() => {});
  await client?.quit().catch(() => client?.disconnect());
  await gw?.stop().catch(() => {});
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

/** RSS and heap after forced full collections (a few, with pauses, so freed pages are returned). */
async function settledMemory(): Promise<{ rssMB: number; heapUsedMB: number }> {
  for (let k = 0; k < 3; k++) {
    gc();
    await sleep(200);
  }
  const m = process.memoryUsage();
  return { rssMB: mb(m.rss), heapUsedMB: mb(m.heapUsed) };
}

async function redisUsedMemory(): Promise<number> {
  const line = (await client!.info('memory')).split('\r\n').find((l) => l.startsWith('used_memory:'));
  return Number(line?.split(':')[1] ?? 0);
}

/** Starts instances i ∈ [from, to) with message ids `w-<i>`, START_BATCH at a time; returns their instance ids. */
async function startRange(from: number, to: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = from; i < to; i += START_BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(to, i + START_BATCH); j++) {
      batch.push(gw!.router.send(createMessage({ to: `flow:${FLOW}`, id: `w-${j}`, body: { i: j } }, principal), { principal, door: 'system' }));
    }
    const results = await Promise.all(batch);
    assert.ok(results.every((r) => !r.duplicate), 'a start was reported as a duplicate');
    ids.push(...results.map((r) => r.instanceId!));
  }
  return ids;
}

/** Statuses of the given instances, read from the instance store, 500 at a time. */
async function statuses(ids: string[]): Promise<(FlowStatus | undefined)[]> {
  const store = new InstanceStore(client!, prefix);
  const out: (FlowStatus | undefined)[] = [];
  for (let k = 0; k < ids.length; k += 500) {
    const metas = await Promise.all(ids.slice(k, k + 500).map((id) => store.meta(id)));
    out.push(...metas.map((m) => m?.status));
  }
  return out;
}

/** Polls until every instance has `status`; only the ones not there yet are read again. */
async function waitForStatus(ids: string[], status: FlowStatus, timeoutMs: number, what: string): Promise<void> {
  let pending = ids;
  let last: Record<string, number> = {};
  await waitFor(async () => {
    const s = await statuses(pending);
    last = {};
    for (const x of s) last[String(x)] = (last[String(x)] ?? 0) + 1;
    pending = pending.filter((_, k) => s[k] !== status);
    if (pending.length > 0) await sleep(400);
    return pending.length === 0;
  }, timeoutMs, what).catch((err: Error) => {
    throw new Error(`${err.message}: ${pending.length} of ${ids.length} not ${status} (last poll: ${JSON.stringify(last)}); e.g. ${pending.slice(0, 5).join(', ')}`);
  });
}

async function runJobCounts(): Promise<Record<string, number>> {
  return runs!.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'waiting-children', 'failed');
}

let all: string[] = [];
const sampleIdx = new Set<number>();

test(`${TOTAL.toLocaleString('en-US')} flows waiting on receive: RSS stays flat, nothing queued for them, a sample resumes and completes`, { timeout: 300_000 }, async (t: TestContext) => {
  const base = await settledMemory();
  const redis0 = await redisUsedMemory();
  t.diagnostic(`gateway started: RSS ${base.rssMB} MB, heap ${base.heapUsedMB} MB, redis used_memory ${mb(redis0)} MB`);

  let t0 = performance.now();
  const first = await startRange(0, FIRST);
  await waitForStatus(first, 'waiting', 120_000, `the first ${FIRST} instances to wait`);
  const s1 = (performance.now() - t0) / 1000;
  const m1 = await settledMemory();
  const redis1 = await redisUsedMemory();
  t.diagnostic(`${FIRST} waiting after ${s1.toFixed(1)} s: RSS ${m1.rssMB} MB, heap ${m1.heapUsedMB} MB, redis used_memory ${mb(redis1)} MB`);

  t0 = performance.now();
  const rest = await startRange(FIRST, TOTAL);
  const startedIn = (performance.now() - t0) / 1000;
  all = [...first, ...rest];
  assert.equal(new Set(all).size, TOTAL, 'every start message made its own instance');
  await waitForStatus(rest, 'waiting', 240_000, `all ${TOTAL} instances to wait`);
  const s2 = (performance.now() - t0) / 1000;
  // A waiting instance holds no job: no run is queued, delayed or in flight, and none failed.
  const counts = await waitFor(async () => {
    const c = await runJobCounts();
    return Object.values(c).every((v) => v === 0) ? c : undefined;
  }, 30_000, 'the flow-run queue to be empty').catch(async (err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify(await runJobCounts())}`);
  });
  assert.deepEqual(counts, { wait: 0, active: 0, delayed: 0, prioritized: 0, 'waiting-children': 0, failed: 0 });
  const m10 = await settledMemory();
  const redis10 = await redisUsedMemory();
  const growth = Math.round((m10.rssMB - m1.rssMB) * 10) / 10;
  t.diagnostic(`${TOTAL} waiting: ${TOTAL - FIRST} more started in ${startedIn.toFixed(1)} s, all waiting after ${s2.toFixed(1)} s (${Math.round((TOTAL - FIRST) / s2)} instances/s)`);
  t.diagnostic(`RSS ${m10.rssMB} MB (${growth >= 0 ? '+' : ''}${growth} MB over ${FIRST} waiting), heap ${m10.heapUsedMB} MB (${m10.heapUsedMB - m1.heapUsedMB >= 0 ? '+' : ''}${Math.round((m10.heapUsedMB - m1.heapUsedMB) * 10) / 10} MB)`);
  t.diagnostic(`redis used_memory ${mb(redis10)} MB: ${Math.round((redis10 - redis1) / (TOTAL - FIRST))} bytes per waiting instance`);
  assert.ok(growth < RSS_GROWTH_BOUND_MB, `RSS grew by ${growth} MB from ${FIRST} to ${TOTAL} waiting instances (bound ${RSS_GROWTH_BOUND_MB} MB): something is held per instance`);

  // Deliver to a random sample; each resumes with its message and completes.
  while (sampleIdx.size < SAMPLE) sampleIdx.add(Math.floor(Math.random() * TOTAL));
  const sample = [...sampleIdx];
  const delivered = await Promise.all(sample.map((i) => gw!.router.send(createMessage({ to: `flow:${FLOW}/${all[i]}`, id: `d-${i}`, body: { hello: i } }, principal), { principal, door: 'system' })));
  assert.ok(delivered.every((r) => !r.duplicate), 'a first delivery was reported as a duplicate');
  await waitForStatus(sample.map((i) => all[i]!), 'completed', 60_000, `the ${SAMPLE} sampled instances to complete`);
  const store = new InstanceStore(client!, prefix);
  const wrong: string[] = [];
  for (const i of sample) {
    const meta = await store.meta(all[i]!);
    if (JSON.stringify(meta?.result) !== JSON.stringify({ i, got: { hello: i } })) wrong.push(`${all[i]} (#${i}): ${JSON.stringify(meta?.result)}`);
  }
  assert.deepEqual(wrong, [], 'results of the sampled instances');

  // Everyone else is still waiting (nothing was woken by someone else's message).
  const others = await statuses(all.filter((_, i) => !sampleIdx.has(i)));
  const tally: Record<string, number> = {};
  for (const s of others) tally[String(s)] = (tally[String(s)] ?? 0) + 1;
  assert.deepEqual(tally, { waiting: TOTAL - SAMPLE });
});

test('a repeated delivery (same message id) to an instance that has completed since is accepted as a duplicate', async () => {
  assert.ok(sampleIdx.size > 0, 'needs the scale test above to have run');
  const i = [...sampleIdx][0]!;
  const id = all[i]!;
  const meta = await new InstanceStore(client!, prefix).meta(id);
  assert.equal(meta?.status, 'completed');
  // The sender did not see the first acknowledgement (a crash, a timeout) and sends again.
  let result: unknown;
  try {
    result = await gw!.router.send(createMessage({ to: `flow:${FLOW}/${id}`, id: `d-${i}`, body: { hello: i } }, principal), { principal, door: 'system' });
  } catch (err) {
    result = { error: (err as Error).name, message: (err as Error).message };
  }
  assert.deepEqual(result, { id: `d-${i}`, duplicate: true }, 'a redelivery of a message the instance already consumed');
  // A new message to it is refused: it takes no more messages.
  await assert.rejects(gw!.router.send(createMessage({ to: `flow:${FLOW}/${id}`, id: `d-new-${i}`, body: {} }, principal), { principal, door: 'system' }), /has completed; it takes no more messages/);
});
