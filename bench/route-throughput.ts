/**
 * Route throughput: Switchboard's queue → queue route against plain BullMQ, on one private Redis.
 *
 *   npm run bench                      # N = 20,000 messages per run
 *   npm run bench -- --n 5000          # or BENCH_N=5000 npm run bench
 *   npm run bench -- --rounds 5        # default 3 rounds: raw,sb | sb,raw | raw,sb (median of each)
 *
 * Each round runs both sides (which goes first alternates from round to round) on the same redis-server (started here, AOF with fsync every second,
 * as the gateway's own embedded Redis), after a FLUSHALL and an AOF rewrite, so neither side
 * inherits the other's data:
 *
 * - sb:  a gateway (config through the real parser) whose config declares the route
 *        queue:bench.a → queue:bench.b (concurrency 50): a route acts as its own principal and may
 *        send to its destination only because the config grants it (DESIGN §5), so a route made
 *        in code would have every message refused and dead-lettered. Queue A is paused before
 *        the gateway starts (the route's consumer then waits), filled with N messages by
 *        `router.send` (200-byte JSON bodies, dedup on as always), and resumed: the clock runs
 *        from the resume until queue:bench.b holds N messages, so the gateway's start is not
 *        timed, only the moving, as on the raw side.
 * - raw: plain BullMQ: addBulk N jobs (the same 200-byte bodies) to A; then a Worker (concurrency
 *        50) on A whose processor does `await queueB.add(...)`; the clock runs from the worker's
 *        creation until B holds N jobs. Same connection layout as the gateway: one shared ioredis
 *        client for both queues and the worker (BullMQ adds the worker's blocking connection).
 *
 * The moving phase is what is timed and compared; pre-fill rates are printed for information.
 * Counts and the exact set of message ids in B are verified before anything is reported, and
 * the run stops at once, naming the reason, when a message is dead-lettered on A (a refused
 * send, an expired message) instead of waiting for a count that cannot come: a ratio is only
 * ever printed for messages that arrived. A small
 * untimed warm-up of each side runs first (JIT, connections). Per phase it also records Redis
 * commands per message (INFO commandstats, commands run inside BullMQ's scripts included), Redis
 * and Node CPU time per message, AOF bytes per message, the RSS, the rate over each half of the
 * run, and how much CPU other processes took meanwhile (the machine is shared: runs with a lot of
 * "other" CPU are noise).
 *
 * Results go to bench/results/route-throughput-<date-time>.json. Every server started here is
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
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { commandDelta, commandStats, fmt, intOption, machineBusySeconds, mb, median, parseInfo, perUnit, profiled, SHARED_OPTIONS, sleep, measuredCode, gatewayFlagsInUse } from './support/measure.ts';

// ───────────────────────────── options ─────────────────────────────

const { values: args } = parseArgs({
  options: {
    ...SHARED_OPTIONS,
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (args.help) {
  console.log(`usage: npm run bench -- [--n N] [--rounds R] [--concurrency C] [--warmup W] [--body-bytes B] [--timeout-s S]
  --n           messages per run (default 20000, or BENCH_N)
  --rounds      rounds of both sides, the order alternating (raw,sb | sb,raw | …);
                the median of each side is compared (default 3)
  --concurrency route / worker concurrency (default 50)
  --warmup      messages of an untimed warm-up per side, 0 for none (default 2000)
  --body-bytes  size of each JSON body (default 200)
  --timeout-s   give up on one moving phase after this long (default 120)`);
  process.exit(0);
}


const N = intOption('n', args.n ?? process.env.BENCH_N, 20_000, 1);
const ROUNDS = intOption('rounds', args.rounds, 3, 1);
const CONCURRENCY = intOption('concurrency', args.concurrency, 50, 1);
const WARMUP = intOption('warmup', args.warmup, 2_000, 0);
const BODY_BYTES = intOption('body-bytes', args['body-bytes'], 200, 120);
const TIMEOUT_MS = intOption('timeout-s', args['timeout-s'], 120, 1) * 1000;
const TARGET = 0.8; // issue 16, goal 4
const PREFILL_BATCH = 500; // router.send calls in flight at once while pre-filling
const ADD_BULK_CHUNK = 1000;
const POLL_MS = 20;
const QUIET_PERCENT = 15; // a phase during which other processes took at most this much CPU counts as quiet

const FROM = 'queue:bench.a';
const TO = 'queue:bench.b';

// ───────────────────────────── helpers ─────────────────────────────


/** A JSON body of exactly `BODY_BYTES` bytes once serialized, unique per `seq`. */
function makeBody(seq: number): Record<string, unknown> {
  const b = { orderId: `ord-${String(seq).padStart(8, '0')}`, customer: 'cust-0042', amount: 1234.56, currency: 'EUR', items: [{ sku: 'SKU-123', qty: 2 }], note: '' };
  const pad = BODY_BYTES - Buffer.byteLength(JSON.stringify(b));
  b.note = 'x'.repeat(Math.max(0, pad));
  return b;
}




/** Redis-side counters of one phase: commands by name, CPU seconds, AOF bytes and late fsyncs. */
interface RedisSnapshot { cpu: number; commands: Record<string, number>; micros: Record<string, number>; aofBytes: number; aofDelayedFsync: number }

async function redisSnapshot(admin: Redis): Promise<RedisSnapshot> {
  const cpu = parseInfo(await admin.info('cpu'));
  const aof = parseInfo(await admin.info('persistence'));
  return {
    cpu: Number(cpu.used_cpu_user ?? 0) + Number(cpu.used_cpu_sys ?? 0),
    ...commandStats(await admin.info('commandstats')),
    aofBytes: Number(aof.aof_current_size ?? 0),
    aofDelayedFsync: Number(aof.aof_delayed_fsync ?? 0),
  };
}

/** The bench's own looks (INFO, counting, fail-fast checks), not part of what is measured. */
const IGNORED = ['info', 'llen', 'config', 'flushall', 'bgrewriteaof', 'ping', 'zrandmember'];

function diffCommands(a: RedisSnapshot, b: RedisSnapshot, field: 'commands' | 'micros' = 'commands'): Record<string, number> {
  return commandDelta(a[field], b[field], IGNORED);
}

/** Empties Redis and compacts its AOF, so every phase starts from the same state. */
async function resetRedis(admin: Redis): Promise<void> {
  await admin.flushall();
  await admin.bgrewriteaof().catch(() => undefined); // "already in progress" is fine
  for (let i = 0; i < 600; i++) {
    const p = parseInfo(await admin.info('persistence'));
    if (p.aof_rewrite_in_progress === '0' && p.aof_rewrite_scheduled === '0') break;
    await sleep(50);
  }
}

/**
 * Why the moving phase cannot finish, if a message of `source` was dead-lettered or put back for
 * a retry (a refused send, an expired message): one sampled job's reason. ZRANDMEMBER is used by
 * no BullMQ script, so these looks stay out of the command counts (see IGNORED).
 */
async function stuckReason(monitor: Redis, source: Queue): Promise<string | undefined> {
  for (const set of ['failed', 'delayed'] as const) {
    const id = (await monitor.zrandmember(source.keys[set]!)) as string | null;
    if (!id) continue;
    const [reason, attempts] = await monitor.hmget(source.toKey(id), 'failedReason', 'atm');
    return `a message on the source was ${set === 'failed' ? 'dead-lettered' : 'put back for a retry'} after ${attempts ?? 0} attempt(s): ${reason ?? '(no reason recorded)'}`;
  }
  return undefined;
}

/**
 * Polls the waiting count of `q` until it reaches `n`; returns the time it got there and when it
 * passed half (ms), to see whether the rate holds up over the run. Stops with the reason as soon
 * as a message of `source` was dead-lettered or retried: then `n` can never arrive.
 */
async function waitForCount(monitor: Redis, q: Queue, source: Queue, n: number, started: number, what: string): Promise<{ done: number; half: number }> {
  let half = 0;
  let lastLook = started;
  for (;;) {
    const count = await monitor.llen(q.keys.wait!); // one LLEN, not a script: keeps EVALSHA counts clean
    const now = performance.now();
    if (!half && count >= n / 2) half = now;
    if (count >= n) return { done: now, half };
    if (now - lastLook >= 250) {
      lastLook = now;
      const stuck = await stuckReason(monitor, source);
      if (stuck) throw new Error(`${what}: ${count} of ${n} messages arrived and ${stuck}`);
    }
    if (now - started > TIMEOUT_MS) throw new Error(`${what}: only ${count} of ${n} messages arrived within ${TIMEOUT_MS / 1000} s`);
    await sleep(POLL_MS);
  }
}

/**
 * Checks that B holds exactly the expected messages (by key, no more, no fewer) and A is empty,
 * with nothing failed or left in flight.
 */
async function verify(monitor: Redis, a: Queue, b: Queue, expected: Set<string>, keyOf: (data: any) => string, what: string): Promise<void> {
  await sleep(200); // anything still on its way would show up as an excess
  const [ca, cb] = await Promise.all([
    a.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'failed', 'completed', 'waiting-children'),
    b.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'failed', 'completed', 'waiting-children'),
  ]);
  const leftInA = Object.values(ca).reduce((s, v) => s + v, 0);
  const inB = Object.values(cb).reduce((s, v) => s + v, 0);
  const problems: string[] = [];
  if (leftInA !== 0) problems.push(`source still holds jobs: ${JSON.stringify(ca)}`);
  if (cb.wait !== expected.size || inB !== expected.size) problems.push(`destination holds ${JSON.stringify(cb)}, expected wait=${expected.size}`);
  const ids = await monitor.lrange(b.keys.wait!, 0, -1);
  const pipe = monitor.pipeline();
  for (const id of ids) pipe.hget(b.toKey(id), 'data');
  const rows = (await pipe.exec()) ?? [];
  const seen = new Set<string>();
  for (const [err, data] of rows) {
    if (err || typeof data !== 'string') { problems.push(`a job in the destination has no data (${err?.message ?? 'missing'})`); break; }
    const k = keyOf(JSON.parse(data));
    if (seen.has(k)) { problems.push(`message ${k} is in the destination twice`); break; }
    if (!expected.has(k)) { problems.push(`unexpected message ${k} in the destination`); break; }
    seen.add(k);
  }
  if (seen.size !== expected.size && problems.length === 0) problems.push(`${expected.size - seen.size} expected messages are missing from the destination`);
  if (problems.length > 0) throw new Error(`${what}: verification failed: ${problems.join('; ')}`);
}

// ───────────────────────────── phases ─────────────────────────────

interface PhaseResult {
  name: 'raw' | 'sb';
  round: number;
  warmup: boolean;
  messages: number;
  prefillSeconds: number;
  prefillPerSecond: number;
  seconds: number;
  perSecond: number;
  storedBytesPerJob: number;
  /** Rate over the first and the second half of the moving phase. */
  firstHalfPerSecond: number;
  secondHalfPerSecond: number;
  aofBytesPerMessage: number;
  aofDelayedFsyncs: number;
  loadAverage1mBefore: number;
  /** CPU used by other processes on the machine during the moving phase, in % of all cores (noise). */
  otherCpuPercent: number | null;
  redisCommandsPerMessage: number;
  redisCommandBreakdown: Record<string, number>;
  /** Redis's own time per message by command (INFO commandstats usec): a script's commands count in it and on their own line too. */
  redisMicrosBreakdown: Record<string, number>;
  redisCpuMicrosPerMessage: number;
  nodeCpuMicrosPerMessage: number;
  rssMB: number;
  heapUsedMB: number;
  redisUsedMemoryMB: number;
  verified: boolean;
}

interface Ctx {
  redis: EmbeddedRedis;
  admin: Redis;
  monitor: Redis;
}

async function measureMove(ctx: Ctx, n: number, start: () => Promise<void>, a: Queue, b: Queue, what: string) {
  const loadAverage1mBefore = Math.round(loadavg()[0]! * 100) / 100;
  const before = await redisSnapshot(ctx.admin);
  const cpu0 = process.cpuUsage();
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  const { done: t1, half } = await profiled(what.replace(/\W+/g, '-'), async () => {
    await start();
    return waitForCount(ctx.monitor, b, a, n, t0, what);
  });
  const cpu = process.cpuUsage(cpu0);
  const busy1 = machineBusySeconds();
  const after = await redisSnapshot(ctx.admin);
  const breakdown = diffCommands(before, after);
  const total = Object.values(breakdown).reduce((s, v) => s + v, 0);
  const seconds = (t1 - t0) / 1000;
  const ownCpu = (cpu.user + cpu.system) / 1e6 + (after.cpu - before.cpu);
  const otherCpuPercent = busy0 === undefined || busy1 === undefined ? null : Math.max(0, Math.round(((busy1 - busy0 - ownCpu) / (seconds * cpus().length)) * 100));
  return {
    otherCpuPercent,
    seconds,
    perSecond: n / seconds,
    firstHalfPerSecond: n / 2 / ((half - t0) / 1000),
    secondHalfPerSecond: n / 2 / ((t1 - half) / 1000),
    aofBytesPerMessage: Math.round((after.aofBytes - before.aofBytes) / n),
    aofDelayedFsyncs: after.aofDelayedFsync - before.aofDelayedFsync,
    loadAverage1mBefore,
    redisCommandsPerMessage: total / n,
    redisCommandBreakdown: perUnit(breakdown, n),
    redisMicrosBreakdown: perUnit(diffCommands(before, after, 'micros'), n),
    redisCpuMicrosPerMessage: ((after.cpu - before.cpu) * 1000 * 1000) / n,
    nodeCpuMicrosPerMessage: ((cpu.user + cpu.system) / 1000) * (1000 / n),
  };
}

async function memory(ctx: Ctx) {
  const m = process.memoryUsage();
  const info = parseInfo(await ctx.admin.info('memory'));
  return { rssMB: mb(m.rss), heapUsedMB: mb(m.heapUsed), redisUsedMemoryMB: mb(Number(info.used_memory ?? 0)) };
}

async function storedBytes(monitor: Redis, q: Queue): Promise<number> {
  const [id] = await monitor.lrange(q.keys.wait!, 0, 0);
  if (!id) return 0;
  return Buffer.byteLength((await monitor.hget(q.toKey(id), 'data')) ?? '');
}

async function runRaw(ctx: Ctx, round: number, n: number, warmup: boolean): Promise<PhaseResult> {
  await resetRedis(ctx.admin);
  const prefix = `raw${round}${warmup ? 'w' : ''}`;
  const conn = await openRedis(ctx.redis.url); // shared by both queues and the worker, as in the gateway
  const queueA = new Queue('bench-a', { connection: conn, prefix });
  const queueB = new Queue('bench-b', { connection: conn, prefix });
  const watchB = new Queue('bench-b', { connection: ctx.monitor, prefix });
  const watchA = new Queue('bench-a', { connection: ctx.monitor, prefix });
  let worker: Worker | undefined;
  try {
    const expected = new Set<string>();
    const p0 = performance.now();
    for (let i = 0; i < n; i += ADD_BULK_CHUNK) {
      const jobs = [];
      for (let j = i; j < Math.min(n, i + ADD_BULK_CHUNK); j++) {
        const data = makeBody(j);
        expected.add(data.orderId as string);
        jobs.push({ name: 'm', data, opts: { removeOnComplete: true } });
      }
      await queueA.addBulk(jobs);
    }
    const prefillSeconds = (performance.now() - p0) / 1000;
    const bytes = await storedBytes(ctx.monitor, watchA);
    const move = await measureMove(ctx, n, async () => {
      worker = new Worker('bench-a', async (job) => { await queueB.add('m', job.data); }, { connection: conn, prefix, concurrency: CONCURRENCY });
      worker.on('error', (err) => console.error(`raw worker error: ${err.message}`));
    }, watchA, watchB, `raw round ${round}`);
    await worker!.close();
    worker = undefined;
    await verify(ctx.monitor, watchA, watchB, expected, (d) => d.orderId, `raw round ${round}`);
    return { name: 'raw', round, warmup, messages: n, prefillSeconds, prefillPerSecond: n / prefillSeconds, ...move, storedBytesPerJob: bytes, ...(await memory(ctx)), verified: true };
  } finally {
    await worker?.close().catch(() => undefined);
    await Promise.all([queueA, queueB, watchA, watchB].map((q) => q.close().catch(() => undefined)));
    await conn.quit().catch(() => conn.disconnect());
  }
}

/**
 * The gateway's config as a file would hold it, through the real parser, with the route: its
 * deployment grant (the right to send to queue:bench.b) comes from this declaration.
 */
function gatewayConfig(redisUrl: string, prefix: string) {
  const raw = { http: { port: 0, host: '127.0.0.1' }, redis: { url: redisUrl, prefix }, routes: [{ from: FROM, to: TO, concurrency: CONCURRENCY }], log: { level: 'warn' } };
  return parseConfig(stringify(raw), 'bench-config.yaml', {});
}

async function runSwitchboard(ctx: Ctx, round: number, n: number, warmup: boolean): Promise<PhaseResult> {
  await resetRedis(ctx.admin);
  const config = gatewayConfig(ctx.redis.url, `sb${round}${warmup ? 'w' : ''}`);
  const prefix = config.redis.prefix;
  let gateway: Gateway | undefined;
  const watchA = new Queue(bullQueueName(FROM), { connection: ctx.monitor, prefix });
  const watchB = new Queue(bullQueueName(TO), { connection: ctx.monitor, prefix });
  try {
    // Paused before the gateway (and so the route's consumer) starts: nothing moves until the clock runs.
    await watchA.pause();
    gateway = await startGateway({ config, log: createLogger(config.log.level) });
    const router = gateway.router;
    const sender = { kind: 'system' as const, name: 'bench' };
    const expected = new Set<string>();
    const p0 = performance.now();
    for (let i = 0; i < n; i += PREFILL_BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + PREFILL_BATCH); j++) {
        const m = createMessage({ to: FROM, body: makeBody(j) }, sender);
        expected.add(m.id);
        batch.push(router.send(m, { principal: sender, door: 'system' }));
      }
      const results = await Promise.all(batch);
      if (results.some((r) => r.duplicate)) throw new Error('a pre-fill message was reported as a duplicate');
    }
    const prefillSeconds = (performance.now() - p0) / 1000;
    const waiting = await ctx.monitor.llen(watchA.keys.wait!);
    if (waiting !== n) throw new Error(`sb round ${round}: ${waiting} messages wait on the paused source after the pre-fill, expected ${n} (did the route move some?)`);
    const bytes = await storedBytes(ctx.monitor, watchA);
    const move = await measureMove(ctx, n, () => watchA.resume(), watchA, watchB, `sb round ${round}`);
    await verify(ctx.monitor, watchA, watchB, expected, (d) => d.id, `sb round ${round}`);
    return { name: 'sb', round, warmup, messages: n, prefillSeconds, prefillPerSecond: n / prefillSeconds, ...move, storedBytesPerJob: bytes, ...(await memory(ctx)), verified: true };
  } finally {
    await gateway?.stop().catch(() => undefined);
    await Promise.all([watchA, watchB].map((q) => q.close().catch(() => undefined)));
  }
}

// ───────────────────────────── main ─────────────────────────────


function printRow(r: PhaseResult): void {
  const name = `${r.name}${r.warmup ? ' (warm-up)' : ` #${r.round}`}`;
  console.log(
    [
      name.padEnd(15),
      fmt(r.messages).padStart(8),
      fmt(r.seconds, 2).padStart(8),
      fmt(r.perSecond).padStart(8),
      `${fmt(r.firstHalfPerSecond)}/${fmt(r.secondHalfPerSecond)}`.padStart(14),
      fmt(r.prefillPerSecond).padStart(8),
      fmt(r.redisCommandsPerMessage, 2).padStart(8),
      fmt(r.redisCpuMicrosPerMessage, 0).padStart(9),
      fmt(r.nodeCpuMicrosPerMessage, 0).padStart(9),
      fmt(r.rssMB, 0).padStart(7),
      fmt(r.redisUsedMemoryMB, 0).padStart(8),
      fmt(r.aofBytesPerMessage).padStart(6),
      (r.otherCpuPercent === null ? '?' : `${r.otherCpuPercent}%`).padStart(6),
    ].join(' '),
  );
}

let interrupted: NodeJS.Signals | undefined;

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-redis-'));
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
    redis = await startEmbeddedRedis(dir); // appendfsync everysec, as the gateway's own Redis
    admin = await openRedis(redis.url);
    monitor = await openRedis(redis.url);
    // An automatic AOF rewrite (a fork) in the middle of one phase would be noise on 2 cores; the
    // bench rewrites between phases instead (resetRedis). Same setting for both sides.
    await admin.config('SET', 'auto-aof-rewrite-percentage', '0');
    const version = parseInfo(await admin.info('server')).redis_version;
    const ctx: Ctx = { redis, admin, monitor };

    console.log(`route throughput: ${fmt(N)} messages of ${BODY_BYTES}-byte JSON bodies, concurrency ${CONCURRENCY}, ${ROUNDS} round(s), order alternating`);
    console.log(`redis-server ${version} pid ${redis.pid} port ${redis.port} (AOF, appendfsync everysec), node ${process.version}, ${cpus().length} CPU(s)\n`);
    const header = ['phase'.padEnd(15), 'messages'.padStart(8), 'seconds'.padStart(8), 'msg/s'.padStart(8), '1st/2nd half'.padStart(14), 'fill/s'.padStart(8), 'cmds/msg'.padStart(8), 'redis µs'.padStart(9), 'node µs'.padStart(9), 'rss MB'.padStart(7), 'redis MB'.padStart(8), 'aof B'.padStart(6), 'other'.padStart(6)].join(' ');
    console.log(header);
    console.log(`${' '.repeat(65)}(per message: Redis commands incl. those in scripts, CPU µs, AOF bytes)`);

    const results: PhaseResult[] = [];
    if (WARMUP > 0) {
      for (const r of [await runRaw(ctx, 0, Math.min(WARMUP, N), true), await runSwitchboard(ctx, 0, Math.min(WARMUP, N), true)]) { printRow(r); results.push(r); }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      // Alternate which side goes first (raw, sb | sb, raw | raw, sb …): neither always runs on a cold or a warm process.
      for (const run of round % 2 ? [runRaw, runSwitchboard] : [runSwitchboard, runRaw]) {
        const r = await run(ctx, round, N, false);
        printRow(r);
        results.push(r);
      }
    }

    const timed = results.filter((r) => !r.warmup);
    const raw = median(timed.filter((r) => r.name === 'raw').map((r) => r.perSecond));
    const sb = median(timed.filter((r) => r.name === 'sb').map((r) => r.perSecond));
    const ratio = sb / raw;
    const pass = ratio >= TARGET;
    console.log('');
    console.log(`${'name'.padEnd(12)} ${'messages'.padStart(9)} ${'seconds'.padStart(8)} ${'msg/s'.padStart(8)}   (median of ${ROUNDS})`);
    for (const [name, rate] of [['raw BullMQ', raw], ['switchboard', sb]] as const) {
      const secs = median(timed.filter((r) => r.name === (name === 'raw BullMQ' ? 'raw' : 'sb')).map((r) => r.seconds));
      console.log(`${name.padEnd(12)} ${fmt(N).padStart(9)} ${fmt(secs, 2).padStart(8)} ${fmt(rate).padStart(8)}`);
    }
    console.log(`\nratio switchboard/raw = ${ratio.toFixed(2)}   target ≥ ${TARGET}   ${pass ? 'PASS' : 'BELOW TARGET'}`);
    // CPU time per moved message barely depends on what else runs on the machine, unlike the
    // rate: their ratio is what the throughput ratio tends to on a quiet machine where Node and
    // Redis together use up the cores.
    const cpuPerMsg = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.nodeCpuMicrosPerMessage + r.redisCpuMicrosPerMessage));
    const cpuRatio = cpuPerMsg('raw') / cpuPerMsg('sb');
    console.log(`CPU per message (Node + Redis, median): raw ${fmt(cpuPerMsg('raw'))} µs, sb ${fmt(cpuPerMsg('sb'))} µs → CPU-cost ratio raw/sb = ${cpuRatio.toFixed(2)} (noise-robust estimate of the ratio)`);
    const otherCpu = median(timed.map((r) => r.otherCpuPercent ?? 0));
    // Runs during which other processes took little CPU, when each side has at least one.
    const quiet = (name: 'raw' | 'sb') => timed.filter((r) => r.name === name && r.otherCpuPercent !== null && r.otherCpuPercent <= QUIET_PERCENT).map((r) => r.perSecond);
    const quietRatio = quiet('raw').length && quiet('sb').length ? median(quiet('sb')) / median(quiet('raw')) : null;
    if (quietRatio !== null) {
      console.log(`quiet runs only (other CPU ≤ ${QUIET_PERCENT}%): raw ${fmt(median(quiet('raw')))}/s (${quiet('raw').length} run(s)), sb ${fmt(median(quiet('sb')))}/s (${quiet('sb').length} run(s)) → ratio ${quietRatio.toFixed(2)}`);
    }
    if (otherCpu > 20) console.log(`WARNING: other processes used a median ${otherCpu}% of the CPU during the timed phases: the rates above are unreliable; rerun on a quiet machine or with more --rounds`);
    const sbRow = timed.find((r) => r.name === 'sb');
    const rawRow = timed.find((r) => r.name === 'raw');
    if (sbRow && rawRow) {
      console.log(`stored job data: sb ${sbRow.storedBytesPerJob} bytes (envelope + body), raw ${rawRow.storedBytesPerJob} bytes (body)`);
      console.log(`redis commands per moved message: sb ${JSON.stringify(sbRow.redisCommandBreakdown)}; raw ${JSON.stringify(rawRow.redisCommandBreakdown)}`);
      console.log(`redis µs per moved message by command (a script's commands also inside its eval): sb ${JSON.stringify(sbRow.redisMicrosBreakdown)}; raw ${JSON.stringify(rawRow.redisMicrosBreakdown)}`);
    }

    mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
    const file = join(import.meta.dirname, 'results', `route-throughput-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({
      bench: 'route-throughput',
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: { messages: N, rounds: ROUNDS, concurrency: CONCURRENCY, warmup: WARMUP, bodyBytes: BODY_BYTES, route: `${FROM} → ${TO}` },
      environment: { gatewayCode: measuredCode(), nodeFlags: gatewayFlagsInUse(), node: process.version, redis: version, appendfsync: 'everysec', cpus: cpus().length, cpuModel: cpus()[0]?.model, totalMemMB: mb(totalmem()) },
      summary: { rawMedianPerSecond: Math.round(raw), switchboardMedianPerSecond: Math.round(sb), ratio: Math.round(ratio * 1000) / 1000, target: TARGET, pass, cpuCostRatio: Math.round(cpuRatio * 1000) / 1000, quietRunsRatio: quietRatio === null ? null : Math.round(quietRatio * 1000) / 1000, medianOtherCpuPercent: otherCpu },
      runs: results,
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
    if (interrupted) return; // the signal handler stops the servers and exits
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
