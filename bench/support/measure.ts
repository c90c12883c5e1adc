import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { GATEWAY_NODE_FLAGS } from '../../bin/node-flags.mjs';

// What every benchmark measures with: options, machine and Redis CPU, and the numbers' format.

const CLK_TCK = 100; // USER_HZ on Linux

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Bytes in MB, one decimal. */
export const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

/** An integer command-line option ≥ `min` (underscores allowed: 20_000), or `fallback` when absent. */
export function intOption(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A number with thousands separators and exactly `digits` decimals. */
export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Busy CPU seconds of the whole machine so far (/proc/stat), to tell a quiet phase from a busy one. */
export function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) of one process, from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime
  } catch {
    return undefined;
  }
}

/** The fields of a Redis INFO reply. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** Calls and microseconds by command name, from INFO commandstats (a script's commands count in it and on their own lines). */
export function commandStats(text: string): { commands: Record<string, number>; micros: Record<string, number> } {
  const commands: Record<string, number> = {};
  const micros: Record<string, number> = {};
  for (const [k, v] of Object.entries(parseInfo(text))) {
    const m = /calls=(\d+),usec=(\d+)/.exec(v);
    if (!k.startsWith('cmdstat_') || !m) continue;
    commands[k.slice(8)] = Number(m[1]);
    micros[k.slice(8)] = Number(m[2]);
  }
  return { commands, micros };
}

/** `after` − `before` per command, the unchanged and the `ignored` (the bench's own looks) left out. */
export function commandDelta(before: Record<string, number>, after: Record<string, number>, ignored: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d > 0 && !ignored.includes(k)) out[k] = d;
  }
  return out;
}

/** Totals per unit of work (a message, a flow), largest first, rounded to 0.01, zeros left out. */
export function perUnit(totals: Record<string, number>, n: number): Record<string, number> {
  return Object.fromEntries(Object.entries(totals).sort((x, y) => y[1] - x[1]).map(([k, v]) => [k, Math.round((v / n) * 100) / 100]).filter(([, v]) => (v as number) > 0));
}

/** CPU seconds redis-server has used so far (INFO cpu). */
export async function redisCpu(admin: Redis): Promise<number> {
  const cpu = parseInfo(await admin.info('cpu'));
  return Number(cpu.used_cpu_user ?? 0) + Number(cpu.used_cpu_sys ?? 0);
}

/**
 * Which of the gateway's V8 flags (bin/node-flags.mjs) this process runs with: `npm run bench`
 * passes them all; a benchmark started by hand without them says so once, as its figures are
 * then not those of the gateway users run.
 */
export function gatewayFlagsInUse(): string[] {
  const using = GATEWAY_NODE_FLAGS.filter((f) => process.execArgv.includes(f));
  if (using.length < GATEWAY_NODE_FLAGS.length && !warnedFlags) {
    warnedFlags = true;
    console.log(`note: not run with the gateway's V8 flags (${GATEWAY_NODE_FLAGS.join(' ')}, as npm run bench does): its figures are not the gateway's`);
  }
  return using;
}
let warnedFlags = false;

/** Which gateway code a benchmark measures: the compiled dist/ (npm run bench) or the sources. */
export function measuredCode(): 'dist' | 'src through tsx' {
  return process.env.SWITCHBOARD_BENCH_CODE === 'dist' ? 'dist' : 'src through tsx';
}

/**
 * With BENCH_PROFILE=<dir>, starts V8's CPU profiler; the returned stop writes
 * `<dir>/<name>.cpuprofile` (open it in Chrome's DevTools). With BENCH_HEAP_PROFILE=<dir>, V8's
 * sampling heap profiler instead: `<dir>/<name>.heapprofile`, what each function allocated
 * (garbage collection is a large share of a message's CPU). Without either, both do nothing.
 */
export async function startProfile(name: string): Promise<() => Promise<void>> {
  const dir = process.env.BENCH_PROFILE;
  const heapDir = process.env.BENCH_HEAP_PROFILE;
  if (!dir && !heapDir) return async () => {};
  const { Session } = await import('node:inspector/promises');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  if (heapDir) {
    await session.post('HeapProfiler.enable');
    // Every 8 KiB allocated on average: fine enough for a phase of thousands of messages.
    await session.post('HeapProfiler.startSampling', { samplingInterval: 8192, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
    return async () => {
      const { profile } = await session.post('HeapProfiler.stopSampling');
      session.disconnect();
      mkdirSync(heapDir, { recursive: true });
      writeFileSync(`${heapDir}/${name}.heapprofile`, JSON.stringify(profile));
    };
  }
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    mkdirSync(dir!, { recursive: true });
    writeFileSync(`${dir!}/${name}.cpuprofile`, JSON.stringify(profile));
  };
}

/** Runs `fn` under the profiler of `startProfile`: only the timed phase, not the set-up around it. */
export async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const stop = await startProfile(name);
  try {
    return await fn();
  } finally {
    await stop();
  }
}

/**
 * The options `npm run bench` hands to every benchmark it runs (bench/run-all.ts), for parseArgs
 * of a benchmark that has no use for them: accepted, and named as ignored by `ignoredSharedOptions`.
 */
export const SHARED_OPTIONS = {
  n: { type: 'string' },
  rounds: { type: 'string' },
  concurrency: { type: 'string' },
  warmup: { type: 'string' },
  'body-bytes': { type: 'string' },
  'timeout-s': { type: 'string' },
} as const;

/** A note naming the shared options given to a benchmark that ignores them, or undefined. */
export function ignoredSharedOptions(args: Record<string, unknown>): string | undefined {
  const given = Object.keys(SHARED_OPTIONS).filter((k) => args[k] !== undefined);
  return given.length > 0 ? `note: ${given.map((o) => `--${o}`).join(', ')} ignored by this benchmark (see --help)` : undefined;
}
