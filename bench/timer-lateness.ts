/**
 * Timers that keep their word (issue 16 point 6): T flows each sleeping `ctx.sleep('<S>s')`
 * through the real runtime (a flow's sleep is a BullMQ delayed run job, as are a task's due date
 * and reminders), all pending at once; each flow records `ctx.now()` after its sleep, and the
 * lateness of a timer is that time minus the deadline journaled with the sleep.
 *
 *   npm run bench -- timers
 *   node --import tsx bench/timer-lateness.ts --timers 10000 --sleep-s 5
 *
 * The sleep is long enough for every start to be in place before the first timer is due, so all T
 * timers are pending together. Reports p50/p99/max lateness; the goal: p99 < 1 s at 10,000.
 * Results go to bench/results/timer-lateness-<date-time>.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { createMessage } from '../src/core/message.ts';
import { InstanceStore } from '../src/flows/store.ts';
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { fmt, intOption, sleep } from './support/measure.ts';

const { values: args } = parseArgs({
  options: { timers: { type: 'string' }, 'sleep-s': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  strict: true,
});
if (args.help) {
  console.log(`usage: node --import tsx bench/timer-lateness.ts [--timers T] [--sleep-s S]
  --timers   flows sleeping at once (default 10000)
  --sleep-s  the sleep; every start must be in before the first is due (default: 10 + T / 300)`);
  process.exit(0);
}
const T = intOption('timers', args.timers, 10_000, 1);
const SLEEP_S = intOption('sleep-s', args['sleep-s'], 10 + Math.ceil(T / 300), 1);
const FLOW = 'benchsleep';
const SENDER = { kind: 'system' as const, name: 'bench' };

const FLOW_FILES: Record<string, string> = {
  'package.json': '{ "type": "module" }\n',
  [`${FLOW}.ts`]: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

// One sleep, then the time it woke: the flow of the timer benchmark.
export default defineFlow({
  name: '${FLOW}',
  input: z.object({ s: z.number().int() }),
  async run(ctx, input) {
    await ctx.sleep(input.s * 1000);
    return { woke: ctx.now().getTime() };
  },
});
`,
};

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-timer-redis-'));
  const flowsDir = mkdtempSync(join(tmpdir(), 'sb-bench-timer-flows-'));
  for (const [file, text] of Object.entries(FLOW_FILES)) writeFileSync(join(flowsDir, file), text);
  let redis: EmbeddedRedis | undefined;
  let gateway: Gateway | undefined;
  const started = new Date();
  try {
    redis = await startEmbeddedRedis(dir);
    const monitor = await openRedis(redis.url);
    const prefix = 'tl';
    const raw = { http: { port: 0, host: '127.0.0.1' }, redis: { url: redis.url, prefix }, flows: { dir: flowsDir, concurrency: 50 }, log: { level: 'warn' } };
    const config = parseConfig(stringify(raw), 'bench-config.yaml', {});
    gateway = await startGateway({ config, log: createLogger(config.log.level) });
    console.log(`timer lateness: ${fmt(T)} flows in ctx.sleep('${SLEEP_S}s') at once; node ${process.version}, ${cpus().length} CPU(s) (shared: noisy)`);
    const t0 = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < T; i += 500) {
      const batch = [];
      for (let j = i; j < Math.min(T, i + 500); j++) batch.push(gateway.router.send(createMessage({ to: `flow:${FLOW}`, body: { s: SLEEP_S } }, SENDER), { principal: SENDER, door: 'system' }));
      ids.push(...(await Promise.all(batch)).map((r) => r.instanceId!));
    }
    console.log(`${fmt(T)} started in ${fmt((Date.now() - t0) / 1000, 1)} s`);
    const store = new InstanceStore(monitor, prefix);
    const deadline = Date.now() + (SLEEP_S + 300) * 1000;
    let done = 0;
    const late: number[] = [];
    const pending = new Set(ids);
    while (pending.size > 0 && Date.now() < deadline) {
      await sleep(500);
      for (const id of [...pending]) {
        const meta = await store.meta(id);
        if (meta?.status !== 'completed') continue;
        const sleepStep = (await store.step(id, 0))!;
        const due = sleepStep.deadline!;
        late.push((meta.result as { woke: number }).woke - due);
        pending.delete(id);
        done++;
      }
    }
    if (pending.size > 0) throw new Error(`${pending.size} of ${T} timers never fired`);
    late.sort((a, b) => a - b);
    const summary = { timers: done, sleepSeconds: SLEEP_S, latenessMs: { p50: pct(late, 50), p99: pct(late, 99), max: late.at(-1)!, min: late[0]! } };
    console.log(`lateness ms: p50 ${fmt(summary.latenessMs.p50)}, p99 ${fmt(summary.latenessMs.p99)}, max ${fmt(summary.latenessMs.max)} (goal p99 < 1,000)`);
    const out = join(import.meta.dirname, 'results');
    mkdirSync(out, { recursive: true });
    const file = join(out, `timer-lateness-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({ bench: 'timer-lateness', startedAt: started.toISOString(), summary }, null, 2)}\n`);
    console.log(`results: ${file}`);
    await monitor.quit().catch(() => monitor.disconnect());
    return 0;
  } finally {
    await gateway?.stop().catch(() => undefined);
    if (redis) {
      await redis.stop().catch(() => undefined);
      console.log(`stopped redis-server pid ${redis.pid}`);
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(flowsDir, { recursive: true, force: true });
  }
}

process.exit(await main());
