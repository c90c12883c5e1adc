/**
 * CLI start time (issue 16 goal 5): `switchboard --help` and `switchboard browse` (against a port
 * nobody listens on, so it is start-up plus one refused connection) beside `node -e 0`, the floor
 * of any Node program on this machine. Each command runs `--rounds` times, one after the other,
 * and the medians are compared; results go to bench/results/cli-startup-<date-time>.json.
 *
 *   npm run bench -- cli [--rounds 9]
 *
 * The CLI runs dist/ when `npm run build` is up to date with src/, else the sources through tsx:
 * the result records which (a stale build measures the tsx fallback, not the shipped path).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { intOption, median } from './support/measure.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string' } }, strict: false });
const ROUNDS = intOption('rounds', args.rounds as string | undefined, 9, 1);
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

console.log(`CLI start (${compiled ? 'compiled dist/' : 'dist/ stale or missing: tsx fallback'}), median of ${ROUNDS}:`);
console.log(`  node -e 0              ${ms.floor} ms (floor)`);
console.log(`  switchboard --help     ${ms.help} ms (goal < 300)`);
console.log(`  switchboard browse     ${ms.browse} ms (goal < 300; connection refused)`);

const out = join(ROOT, 'bench', 'results');
mkdirSync(out, { recursive: true });
const at = new Date().toISOString();
writeFileSync(join(out, `cli-startup-${at.replace(/[:.]/g, '-')}.json`), `${JSON.stringify({ bench: 'cli-startup', startedAt: at, settings: { rounds: ROUNDS, compiled }, summary: { ms, samples } }, null, 2)}\n`);
