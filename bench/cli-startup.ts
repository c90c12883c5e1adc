/**
 * CLI start time (issue 16 goal 5): `switchboard --help` and `switchboard browse` (against a port
 * nobody listens on, so it is start-up plus one refused connection) beside `node -e 0`, the floor
 * of any Node program on this machine. Each command runs `--rounds` times, one after the other,
 * and the medians are compared; results go to bench/results/cli-startup-<date-time>.json.
 *
 * `npm start` to ready (goal 5, second half: < 2 s once Redis is installed): `node
 * bin/switchboard.mjs start` with a temp config and a private data dir (so it starts its own
 * redis-server), timed from spawn until GET /readyz answers 200 (polled every 20 ms), then stopped
 * by its PID (SIGTERM; it stops its redis-server). `--start-rounds` times (a fresh data dir each),
 * median reported beside the same `node -e 0` floor.
 *
 *   npm run bench -- cli [--rounds 9] [--start-rounds 3]
 *
 * The CLI runs dist/ when `npm run build` is up to date with src/, else the sources through tsx:
 * the result records which (a stale build measures the tsx fallback, not the shipped path).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { freePort } from '../src/store/embedded-redis.ts';
import { testConfig } from '../test/support/gateway.ts';
import { intOption, median, sleep } from './support/measure.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string' }, 'start-rounds': { type: 'string' } }, strict: false });
const ROUNDS = intOption('rounds', args.rounds as string | undefined, 9, 1);
const START_ROUNDS = intOption('start-rounds', args['start-rounds'] as string | undefined, 3, 0);
const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');

function newestIn(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestIn(p) : statSync(p).mtimeMs);
  }
  return t;
}

const stamp = join(ROOT, 'dist', '.build-stamp');
const compiled = existsSync(stamp) && statSync(stamp).mtimeMs >= newestIn(join(ROOT, 'src'));

function time(argv: string[]): number {
  const t = performance.now();
  spawnSync(process.execPath, argv, { cwd: ROOT, stdio: 'ignore', env: { ...process.env, SWITCHBOARD_URL: 'http://127.0.0.1:1' } });
  return performance.now() - t;
}

const cases = { floor: ['-e', '0'], help: [BIN, '--help'], browse: [BIN, 'browse'] } as const;
const samples: Record<keyof typeof cases, number[]> = { floor: [], help: [], browse: [] };
for (let r = 0; r < ROUNDS; r++) for (const [k, argv] of Object.entries(cases)) samples[k as keyof typeof cases].push(time([...argv]));
const ms = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, Math.round(median(v))])) as Record<keyof typeof cases, number>;

/** ms from spawning `switchboard start` (own data dir, own redis-server) until /readyz is 200. */
async function timeStart(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-start-bench-'));
  const port = await freePort();
  const raw = await testConfig('unused', { log: { level: 'warn' } });
  raw.http = { port, host: '127.0.0.1' };
  raw.redis = { dataDir: join(dir, 'redis'), prefix: 'start' };
  const configFile = join(dir, 'switchboard.yaml');
  writeFileSync(configFile, stringify(raw));
  const t = performance.now();
  const child = spawn(process.execPath, [BIN, 'start', '--config', configFile], { cwd: ROOT, stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`switchboard start exited with ${child.exitCode}`);
      if (performance.now() - t > 60_000) throw new Error('switchboard start not ready after 60 s');
      if (await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false)) return performance.now() - t;
      await sleep(20);
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
    const timer = setTimeout(() => { if (child.exitCode === null) process.kill(child.pid!, 'SIGKILL'); }, 30_000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
}
const startSamples: number[] = [];
for (let r = 0; r < START_ROUNDS; r++) startSamples.push(await timeStart());
const startMs = startSamples.length ? Math.round(median(startSamples)) : undefined;

console.log(`CLI start (${compiled ? 'compiled dist/' : 'dist/ stale or missing: tsx fallback'}), median of ${ROUNDS}:`);
console.log(`  node -e 0              ${ms.floor} ms (floor)`);
console.log(`  switchboard --help     ${ms.help} ms (goal < 300)`);
console.log(`  switchboard browse     ${ms.browse} ms (goal < 300; connection refused)`);
if (startMs !== undefined) console.log(`  switchboard start      ${startMs} ms to /readyz 200 (goal < 2000; own redis-server, median of ${START_ROUNDS}: ${startSamples.map((v) => Math.round(v)).join(', ')})`);

const out = join(ROOT, 'bench', 'results');
mkdirSync(out, { recursive: true });
const at = new Date().toISOString();
writeFileSync(join(out, `cli-startup-${at.replace(/[:.]/g, '-')}.json`), `${JSON.stringify({ bench: 'cli-startup', startedAt: at, settings: { rounds: ROUNDS, startRounds: START_ROUNDS, compiled }, summary: { ms: { ...ms, ...(startMs !== undefined ? { startReady: startMs } : {}) }, samples: { ...samples, startReady: startSamples } } }, null, 2)}\n`);
