/**
 * Flow throughput and the Redis cost of a waiting flow: Switchboard's durable flows against plain
 * BullMQ doing the same work, on one private Redis.
 *
 *   npm run bench -- flow                  # N = 5,000 flows per run, 10,000 waiting
 *   npm run bench -- flow --n 2000 --waiting 5000 --rounds 5
 *   node --import tsx bench/flow-throughput.ts --help
 *
 * 1. 3-step flows per second, end to end. Each round runs both sides (which goes first alternates),
 *    on the same redis-server (started here, AOF with fsync every second, as the gateway's own
 *    embedded Redis), after a FLUSHALL and an AOF rewrite. On each side what runs the flows is
 *    up before the clock starts; the clock runs from the first start to the last flow's last send:
 *    - sb:  a gateway (config through the real parser, flows.concurrency C, eager start as
 *           configured by default) with the flow `send queue:bench.s1 → step → send queue:bench.s2`
 *           from a temp flows folder. N instances are started with `router.send` to flow:bench3
 *           (200-byte JSON inputs), 500 in flight at a time, until s2 holds N messages and no run
 *           is queued, delayed or in flight.
 *    - raw: plain BullMQ: a Worker (concurrency C) whose processor does three `queue.add` calls
 *           (s1, a "step" queue, s2); N jobs with the same inputs are added to its queue in the
 *           same batches, until s2 holds N jobs.
 *    The time until the last start was acknowledged is printed too (start/s).
 *    Before anything is reported each side is verified: sb, every instance `completed`, no start
 *    left claimed by an eager run, and s1/s2 holding exactly the ids `<instance>:0` and
 *    `<instance>:2`; raw, each queue holding exactly the N inputs. A timed phase stops at once,
 *    naming the error, when a sampled instance has failed (a refused send, say): no rate is
 *    printed for flows that did not run. Redis commands, Redis and Node CPU per flow, and other
 *    processes' CPU (noise) are recorded per phase.
 * 2. Redis bytes per waiting flow: INFO used_memory before and after W instances of a flow
 *    waiting on `ctx.receive()` (all `waiting`, no run left), divided by W; beside W raw BullMQ
 *    jobs with the same input parked as delayed jobs (a job waiting for its time, the closest
 *    plain-BullMQ analogue of a parked workflow). Both include BullMQ's event stream (capped by
 *    BullMQ at about 10,000 entries); the figure without it is printed too.
 *
 * Results go to bench/results/flow-throughput-<date-time>.json. Every server started here is
 * stopped by PID at the end, on error too.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { createMessage } from '../src/core/message.ts';
import { bullQueueName } from '../src/endpoints/queue/names.ts';
import { FlowKeys, RUN_QUEUE_STREAMS } from '../src/flows/keys.ts';
import { FlowRuntime } from '../src/flows/runtime.ts';
import { InstanceStore, type FlowStatus } from '../src/flows/store.ts';
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { commandDelta, commandStats, fmt, intOption, machineBusySeconds, mb, median, parseInfo, profiled, SHARED_OPTIONS, sleep, measuredCode, perUnit, gatewayFlagsInUse } from './support/measure.ts';

// ───────────────────────────── options ─────────────────────────────

const { values: args } = parseArgs({
  options: {
    ...SHARED_OPTIONS,
    waiting: { type: 'string' },
    'raw-connections': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (args.help) {
  console.log(`usage: node --import tsx bench/flow-throughput.ts [--n N] [--waiting W] [--rounds R] [--concurrency C] [--warmup K] [--body-bytes B] [--timeout-s S]
  --n           3-step flows per throughput run (default 5000, or BENCH_FLOW_N)
  --waiting     waiting flows for the memory measurement, 0 to skip (default 10000)
  --rounds      throughput rounds of both sides, the order alternating; medians compared (default 3)
  --concurrency flows.concurrency of the gateway and the raw worker's concurrency (default 50)
  --warmup      flows of an untimed warm-up per side, 0 for none (default 500)
  --body-bytes  size of each JSON input (default 200)
  --timeout-s   give up on one phase after this long (default 180)
  --raw-connections  1: the raw worker shares the queues' connection; 2: a connection of its own (default 2)`);
  process.exit(0);
}


const N = intOption('n', args.n ?? process.env.BENCH_FLOW_N, 5_000, 1);
const W = intOption('waiting', args.waiting, 10_000, 0);
const ROUNDS = intOption('rounds', args.rounds, 3, 1);
const CONCURRENCY = intOption('concurrency', args.concurrency, 50, 1);
const WARMUP = intOption('warmup', args.warmup, 500, 0);
const BODY_BYTES = intOption('body-bytes', args['body-bytes'], 200, 120);
const TIMEOUT_MS = intOption('timeout-s', args['timeout-s'], 180, 1) * 1000;
const RAW_CONNECTIONS = intOption('raw-connections', args['raw-connections'], 2, 1);
if (RAW_CONNECTIONS > 2) throw new Error('--raw-connections must be 1 or 2');
if (CONCURRENCY > 500) throw new Error('--concurrency must be at most 500 (flows.concurrency limit)');
const START_BATCH = 500; // starts (router.send / queue.add) in flight at once
const POLL_MS = 20;
const QUIET_PERCENT = 15;

const S1 = 'queue:bench.s1';
const S2 = 'queue:bench.s2';
const FLOW3 = 'bench3';
const WAITER = 'benchwait';

const FLOW_FILES: Record<string, string> = {
  'package.json': '{ "type": "module" }\n',
  [`${FLOW3}.ts`]: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

// send → step → send: the 3-step flow of the throughput benchmark.
export default defineFlow({
  name: '${FLOW3}',
  input: z.object({ seq: z.number().int(), data: z.record(z.string(), z.unknown()) }),
  async run(ctx, input) {
    await ctx.send('${S1}', input.data);
    const total = await ctx.step('price', () => input.seq * 2);
    await ctx.send('${S2}', { seq: input.seq, total });
    return { seq: input.seq, total };
  },
});
`,
  [`${WAITER}.ts`]: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

// Waits for one message: the parked flow of the memory measurement.
export default defineFlow({
  name: '${WAITER}',
  input: z.object({ seq: z.number().int(), data: z.record(z.string(), z.unknown()) }),
  async run(ctx, input) {
    const m = await ctx.receive();
    return { seq: input.seq, got: m.body };
  },
});
`,
};

// ───────────────────────────── helpers ─────────────────────────────


/** A JSON body of exactly BODY_BYTES bytes once serialized, unique per `seq`. */
function makeBody(seq: number): Record<string, unknown> {
  const b = { orderId: `ord-${String(seq).padStart(8, '0')}`, customer: 'cust-0042', amount: 1234.56, currency: 'EUR', items: [{ sku: 'SKU-123', qty: 2 }], note: '' };
  b.note = 'x'.repeat(Math.max(0, BODY_BYTES - Buffer.byteLength(JSON.stringify(b))));
  return b;
}




interface RedisSnapshot { cpu: number; commands: Record<string, number>; micros: Record<string, number> }

async function redisSnapshot(admin: Redis): Promise<RedisSnapshot> {
  const cpu = parseInfo(await admin.info('cpu'));
  return { cpu: Number(cpu.used_cpu_user ?? 0) + Number(cpu.used_cpu_sys ?? 0), ...commandStats(await admin.info('commandstats')) };
}

/** The bench's own looks (INFO, counting, fail-fast samples), not part of what is measured. */
const IGNORED = ['info', 'llen', 'config', 'flushall', 'bgrewriteaof', 'ping', 'memory', 'dbsize', 'hstrlen'];

function diffCommands(a: RedisSnapshot, b: RedisSnapshot, field: 'commands' | 'micros' = 'commands'): Record<string, number> {
  return commandDelta(a[field], b[field], IGNORED);
}

async function resetRedis(admin: Redis): Promise<void> {
  await admin.flushall();
  await admin.bgrewriteaof().catch(() => undefined);
  for (let i = 0; i < 600; i++) {
    const p = parseInfo(await admin.info('persistence'));
    if (p.aof_rewrite_in_progress === '0' && p.aof_rewrite_scheduled === '0') break;
    await sleep(50);
  }
}

async function usedMemory(admin: Redis): Promise<number> {
  return Number(parseInfo(await admin.info('memory')).used_memory ?? 0);
}

async function pollUntil(fn: () => Promise<boolean>, started: number, what: string): Promise<number> {
  for (;;) {
    if (await fn()) return performance.now();
    if (performance.now() - started > TIMEOUT_MS) throw new Error(`${what}: not done within ${TIMEOUT_MS / 1000} s`);
    await sleep(POLL_MS);
  }
}

/** Jobs of the flow-run queue not finished yet (queued, delayed, in flight). */
async function runsLeft(runs: Queue): Promise<number> {
  const c = await runs.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).reduce((s, v) => s + v, 0);
}

/** Message ids (sb) or a key of the job data (raw) of every job waiting in `q`. */
async function jobKeys(monitor: Redis, q: Queue, keyOf: (data: any) => string): Promise<string[]> {
  const ids = await monitor.lrange(q.keys.wait!, 0, -1);
  const out: string[] = [];
  for (let k = 0; k < ids.length; k += 1000) {
    const pipe = monitor.pipeline();
    for (const id of ids.slice(k, k + 1000)) pipe.hget(q.toKey(id), 'data');
    for (const [err, data] of (await pipe.exec()) ?? []) {
      if (err || typeof data !== 'string') throw new Error(`a job in ${q.name} has no data (${err?.message ?? 'missing'})`);
      out.push(keyOf(JSON.parse(data)));
    }
  }
  return out;
}

function sameSet(got: string[], expected: Set<string>, what: string): string | undefined {
  const seen = new Set<string>();
  for (const k of got) {
    if (seen.has(k)) return `${what}: ${k} is there twice`;
    if (!expected.has(k)) return `${what}: unexpected ${k}`;
    seen.add(k);
  }
  if (seen.size !== expected.size) return `${what}: ${expected.size - seen.size} of ${expected.size} missing`;
  return undefined;
}

async function statusesOf(store: InstanceStore, ids: string[]): Promise<Record<string, number>> {
  const tally: Record<string, number> = {};
  for (let k = 0; k < ids.length; k += 500) {
    const metas = await Promise.all(ids.slice(k, k + 500).map((id) => store.meta(id)));
    for (const m of metas) tally[String(m?.status)] = (tally[String(m?.status)] ?? 0) + 1;
  }
  return tally;
}

// ───────────────────────────── phases ─────────────────────────────

interface Ctx {
  redis: EmbeddedRedis;
  admin: Redis;
  monitor: Redis;
  flowsDir: string;
}

interface ThroughputResult {
  name: 'raw' | 'sb';
  round: number;
  warmup: boolean;
  flows: number;
  startSeconds: number;
  startsPerSecond: number;
  seconds: number;
  perSecond: number;
  firstHalfPerSecond: number;
  secondHalfPerSecond: number;
  loadAverage1mBefore: number;
  otherCpuPercent: number | null;
  redisCommandsPerFlow: number;
  redisCommandBreakdown: Record<string, number>;
  /** Redis's own time per flow by command (INFO commandstats usec): a script's commands count in it and on their own line too. */
  redisMicrosBreakdown: Record<string, number>;
  redisCpuMicrosPerFlow: number;
  nodeCpuMicrosPerFlow: number;
  rssMB: number;
  verified: boolean;
}

/**
 * Times `start()` (which issues every start) until `done()`, polling while the starts go on;
 * `half()` says whether half the work is done (for the two half-rates).
 */
async function measure(ctx: Ctx, n: number, start: () => Promise<void>, half: () => Promise<boolean>, done: () => Promise<boolean>, what: string) {
  const loadAverage1mBefore = Math.round(loadavg()[0]! * 100) / 100;
  const before = await redisSnapshot(ctx.admin);
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  let tStarted = t0;
  const [tHalf, t1] = await profiled(what.replace(/\W+/g, '-'), async () => {
    const starting = start().then(() => { tStarted = performance.now(); });
    // A start that fails ends the phase at once (the polls would otherwise wait for the timeout).
    const failed = starting.then(() => new Promise<never>(() => undefined));
    const polls = (async () => [await pollUntil(half, t0, what), await pollUntil(done, t0, what)] as const)();
    const r = await Promise.race([polls, failed]);
    await starting;
    return r;
  });
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusySeconds();
  const after = await redisSnapshot(ctx.admin);
  const breakdown = diffCommands(before, after);
  const total = Object.values(breakdown).reduce((s, v) => s + v, 0);
  const seconds = (t1 - t0) / 1000;
  const ownCpu = (cpu.user + cpu.system) / 1e6 + (after.cpu - before.cpu);
  const startSeconds = (tStarted - t0) / 1000;
  return {
    seconds,
    perSecond: n / seconds,
    startSeconds,
    startsPerSecond: n / Math.max(0.001, startSeconds),
    firstHalfPerSecond: n / 2 / ((tHalf - t0) / 1000),
    secondHalfPerSecond: n / 2 / Math.max(0.001, (t1 - tHalf) / 1000),
    loadAverage1mBefore,
    otherCpuPercent: busy0 === undefined || busy1 === undefined ? null : Math.max(0, Math.round(((busy1 - busy0 - ownCpu) / (seconds * cpus().length)) * 100)),
    redisCommandsPerFlow: total / n,
    redisCommandBreakdown: perUnit(breakdown, n),
    redisMicrosBreakdown: perUnit(diffCommands(before, after, 'micros'), n),
    redisCpuMicrosPerFlow: ((after.cpu - before.cpu) * 1e6) / n,
    nodeCpuMicrosPerFlow: (cpu.user + cpu.system) / n,
  };
}

function gatewayConfig(ctx: Ctx, prefix: string) {
  const raw = {
    http: { port: 0, host: '127.0.0.1' },
    redis: { url: ctx.redis.url, prefix },
    flows: { dir: ctx.flowsDir, concurrency: CONCURRENCY },
    log: { level: 'warn' },
  };
  return parseConfig(stringify(raw), 'bench-config.yaml', {});
}

const SENDER = { kind: 'system' as const, name: 'bench' };

/** Starts instances seq ∈ [0, n) of `flow` with router.send, START_BATCH at a time; their instance ids. */
async function startFlows(gateway: Gateway, flow: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += START_BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + START_BATCH); j++) {
      const m = createMessage({ to: `flow:${flow}`, body: { seq: j, data: makeBody(j) } }, SENDER);
      batch.push(gateway.router.send(m, { principal: SENDER, door: 'system' }));
    }
    const results = await Promise.all(batch);
    if (results.some((r) => r.duplicate)) throw new Error('a start was reported as a duplicate');
    ids.push(...results.map((r) => r.instanceId!));
  }
  return ids;
}

/**
 * A check for the polls of a timed phase that throws, naming the error, once a sampled instance
 * of the run has failed (a refused send, a bug): then the sinks can never fill, and no rate may be
 * printed. Every 250 ms it looks at 8 random instances with HSTRLEN of their status ("failed" is
 * the only 6-letter one), a command nothing else here runs, left out of the command counts
 * (IGNORED); a failure of a few instances only is caught by the verification after the phase.
 */
function failFast(monitor: Redis, prefix: string, store: InstanceStore, idsOf: () => string[], what: string): () => Promise<false> {
  const keys = new FlowKeys(prefix);
  let last = 0;
  return async () => {
    if (performance.now() - last < 250) return false;
    last = performance.now();
    const ids = idsOf();
    if (ids.length === 0) return false;
    const sample = Array.from({ length: 8 }, () => ids[Math.floor(Math.random() * ids.length)]!);
    const lengths = await Promise.all(sample.map((id) => monitor.hstrlen(keys.instance(id, 'meta'), 'status')));
    const i = lengths.indexOf('failed'.length);
    if (i < 0) return false;
    const m = await store.meta(sample[i]!);
    throw new Error(`${what}: instance ${sample[i]} failed: ${m?.error?.code ? `${m.error.code}: ` : ''}${m?.error?.message ?? '(no error recorded)'}`);
  };
}

async function runSwitchboard(ctx: Ctx, round: number, n: number, warmup: boolean): Promise<ThroughputResult> {
  await resetRedis(ctx.admin);
  const prefix = `sbf${round}${warmup ? 'w' : ''}`;
  const config = gatewayConfig(ctx, prefix);
  let gateway: Gateway | undefined;
  const runs = new Queue('{flow-runs}', { connection: ctx.monitor, prefix, streams: RUN_QUEUE_STREAMS });
  const s1 = new Queue(bullQueueName(S1), { connection: ctx.monitor, prefix });
  const s2 = new Queue(bullQueueName(S2), { connection: ctx.monitor, prefix });
  try {
    gateway = await startGateway({ config, log: createLogger(config.log.level) });
    const what = `sb round ${round}`;
    const store = new InstanceStore(ctx.monitor, prefix);
    let ids: string[] = [];
    const failing = failFast(ctx.monitor, prefix, store, () => ids, what);
    const move = await measure(ctx, n, async () => { ids = await startFlows(gateway!, FLOW3, n); },
      async () => (await failing()) || (await ctx.monitor.llen(s2.keys.wait!)) >= n / 2,
      async () => (await failing()) || ((await ctx.monitor.llen(s2.keys.wait!)) >= n && (await runsLeft(runs)) === 0),
      what);
    // Verify (untimed): every instance completed (the last may still be writing its end when its
    // second send is at the sink), no start left claimed, each send at its sink exactly once, by id.
    let tally: Record<string, number> = {};
    await pollUntil(async () => (tally = await statusesOf(store, ids)).completed === n && (await eagerClaims(ctx.monitor, prefix)) === 0, performance.now(), `${what}: completion`).catch(() => undefined);
    const claims = await eagerClaims(ctx.monitor, prefix);
    const problems = [
      tally.completed !== n ? `${what}: instances by status ${JSON.stringify(tally)}, expected ${n} completed` : undefined,
      claims !== 0 ? `${what}: ${claims} eager starts still claimed` : undefined,
      sameSet(await jobKeys(ctx.monitor, s1, (d) => d.id), new Set(ids.map((id) => `${id}:0`)), `${what}: ${S1}`),
      sameSet(await jobKeys(ctx.monitor, s2, (d) => d.id), new Set(ids.map((id) => `${id}:2`)), `${what}: ${S2}`),
    ].filter((p) => p !== undefined);
    if (problems.length > 0) throw new Error(`verification failed: ${problems.join('; ')}`);
    return { name: 'sb', round, warmup, flows: n, ...move, rssMB: mb(process.memoryUsage().rss), verified: true };
  } finally {
    await gateway?.stop().catch(() => undefined);
    await Promise.all([runs, s1, s2].map((q) => q.close().catch(() => undefined)));
  }
}

/** Instances claimed by eager starts and not yet settled, over every owner's set. */
async function eagerClaims(monitor: Redis, prefix: string): Promise<number> {
  const owners = await monitor.smembers(new FlowKeys(prefix).eagerOwners());
  const sizes = await Promise.all(owners.map((o) => monitor.scard(new FlowKeys(prefix).eagerIds(o))));
  return sizes.reduce((a, b) => a + b, 0);
}

async function runRaw(ctx: Ctx, round: number, n: number, warmup: boolean): Promise<ThroughputResult> {
  await resetRedis(ctx.admin);
  const prefix = `rawf${round}${warmup ? 'w' : ''}`;
  const conn = await openRedis(ctx.redis.url); // shared by the queues (and the worker, with --raw-connections 1)
  // With 2 (the default), the worker's commands take a connection of their own, as the gateway's
  // flow state does: the layout that lets Redis and the process overlap is given to both sides.
  const workerConn = RAW_CONNECTIONS === 2 ? await openRedis(ctx.redis.url) : conn;
  const source = new Queue('bench-flows', { connection: conn, prefix });
  const qS1 = new Queue('bench-s1', { connection: conn, prefix });
  const qStep = new Queue('bench-step', { connection: conn, prefix });
  const qS2 = new Queue('bench-s2', { connection: conn, prefix });
  const watch = (name: string) => new Queue(name, { connection: ctx.monitor, prefix });
  const watchers = { source: watch('bench-flows'), s1: watch('bench-s1'), step: watch('bench-step'), s2: watch('bench-s2') };
  // Running before the clock starts, as the gateway is.
  const worker = new Worker('bench-flows', async (job) => {
    const { seq, data } = job.data as { seq: number; data: Record<string, unknown> };
    await qS1.add('m', data);
    await qStep.add('m', { seq, total: seq * 2 });
    await qS2.add('m', { seq, total: seq * 2 });
  }, { connection: workerConn, prefix, concurrency: CONCURRENCY });
  worker.on('error', (err) => console.error(`raw worker error: ${err.message}`));
  let closed = false;
  try {
    await worker.waitUntilReady();
    const what = `raw round ${round}`;
    const move = await measure(ctx, n, async () => {
      for (let i = 0; i < n; i += START_BATCH) {
        const batch = [];
        for (let j = i; j < Math.min(n, i + START_BATCH); j++) batch.push(source.add('run', { seq: j, data: makeBody(j) }, { removeOnComplete: true }));
        await Promise.all(batch);
      }
    },
    async () => (await ctx.monitor.llen(watchers.s2.keys.wait!)) >= n / 2,
    async () => (await ctx.monitor.llen(watchers.s2.keys.wait!)) >= n,
    what);
    await worker.close();
    closed = true;
    const seqs = new Set(Array.from({ length: n }, (_, j) => String(j)));
    const left = await watchers.source.getJobCounts('wait', 'active', 'delayed', 'failed', 'completed');
    const problems = [
      Object.values(left).some((v) => v !== 0) ? `${what}: source still holds ${JSON.stringify(left)}` : undefined,
      sameSet(await jobKeys(ctx.monitor, watchers.s1, (d) => String(Number(String(d.orderId).slice(4)))), seqs, `${what}: s1`),
      sameSet(await jobKeys(ctx.monitor, watchers.step, (d) => String(d.seq)), seqs, `${what}: step`),
      sameSet(await jobKeys(ctx.monitor, watchers.s2, (d) => String(d.seq)), seqs, `${what}: s2`),
    ].filter((p) => p !== undefined);
    if (problems.length > 0) throw new Error(`verification failed: ${problems.join('; ')}`);
    return { name: 'raw', round, warmup, flows: n, ...move, rssMB: mb(process.memoryUsage().rss), verified: true };
  } finally {
    if (!closed) await worker.close().catch(() => undefined);
    await Promise.all([source, qS1, qStep, qS2, ...Object.values(watchers)].map((q) => q.close().catch(() => undefined)));
    await conn.quit().catch(() => conn.disconnect());
    if (workerConn !== conn) await workerConn.quit().catch(() => workerConn.disconnect());
  }
}

interface WaitingResult {
  name: 'raw' | 'sb';
  waiting: number;
  usedMemoryBeforeMB: number;
  usedMemoryAfterMB: number;
  bytesPerWaiting: number;
  /** The same without BullMQ's event stream (capped at about 10,000 entries). */
  bytesPerWaitingWithoutEvents: number;
  eventStreamBytes: number;
  keysPerWaiting: number;
  startSeconds: number;
  nodeRssDeltaMB: number;
}

async function memoryUsage(admin: Redis, key: string): Promise<number> {
  return Number((await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
}

async function settle(admin: Redis): Promise<void> {
  await sleep(500);
  await admin.call('MEMORY', 'PURGE').catch(() => undefined);
}

async function waitingSwitchboard(ctx: Ctx, w: number): Promise<WaitingResult> {
  await resetRedis(ctx.admin);
  const prefix = 'sbwait';
  const config = gatewayConfig(ctx, prefix);
  let gateway: Gateway | undefined;
  const runs = new Queue('{flow-runs}', { connection: ctx.monitor, prefix, streams: RUN_QUEUE_STREAMS });
  try {
    gateway = await startGateway({ config, log: createLogger(config.log.level) });
    await settle(ctx.admin);
    const before = await usedMemory(ctx.admin);
    const keys0 = await ctx.admin.dbsize();
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const ids = await startFlows(gateway, WAITER, w);
    const startSeconds = (performance.now() - t0) / 1000;
    const store = new InstanceStore(ctx.monitor, prefix);
    let tally: Record<string, number> = {};
    await pollUntil(async () => {
      if ((await runsLeft(runs)) !== 0) return false;
      tally = await statusesOf(store, ids);
      return tally.waiting === w;
    }, t0, `sb waiting: ${w} instances to wait`).catch((err: Error) => {
      throw new Error(`${err.message} (last: ${JSON.stringify(tally)})`);
    });
    await settle(ctx.admin);
    const after = await usedMemory(ctx.admin);
    const events = await memoryUsage(ctx.admin, runs.keys.events!);
    const keys1 = await ctx.admin.dbsize();
    return {
      name: 'sb', waiting: w, usedMemoryBeforeMB: mb(before), usedMemoryAfterMB: mb(after),
      bytesPerWaiting: Math.round((after - before) / w), bytesPerWaitingWithoutEvents: Math.round((after - before - events) / w), eventStreamBytes: events,
      keysPerWaiting: Math.round(((keys1 - keys0) / w) * 100) / 100, startSeconds, nodeRssDeltaMB: mb(process.memoryUsage().rss - rss0),
    };
  } finally {
    await gateway?.stop().catch(() => undefined);
    await runs.close().catch(() => undefined);
  }
}

async function waitingRaw(ctx: Ctx, w: number): Promise<WaitingResult> {
  await resetRedis(ctx.admin);
  const prefix = 'rawwait';
  const conn = await openRedis(ctx.redis.url);
  const q = new Queue('bench-parked', { connection: conn, prefix });
  try {
    await q.waitUntilReady();
    await settle(ctx.admin);
    const before = await usedMemory(ctx.admin);
    const keys0 = await ctx.admin.dbsize();
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    for (let i = 0; i < w; i += START_BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(w, i + START_BATCH); j++) batch.push(q.add('parked', { seq: j, data: makeBody(j) }, { delay: 86_400_000, removeOnComplete: true }));
      await Promise.all(batch);
    }
    const startSeconds = (performance.now() - t0) / 1000;
    const delayed = await q.getDelayedCount();
    if (delayed !== w) throw new Error(`raw waiting: ${delayed} delayed jobs, expected ${w}`);
    await settle(ctx.admin);
    const after = await usedMemory(ctx.admin);
    const events = await memoryUsage(ctx.admin, q.keys.events!);
    const keys1 = await ctx.admin.dbsize();
    return {
      name: 'raw', waiting: w, usedMemoryBeforeMB: mb(before), usedMemoryAfterMB: mb(after),
      bytesPerWaiting: Math.round((after - before) / w), bytesPerWaitingWithoutEvents: Math.round((after - before - events) / w), eventStreamBytes: events,
      keysPerWaiting: Math.round(((keys1 - keys0) / w) * 100) / 100, startSeconds, nodeRssDeltaMB: mb(process.memoryUsage().rss - rss0),
    };
  } finally {
    await q.close().catch(() => undefined);
    await conn.quit().catch(() => conn.disconnect());
  }
}

// ───────────────────────────── main ─────────────────────────────


function printRow(r: ThroughputResult): void {
  const name = `${r.name}${r.warmup ? ' (warm-up)' : ` #${r.round}`}`;
  console.log([
    name.padEnd(15),
    fmt(r.flows).padStart(7),
    fmt(r.seconds, 2).padStart(8),
    fmt(r.perSecond).padStart(8),
    `${fmt(r.firstHalfPerSecond)}/${fmt(r.secondHalfPerSecond)}`.padStart(14),
    fmt(r.startsPerSecond).padStart(8),
    fmt(r.redisCommandsPerFlow, 1).padStart(9),
    fmt(r.redisCpuMicrosPerFlow).padStart(9),
    fmt(r.nodeCpuMicrosPerFlow).padStart(9),
    fmt(r.rssMB).padStart(7),
    (r.otherCpuPercent === null ? '?' : `${r.otherCpuPercent}%`).padStart(6),
  ].join(' '));
}

let interrupted: NodeJS.Signals | undefined;

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-flow-redis-'));
  const flowsDir = mkdtempSync(join(tmpdir(), 'sb-bench-flows-'));
  for (const [file, text] of Object.entries(FLOW_FILES)) writeFileSync(join(flowsDir, file), text);
  let redis: EmbeddedRedis | undefined;
  let admin: Redis | undefined;
  let monitor: Redis | undefined;
  let stopping = false;
  const cleanup = async () => {
    if (stopping) return;
    stopping = true;
    await admin?.quit().catch(() => admin?.disconnect());
    await monitor?.quit().catch(() => monitor?.disconnect());
    if (redis) {
      await redis.stop().catch(() => redis?.kill());
      console.log(`stopped redis-server pid ${redis.pid}`);
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(flowsDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    console.error(`\n${sig}: stopping servers`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const started = new Date();
  try {
    redis = await startEmbeddedRedis(dir);
    admin = await openRedis(redis.url);
    monitor = await openRedis(redis.url);
    await admin.config('SET', 'auto-aof-rewrite-percentage', '0');
    const version = parseInfo(await admin.info('server')).redis_version;
    const ctx: Ctx = { redis, admin, monitor, flowsDir };

    console.log(`flow throughput: ${fmt(N)} flows (send → step → send, ${BODY_BYTES}-byte JSON inputs), concurrency ${CONCURRENCY}, ${ROUNDS} round(s), order alternating`);
    console.log(`redis-server ${version} pid ${redis.pid} port ${redis.port} (AOF, appendfsync everysec), node ${process.version}, ${cpus().length} CPU(s)\n`);
    console.log(['phase'.padEnd(15), 'flows'.padStart(7), 'seconds'.padStart(8), 'flows/s'.padStart(8), '1st/2nd half'.padStart(14), 'start/s'.padStart(8), 'cmds/flow'.padStart(9), 'redis µs'.padStart(9), 'node µs'.padStart(9), 'rss MB'.padStart(7), 'other'.padStart(6)].join(' '));
    console.log(`${' '.repeat(66)}(per flow: Redis commands incl. those in scripts, CPU µs)`);

    const results: ThroughputResult[] = [];
    if (WARMUP > 0) {
      for (const r of [await runRaw(ctx, 0, Math.min(WARMUP, N), true), await runSwitchboard(ctx, 0, Math.min(WARMUP, N), true)]) { printRow(r); results.push(r); }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const run of round % 2 ? [runRaw, runSwitchboard] : [runSwitchboard, runRaw]) {
        const r = await run(ctx, round, N, false);
        printRow(r);
        results.push(r);
      }
    }
    const timed = results.filter((r) => !r.warmup);
    const rate = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.perSecond));
    const secs = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.seconds));
    const cpuPer = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.nodeCpuMicrosPerFlow + r.redisCpuMicrosPerFlow));
    const cmdsPer = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.redisCommandsPerFlow));
    const ratio = rate('sb') / rate('raw');
    const cpuRatio = cpuPer('raw') / cpuPer('sb');
    const otherCpu = median(timed.map((r) => r.otherCpuPercent ?? 0));

    const waiting: WaitingResult[] = [];
    if (W > 0) {
      console.log(`\nwaiting flows: ${fmt(W)} instances parked on ctx.receive() vs ${fmt(W)} raw BullMQ delayed jobs with the same input`);
      waiting.push(await waitingRaw(ctx, W));
      waiting.push(await waitingSwitchboard(ctx, W));
    }

    console.log('');
    console.log(`${'side'.padEnd(12)} ${'flows'.padStart(7)} ${'seconds'.padStart(8)} ${'flows/s'.padStart(8)} ${'CPU µs/flow'.padStart(12)} ${'cmds/flow'.padStart(10)} ${'bytes/waiting'.padStart(14)} ${'w/o events'.padStart(11)} ${'keys/waiting'.padStart(13)}   (median of ${ROUNDS})`);
    for (const [label, name] of [['raw BullMQ', 'raw'], ['switchboard', 'sb']] as const) {
      const wr = waiting.find((x) => x.name === name);
      console.log(`${label.padEnd(12)} ${fmt(N).padStart(7)} ${fmt(secs(name), 2).padStart(8)} ${fmt(rate(name)).padStart(8)} ${fmt(cpuPer(name)).padStart(12)} ${fmt(cmdsPer(name), 1).padStart(10)} ${(wr ? fmt(wr.bytesPerWaiting) : '-').padStart(14)} ${(wr ? fmt(wr.bytesPerWaitingWithoutEvents) : '-').padStart(11)} ${(wr ? fmt(wr.keysPerWaiting, 2) : '-').padStart(13)}`);
    }
    const wRaw = waiting.find((x) => x.name === 'raw');
    const wSb = waiting.find((x) => x.name === 'sb');
    const memRatio = wRaw && wSb ? wSb.bytesPerWaiting / wRaw.bytesPerWaiting : null;
    console.log(`${'ratio sb/raw'.padEnd(12)} ${''.padStart(7)} ${''.padStart(8)} ${ratio.toFixed(2).padStart(8)} ${(cpuPer('sb') / cpuPer('raw')).toFixed(2).padStart(12)} ${(cmdsPer('sb') / cmdsPer('raw')).toFixed(2).padStart(10)} ${(memRatio === null ? '-' : memRatio.toFixed(2)).padStart(14)} ${(wRaw && wSb ? (wSb.bytesPerWaitingWithoutEvents / wRaw.bytesPerWaitingWithoutEvents).toFixed(2) : '-').padStart(11)}`);
    console.log(`\n3-step flows/s end to end (first start to last completion): switchboard ${fmt(rate('sb'))} vs raw BullMQ ${fmt(rate('raw'))} → ratio ${ratio.toFixed(2)}; CPU-cost ratio raw/sb ${cpuRatio.toFixed(2)} (noise-robust estimate)`);
    const quiet = (name: 'raw' | 'sb') => timed.filter((r) => r.name === name && r.otherCpuPercent !== null && r.otherCpuPercent <= QUIET_PERCENT).map((r) => r.perSecond);
    const quietRatio = quiet('raw').length && quiet('sb').length ? median(quiet('sb')) / median(quiet('raw')) : null;
    if (quietRatio !== null) console.log(`quiet runs only (other CPU ≤ ${QUIET_PERCENT}%): ratio ${quietRatio.toFixed(2)} (${quiet('raw').length} raw, ${quiet('sb').length} sb run(s))`);
    if (otherCpu > 20) console.log(`WARNING: other processes used a median ${otherCpu}% of the CPU during the timed phases: the rates above are unreliable; rerun on a quiet machine or with more --rounds`);
    if (wRaw && wSb) {
      console.log(`Redis per waiting flow: switchboard ${fmt(wSb.bytesPerWaiting)} bytes (${fmt(wSb.keysPerWaiting, 2)} keys; ${fmt(wSb.bytesPerWaitingWithoutEvents)} without the event stream) vs raw BullMQ delayed job ${fmt(wRaw.bytesPerWaiting)} bytes (${fmt(wRaw.keysPerWaiting, 2)} keys; ${fmt(wRaw.bytesPerWaitingWithoutEvents)} without) → ratio ${memRatio!.toFixed(2)}`);
      console.log(`Node RSS change while ${fmt(W)} flows went to waiting in the gateway: ${wSb.nodeRssDeltaMB} MB (no forced GC; see test/integration/flows-scale.test.ts for the GC'd figure)`);
    }
    const sbRow = timed.find((r) => r.name === 'sb');
    const rawRow = timed.find((r) => r.name === 'raw');
    if (sbRow && rawRow) {
      console.log(`redis commands per flow: sb ${JSON.stringify(sbRow.redisCommandBreakdown)}; raw ${JSON.stringify(rawRow.redisCommandBreakdown)}`);
      console.log(`redis µs per flow by command (a script's commands also inside its eval): sb ${JSON.stringify(sbRow.redisMicrosBreakdown)}; raw ${JSON.stringify(rawRow.redisMicrosBreakdown)}`);
    }

    mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
    const file = join(import.meta.dirname, 'results', `flow-throughput-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({
      bench: 'flow-throughput',
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: { flows: N, waiting: W, rounds: ROUNDS, concurrency: CONCURRENCY, warmup: WARMUP, bodyBytes: BODY_BYTES, flow: `send ${S1} → step → send ${S2}`, raw: 'BullMQ worker: 3 × queue.add per job; waiting: delayed jobs', rawConnections: RAW_CONNECTIONS },
      environment: { gatewayCode: measuredCode(), nodeFlags: gatewayFlagsInUse(), node: process.version, redis: version, appendfsync: 'everysec', cpus: cpus().length, cpuModel: cpus()[0]?.model, totalMemMB: mb(totalmem()) },
      summary: {
        rawMedianFlowsPerSecond: Math.round(rate('raw')),
        switchboardMedianFlowsPerSecond: Math.round(rate('sb')),
        ratio: Math.round(ratio * 1000) / 1000,
        // The rate is end to end (one clock from the first start to the last completion); named so for the goals table.
        endToEndPerSecond: { raw: Math.round(rate('raw')), sb: Math.round(rate('sb')), ratio: Math.round(ratio * 1000) / 1000 },
        cpuCostRatio: Math.round(cpuRatio * 1000) / 1000,
        quietRunsRatio: quietRatio === null ? null : Math.round(quietRatio * 1000) / 1000,
        medianOtherCpuPercent: otherCpu,
        redisCommandsPerFlow: { raw: Math.round(cmdsPer('raw') * 10) / 10, sb: Math.round(cmdsPer('sb') * 10) / 10 },
        redisBytesPerWaitingFlow: wSb ? { sb: wSb.bytesPerWaiting, raw: wRaw!.bytesPerWaiting, ratio: Math.round(memRatio! * 1000) / 1000, sbWithoutEvents: wSb.bytesPerWaitingWithoutEvents, rawWithoutEvents: wRaw!.bytesPerWaitingWithoutEvents } : null,
      },
      runs: results,
      waiting,
    }, null, 2)}\n`);
    console.log(`results: ${file}`);
    return 0;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    if (interrupted) return;
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
