/**
 * Wake-up cost against the number of journaled steps (issue 16 point 2): a flow that does N
 * `ctx.step` calls and then waits in `ctx.receive()`; one message is delivered and the clock runs
 * until the instance has completed. N = 10, 100, 1,000, each with the sticky cache on (the flow
 * waits in memory; the wake continues it) and with `flows.stickyInstances: 0` (every wake replays
 * the journal: what happens after a crash, on another process, or after an eviction).
 *
 *   npm run bench -- wake
 *   node --import tsx bench/flow-wake.ts --k 9 --steps 10,100,1000
 *
 * Per wake: milliseconds from the send to `completed`, and Redis commands (INFO commandstats
 * deltas, scripts' inner calls included, the benchmark's own status polls and INFO calls taken
 * out), and CPU ms (this process, where the gateway runs, plus redis-server's INFO cpu): the
 * figure a busy machine does not distort, where ms are mostly waiting for a core. Each figure is
 * the median of K instances woken one after the other. The goal: waking at 1,000 steps costs at
 * most 2× waking at 10.
 *
 * Results go to bench/results/flow-wake-<date-time>.json. The redis-server started here is
 * stopped by PID at the end, on error too.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { createMessage } from '../src/core/message.ts';
import { InstanceStore } from '../src/flows/store.ts';
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { fmt, ignoredSharedOptions, intOption, median, parseInfo, redisCpu, SHARED_OPTIONS, sleep } from './support/measure.ts';

const { values: args } = parseArgs({
  options: { ...SHARED_OPTIONS, k: { type: 'string' }, steps: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  strict: true,
});
if (args.help) {
  console.log(`usage: node --import tsx bench/flow-wake.ts [--k K] [--steps 10,100,1000]
  --k      instances woken per step count and mode; medians reported (default 7)
  --steps  journaled steps before the wait (default 10,100,1000)`);
  process.exit(0);
}
const ignored = ignoredSharedOptions(args);
if (ignored) console.log(ignored);
const K = intOption('k', args.k, 7, 1);
const STEPS = (args.steps ?? '10,100,1000').split(',').map((s) => intOption('steps', s, 0, 0));
const FLOW = 'benchwake';
const SENDER = { kind: 'system' as const, name: 'bench' };

const FLOW_FILES: Record<string, string> = {
  'package.json': '{ "type": "module" }\n',
  [`${FLOW}.ts`]: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

// N journaled steps, then one wait: the flow of the wake-up benchmark.
export default defineFlow({
  name: '${FLOW}',
  input: z.object({ n: z.number().int() }),
  async run(ctx, input) {
    let sum = 0;
    for (let i = 0; i < input.n; i++) sum += await ctx.step('s' + (i % 10), () => i);
    const m = await ctx.receive();
    return { sum, got: m.body };
  },
});
`,
};

/** Redis commands executed so far, without the INFO calls that ask. */
async function commands(admin: Redis): Promise<number> {
  const stats = parseInfo(await admin.info('commandstats'));
  let total = 0;
  for (const [k, v] of Object.entries(stats)) {
    if (!k.startsWith('cmdstat_') || k === 'cmdstat_info') continue;
    total += Number(/calls=(\d+)/.exec(v)?.[1] ?? 0);
  }
  return total;
}

interface WakeRow {
  mode: 'sticky' | 'replay';
  steps: number;
  ms: number;
  commands: number;
  /** CPU ms per wake, this process (the gateway runs in it) and redis-server: robust to a busy machine, unlike ms. */
  cpuMs: number;
  samplesMs: number[];
}

async function measure(redis: EmbeddedRedis, admin: Redis, monitor: Redis, flowsDir: string, mode: WakeRow['mode'], steps: number): Promise<WakeRow> {
  const prefix = `wk${mode[0]}${steps}`;
  const raw = {
    http: { port: 0, host: '127.0.0.1' },
    redis: { url: redis.url, prefix },
    flows: { dir: flowsDir, concurrency: 10, stickyInstances: mode === 'sticky' ? 1000 : 0 },
    log: { level: 'warn' },
  };
  const config = parseConfig(stringify(raw), 'bench-config.yaml', {});
  const gateway: Gateway = await startGateway({ config, log: createLogger(config.log.level) });
  const store = new InstanceStore(monitor, prefix);
  try {
    const ids: string[] = [];
    for (let i = 0; i < K; i++) {
      const r = await gateway.router.send(createMessage({ to: `flow:${FLOW}`, body: { n: steps } }, SENDER), { principal: SENDER, door: 'system' });
      ids.push(r.instanceId!);
    }
    const until = async (id: string, status: string, polls: { n: number }) => {
      const t0 = performance.now();
      for (;;) {
        polls.n++;
        if ((await store.status(id)) === status) return;
        if (performance.now() - t0 > 120_000) throw new Error(`${id} not ${status} within 120 s`);
        await sleep(1);
      }
    };
    for (const id of ids) await until(id, 'waiting', { n: 0 });
    await sleep(300);
    const ms: number[] = [];
    const cmds: number[] = [];
    const cpu: number[] = [];
    for (const id of ids) {
      const polls = { n: 0 };
      const c0 = await commands(admin);
      const r0 = await redisCpu(admin);
      const u0 = process.cpuUsage();
      const t0 = performance.now();
      await gateway.router.send(createMessage({ to: `flow:${FLOW}/${id}`, body: { wake: id } }, SENDER), { principal: SENDER, door: 'system' });
      await until(id, 'completed', polls);
      ms.push(performance.now() - t0);
      const u = process.cpuUsage(u0);
      cpu.push((u.user + u.system) / 1000 + ((await redisCpu(admin)) - r0) * 1000);
      // Let BullMQ finish the run job (its completion is part of the wake) before counting.
      await sleep(100);
      cmds.push((await commands(admin)) - c0 - polls.n);
    }
    return { mode, steps, ms: Math.round(median(ms) * 100) / 100, commands: median(cmds), cpuMs: Math.round(median(cpu) * 100) / 100, samplesMs: ms.map((x) => Math.round(x * 100) / 100) };
  } finally {
    await gateway.stop().catch(() => undefined);
  }
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-wake-redis-'));
  const flowsDir = mkdtempSync(join(tmpdir(), 'sb-bench-wake-flows-'));
  for (const [file, text] of Object.entries(FLOW_FILES)) writeFileSync(join(flowsDir, file), text);
  let redis: EmbeddedRedis | undefined;
  let admin: Redis | undefined;
  let monitor: Redis | undefined;
  const started = new Date();
  try {
    redis = await startEmbeddedRedis(dir);
    admin = await openRedis(redis.url);
    monitor = await openRedis(redis.url);
    console.log(`flow wake-up: ${K} instances per row, N ctx.step calls then ctx.receive(); one message delivered, clock to 'completed'`);
    console.log(`redis-server pid ${redis.pid}, node ${process.version}, ${cpus().length} CPU(s) (shared: figures are noisy; medians)\n`);
    console.log(`${'mode'.padEnd(8)} ${'steps'.padStart(6)} ${'ms/wake'.padStart(9)} ${'CPU ms'.padStart(8)} ${'cmds/wake'.padStart(10)}`);
    const rows: WakeRow[] = [];
    for (const mode of ['sticky', 'replay'] as const) {
      for (const steps of STEPS) {
        const r = await measure(redis, admin, monitor, flowsDir, mode, steps);
        rows.push(r);
        console.log(`${mode.padEnd(8)} ${fmt(steps).padStart(6)} ${fmt(r.ms, 2).padStart(9)} ${fmt(r.cpuMs, 2).padStart(8)} ${fmt(r.commands).padStart(10)}`);
      }
    }
    const lo = Math.min(...STEPS);
    const hi = Math.max(...STEPS);
    const ratio = (mode: WakeRow['mode'], f: 'ms' | 'commands' | 'cpuMs') => {
      const a = rows.find((r) => r.mode === mode && r.steps === lo)!;
      const b = rows.find((r) => r.mode === mode && r.steps === hi)!;
      return Math.round((b[f] / a[f]) * 100) / 100;
    };
    const summary = {
      steps: { from: lo, to: hi },
      sticky: { msRatio: ratio('sticky', 'ms'), cpuRatio: ratio('sticky', 'cpuMs'), commandsRatio: ratio('sticky', 'commands') },
      replay: { msRatio: ratio('replay', 'ms'), cpuRatio: ratio('replay', 'cpuMs'), commandsRatio: ratio('replay', 'commands') },
    };
    console.log(`\nwake at ${fmt(hi)} steps ÷ wake at ${fmt(lo)}: sticky ${summary.sticky.msRatio}× time, ${summary.sticky.cpuRatio}× CPU, ${summary.sticky.commandsRatio}× commands; replay ${summary.replay.msRatio}× time, ${summary.replay.cpuRatio}× CPU, ${summary.replay.commandsRatio}× commands (goal ≤ 2×)`);
    const out = join(import.meta.dirname, 'results');
    mkdirSync(out, { recursive: true });
    const file = join(out, `flow-wake-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({ bench: 'flow-wake', startedAt: started.toISOString(), settings: { k: K, steps: STEPS }, rows, summary }, null, 2)}\n`);
    console.log(`results: ${file}`);
    return 0;
  } finally {
    await admin?.quit().catch(() => admin?.disconnect());
    await monitor?.quit().catch(() => monitor?.disconnect());
    if (redis) {
      await redis.stop().catch(() => undefined);
      console.log(`stopped redis-server pid ${redis.pid}`);
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(flowsDir, { recursive: true, force: true });
  }
}

process.exit(await main());
