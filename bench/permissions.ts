/**
 * Permissions: what a check costs per message as the rule set grows, and how long a rule change
 * on one process takes to reach another process.
 *
 *   node --import tsx bench/permissions.ts              # or: npm run bench -- permissions
 *   node --import tsx bench/permissions.ts --changes 100 --checks 400000
 *
 * 1. Check cost. `Permissions.check(principal, 'send', address)` — what every door does per
 *    message — with 10, 1,000 and 10,000 rules (config-like: each group owns a few patterns under
 *    its own first segment, plus a few catch-all rules: `**` admin, `queue:**`, `group:*`). The
 *    addresses checked are a fixed mix of hits (the principal's own rules), denials in a bucket
 *    that exists (someone else's queue) and misses (no rule under that first segment). Each size
 *    is timed in several rounds (median ns/check); the ratios to the 10-rule cost are printed: a
 *    linear scan would be ~100× and ~1,000×. For contrast the same checks go through a naive
 *    linear scan over the same rules, and a skewed set (every rule under one first segment, the
 *    index's worst case) is shown too.
 * 2. Propagation. Two Permissions + PermissionStore pairs ("process A" and "process B", each with
 *    its own Redis connections, as two gateway processes have) on one private redis-server and one
 *    prefix. A adds or removes a console rule (alternately, ~50 changes); the clock runs from the
 *    call on A until B's Permissions gives the new decision (observed from B's onChange listener,
 *    i.e. pub/sub, with the 1 s version poll as the safety net). Median, p99 and max, with no
 *    other console rules and with 1,000 console rules in Redis (every change reloads all console
 *    rules on every process).
 *
 * Results go to bench/results/permissions-<date-time>.json. The redis-server started here is
 * stopped by PID at the end, on error too. Unknown options (e.g. those `npm run bench` passes to
 * every benchmark) are ignored.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { PermissionStore } from '../src/auth/permission-store.ts';
import { Permissions, type PermissionRule, type Verb } from '../src/auth/permissions.ts';
import type { Principal } from '../src/core/message.ts';
import { matchesPattern, parsePattern, type AddressPattern } from '../src/core/pattern.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';

const { values: args } = parseArgs({
  options: {
    checks: { type: 'string' },
    rounds: { type: 'string' },
    changes: { type: 'string' },
    'console-rules': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: false,
  allowPositionals: true,
});
if (args.help) {
  console.log('options: --checks N (per round and size, default 200000) --rounds N (default 5) --changes N (default 50) --console-rules N (default 1000)');
  process.exit(0);
}
const num = (v: unknown, d: number) => (typeof v === 'string' && Number.isFinite(Number(v)) && Number(v) > 0 ? Math.floor(Number(v)) : d);
const CHECKS = num(args.checks, 200_000);
const ROUNDS = num(args.rounds, 5);
const CHANGES = num(args.changes, 50);
const CONSOLE_RULES = num(args['console-rules'], 1000);
const SIZES = [10, 1000, 10_000];

const median = (xs: number[]) => quantile(xs, 0.5);
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}
const fmt = (n: number, d = 1) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

// ───────────────────────────── 1. check cost ─────────────────────────────

/** mulberry32, so every run checks the same addresses. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `n` rules: n-3 owned by groups team-0…team-(g-1) (4 patterns per group, each under the group's
 * own first segment), plus 3 catch-alls. `skewed`: every pattern under queue:shared.
 */
function ruleSet(n: number, skewed = false): PermissionRule[] {
  const rules: PermissionRule[] = [
    { id: 'c1', group: 'admins', address: '**', verbs: ['admin'], source: 'config' },
    { id: 'c2', group: 'ops', address: 'queue:**', verbs: ['browse'], source: 'config' },
    { id: 'c3', group: 'everyone', address: 'group:*', verbs: ['send'], source: 'config' },
  ];
  const shapes = (g: number): { address: string; verbs: Verb[] }[] => {
    const root = skewed ? `shared.t${g}` : `t${g}`;
    return [
      { address: `queue:${root}.in`, verbs: ['send'] },
      { address: `queue:${root}.out.*`, verbs: ['consume', 'browse'] },
      { address: `queue:${root}/archive/**`, verbs: ['browse'] },
      { address: skewed ? `queue:shared.t${g}.tasks` : `group:t${g}`, verbs: ['consume'] },
    ];
  };
  for (let i = 0; rules.length < n; i++) {
    const g = Math.floor(i / 4);
    const s = shapes(g)[i % 4]!;
    rules.push({ id: `r${i}`, group: `team-${g}`, address: s.address, verbs: s.verbs, source: i % 2 ? 'console' : 'config' });
  }
  return rules.slice(0, n);
}

interface Probe {
  p: Principal;
  verb: Verb;
  address: string;
}

/** 1,024 probes: 50% allowed by the principal's own rule, 25% denied in an existing bucket, 25% no bucket. */
function probes(n: number, skewed: boolean): Probe[] {
  const r = prng(n + (skewed ? 1 : 0));
  const groups = Math.max(1, Math.floor((n - 3) / 4));
  const root = (g: number) => (skewed ? `shared.t${g}` : `t${g}`);
  const out: Probe[] = [];
  for (let i = 0; i < 1024; i++) {
    const g = Math.floor(r() * groups);
    const p: Principal = { kind: 'user', name: `u${g}`, groups: [`team-${g}`, 'everyone'] };
    const k = i % 4;
    if (k === 0) out.push({ p, verb: 'send', address: `queue:${root(g)}.in` });
    else if (k === 1) out.push({ p, verb: 'consume', address: `queue:${root(g)}.out.eu` });
    else if (k === 2) out.push({ p, verb: 'send', address: `queue:${root((g + 1) % groups)}.in` + (groups === 1 ? '.x' : '') });
    else out.push({ p, verb: 'consume', address: `queue:nobody-${i}.x` });
  }
  return out;
}

/** What a door would do without an index: every rule, in order. */
class LinearScan {
  private readonly compiled: { rule: PermissionRule; pattern: AddressPattern }[];
  constructor(rules: PermissionRule[]) {
    this.compiled = rules.map((rule) => ({ rule, pattern: parsePattern(rule.address) }));
  }
  check(p: Principal, verb: Verb, address: string): boolean {
    for (const { rule, pattern } of this.compiled) {
      if (rule.verbs.includes(verb) && rule.group !== undefined && (p.groups ?? []).includes(rule.group) && matchesPattern(pattern, address)) return true;
    }
    return false;
  }
}

function timeChecks(check: (x: Probe) => boolean, ps: Probe[], count: number): { nsPerCheck: number; allowed: number } {
  let allowed = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) if (check(ps[i & 1023]!)) allowed++;
  const ns = Number(process.hrtime.bigint() - t0);
  return { nsPerCheck: ns / count, allowed };
}

interface CheckRow {
  rules: number;
  set: 'spread' | 'skewed';
  impl: 'indexed' | 'linear';
  nsPerCheck: number;
  rounds: number[];
  allowedShare: number;
}

function benchChecks(): CheckRow[] {
  const rows: CheckRow[] = [];
  const runs: { n: number; skewed: boolean; linear: boolean }[] = [
    ...SIZES.map((n) => ({ n, skewed: false, linear: false })),
    ...SIZES.map((n) => ({ n, skewed: false, linear: true })),
    ...SIZES.map((n) => ({ n, skewed: true, linear: false })),
  ];
  for (const { n, skewed, linear } of runs) {
    const rules = ruleSet(n, skewed);
    const ps = probes(n, skewed);
    const perms = new Permissions(rules);
    const scan = new LinearScan(rules);
    const check = linear ? (x: Probe) => scan.check(x.p, x.verb, x.address) : (x: Probe) => perms.check(x.p, x.verb, x.address).allowed;
    // Both implementations must agree before either is timed.
    for (const x of ps) if (perms.check(x.p, x.verb, x.address).allowed !== scan.check(x.p, x.verb, x.address)) throw new Error(`index and scan disagree on ${x.verb} ${x.address}`);
    // A linear scan (and the skewed set, where one bucket holds every rule) over 10,000 rules is
    // slow: fewer checks keep the run short (ns/check is what counts).
    const count = linear || skewed ? Math.max(1000, Math.floor(CHECKS / Math.max(1, n / 10))) : CHECKS;
    timeChecks(check, ps, Math.min(count, 20_000)); // warm-up (JIT)
    const times: number[] = [];
    let allowed = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const r = timeChecks(check, ps, count);
      times.push(r.nsPerCheck);
      allowed = r.allowed / count;
    }
    const row: CheckRow = { rules: n, set: skewed ? 'skewed' : 'spread', impl: linear ? 'linear' : 'indexed', nsPerCheck: median(times), rounds: times.map((t) => Math.round(t * 10) / 10), allowedShare: Math.round(allowed * 1000) / 1000 };
    rows.push(row);
    console.log(`  ${row.impl.padEnd(7)} ${row.set.padEnd(6)} ${String(n).padStart(6)} rules: ${fmt(row.nsPerCheck).padStart(10)} ns/check  (rounds: ${row.rounds.join(', ')}; allowed ${Math.round(row.allowedShare * 100)}%)`);
  }
  return rows;
}

// ───────────────────────────── 2. propagation ─────────────────────────────

interface Side {
  redis: Redis;
  perms: Permissions;
  store: PermissionStore;
}

async function side(url: string, prefix: string): Promise<Side> {
  const redis = await openRedis(url);
  const perms = new Permissions([]);
  const store = new PermissionStore(redis, prefix, perms, [], createLogger('silent'));
  await store.start();
  return { redis, perms, store };
}

interface PropagationResult {
  consoleRules: number;
  changes: number;
  /** From the change call on A until B decides anew. */
  toOtherMs: { median: number; p99: number; max: number; min: number };
  /** From the change call on A until the call returned (A itself already applies it then). */
  onSameMs: { median: number; p99: number; max: number };
  samplesMs: number[];
}

async function propagation(a: Side, b: Side, consoleRules: number, changes: number): Promise<PropagationResult> {
  const who: Principal = { kind: 'user', name: 'bench-user', groups: ['bench'] };
  // Fill up to the wanted number of other console rules (through the store, as the console does).
  const have = (await a.store.consoleRules()).length;
  for (let i = have; i < consoleRules; i++) await a.store.add({ group: `filler-${i}`, address: `queue:filler-${i}.**`, verbs: ['send'] }, 'user:bench');
  const deadline = Date.now() + 10_000;
  while (b.perms.rules.length < consoleRules) {
    if (Date.now() > deadline) throw new Error('B did not load the filler rules');
    await new Promise((r) => setTimeout(r, 20));
  }
  const toOther: number[] = [];
  const onSame: number[] = [];
  let current: PermissionRule | undefined;
  for (let i = 0; i < changes; i++) {
    const adding = current === undefined;
    const address = adding ? `queue:prop.x${i % 4}` : current!.address;
    const want = adding;
    // Resolve as soon as B's rules give the new decision (checked on every change B applies).
    let resolveSeen!: (t: number) => void;
    const seen = new Promise<number>((r) => (resolveSeen = r));
    const test = () => {
      if (b.perms.check(who, 'send', address).allowed === want) resolveSeen(performance.now());
    };
    const off = b.perms.onChange(test);
    const t0 = performance.now();
    if (adding) current = await a.store.add({ group: 'bench', address, verbs: ['send'] }, 'user:bench');
    else {
      await a.store.remove(current!.id, 'user:bench');
      current = undefined;
    }
    const t1 = performance.now();
    test();
    const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`change ${i} not seen on B within 10 s`)), 10_000).unref());
    const t2 = await Promise.race([seen, timeout]);
    off();
    onSame.push(t1 - t0);
    toOther.push(Math.max(0, t2 - t0));
    await new Promise((r) => setTimeout(r, 20)); // let both settle; changes are not back to back
  }
  if (current) await a.store.remove(current.id, 'user:bench');
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    consoleRules,
    changes,
    toOtherMs: { median: r2(median(toOther)), p99: r2(quantile(toOther, 0.99)), max: r2(Math.max(...toOther)), min: r2(Math.min(...toOther)) },
    onSameMs: { median: r2(median(onSame)), p99: r2(quantile(onSame, 0.99)), max: r2(Math.max(...onSame)) },
    samplesMs: toOther.map(r2),
  };
}

// ───────────────────────────── main ─────────────────────────────

const started = new Date();
console.log(`permissions benchmark · ${cpus().length} cores · load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(`\n1. check cost per message (${CHECKS.toLocaleString('en-US')} checks × ${ROUNDS} rounds per size; median)`);
const checkRows = benchChecks();
const cost = (impl: string, set: string, n: number) => checkRows.find((r) => r.impl === impl && r.set === set && r.rules === n)!.nsPerCheck;
const ratios = Object.fromEntries(
  (['indexed:spread', 'linear:spread', 'indexed:skewed'] as const).map((k) => {
    const [impl, set] = k.split(':') as [string, string];
    return [k, { '1000/10': Math.round((cost(impl, set, 1000) / cost(impl, set, 10)) * 100) / 100, '10000/10': Math.round((cost(impl, set, 10_000) / cost(impl, set, 10)) * 100) / 100 }];
  }),
);
console.log('\n  ratio to the 10-rule cost        1,000 rules   10,000 rules   (linear growth would be 100× and 1,000×)');
for (const [k, v] of Object.entries(ratios)) console.log(`  ${k.padEnd(32)} ${fmt(v['1000/10'], 2).padStart(10)}×  ${fmt(v['10000/10'], 2).padStart(12)}×`);

let redis: EmbeddedRedis | undefined;
const dir = mkdtempSync(join(tmpdir(), 'sb-bench-perm-'));
const sides: Side[] = [];
let propagationResults: PropagationResult[] = [];
try {
  redis = await startEmbeddedRedis(dir, { appendfsync: 'everysec' });
  const prefix = `benchperm${process.pid}`;
  const a = await side(redis.url, prefix);
  const b = await side(redis.url, prefix);
  sides.push(a, b);
  console.log(`\n2. rule change on process A → effect on process B (one redis-server, ${CHANGES} changes, adds and removes alternating)`);
  for (const n of [0, CONSOLE_RULES]) {
    const r = await propagation(a, b, n, CHANGES);
    propagationResults.push(r);
    console.log(`  ${String(n).padStart(5)} other console rules: A→B median ${fmt(r.toOtherMs.median, 2)} ms, p99 ${fmt(r.toOtherMs.p99, 2)} ms, max ${fmt(r.toOtherMs.max, 2)} ms  (the change call on A itself: median ${fmt(r.onSameMs.median, 2)} ms)`);
  }
} finally {
  for (const s of sides) {
    await s.store.stop();
    await s.redis.quit().catch(() => {});
  }
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}

mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
const file = join(import.meta.dirname, 'results', `permissions-${started.toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, `${JSON.stringify({
  bench: 'permissions',
  startedAt: started.toISOString(),
  machine: { cores: cpus().length, model: cpus()[0]?.model, loadavg: loadavg(), node: process.version },
  options: { checks: CHECKS, rounds: ROUNDS, changes: CHANGES, consoleRules: CONSOLE_RULES },
  checkCost: { unit: 'ns/check', rows: checkRows, ratios },
  propagation: propagationResults,
}, null, 2)}\n`);
console.log(`\nresults: ${file}`);
process.exit(0);
