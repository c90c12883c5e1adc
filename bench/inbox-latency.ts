/**
 * Inbox latency: how long a task takes from the flow being started to its arrival in a logged-in
 * user's open inbox over server-sent events, at a steady rate; beside the raw floor of the same
 * Redis (PUBLISH → SUBSCRIBE round trip) at the same rate.
 *
 *   node --import tsx bench/inbox-latency.ts                    # 100 tasks/s for 10 s (+2 s warm-up)
 *   node --import tsx bench/inbox-latency.ts --rate 200 --seconds 20
 *   node --import tsx bench/inbox-latency.ts --help
 *
 * Expect ~40 s: gateway start, 1,000 logins, 2 s warm-up, 10 s measured, drain, 10 s baseline.
 *
 * Issue 16's goal 4 is this latency "with 1,000 open inbox streams": by default (--streams 1000)
 * that many other inbox streams stay open through the warm-up and the measurement, each of its own
 * bench user (crowd00000…) of the file directory, logged in over the form like the measured one
 * (one stream a user, so http.inboxStreamsPerUser, 5, is not what limits them). They are held by a
 * child process (bench/support/inbox-crowd.ts), so reading them costs the machine's cores but not
 * the event loop of the gateway and the measured client; its CPU is reported as `crowd`. What
 * 1,000 open streams cost the gateway: every task event is checked against every stream's user
 * (1,000 checks a task), every stream's session is looked up in Redis every 5 s, and the streams
 * whose user may see the task get it written. Decided here: 100 of the 1,000 (--watchers) are in
 * group:bench-approvers, the queue the measured user watches, and get every task (a team's shared
 * queue watched by a tenth of the users: 10,100 SSE writes a second at 100 tasks/s); the other 900
 * are in a group that gets no task, idle tabs. At the end, while the gateway still runs, every
 * crowd stream must still be open, every watcher must have got every task the measured stream got,
 * and no other crowd stream any: otherwise the run fails without printing a latency.
 *
 * Everything runs on one private redis-server (started here, AOF with fsync every second, as the
 * gateway's own embedded Redis) and one in-process gateway (config through the real parser): a file
 * directory with `approver` (in the group bench-approvers, which may consume group:bench-approvers)
 * and `starter` (in bench-ops, which may start the flow), and a temp flows folder with one flow
 * whose first step is `ctx.ask('group:bench-approvers', {title, data, actions: ['ok']})`, the title
 * and data carrying the sequence number and the send time.
 *
 * 1. switchboard: the crowd is logged in and its streams opened (above), then `approver` logs in over HTTP like a browser (GET /login for the session cookie
 *    and the `_csrf` field, POST /login → 303 and a new cookie) and opens GET /inbox/events with
 *    fetch; the stream is read as it comes. Then flows are started at a steady rate (absolute
 *    schedule, no catch-up bursts hidden: the schedule lag is recorded) with
 *    `POST /api/flows/latencyask` (HTTP Basic as `starter`), each with a fixed start id, so its
 *    instance id, the id of its ask message (`<instance>:0`) and thus its task id are known in
 *    advance. Per task the clock runs from just before the start request is made to the chunk of
 *    the SSE stream holding its `event: task` with type 'created'. A warm-up of a couple of seconds
 *    at the same rate runs first and is not counted; after the last start the stream is drained
 *    for a few seconds. Every task is then read back from Redis (TaskStore) and its title checked
 *    against its sequence number; its `createdAt` (the moment ctx.ask made the message, ms
 *    resolution, same clock) splits each latency into start → ctx.ask (HTTP, flow queue, run) and
 *    ctx.ask → SSE (the issue's "from ctx.ask": task create, follow-up job, PUBLISH, the
 *    gateway's subscriber, the SSE write, the client's read). A second subscriber of the bench's
 *    own on the gateway's task-events channel splits it again, at sub-ms resolution, into
 *    start → PUBLISH heard and PUBLISH heard → SSE (the gateway's share after Redis).
 * 2. raw: on the same Redis at the same rate, PUBLISH of a task-event-sized JSON on one connection,
 *    SUBSCRIBE on another, both in this process; the clock runs from just before PUBLISH to the
 *    message event. The gateway is stopped first, so this is the floor of the transport alone.
 *
 * The client, the gateway and the baseline share one Node process (and the machine's cores with
 * Redis): event-loop delay and other processes' CPU during each phase are recorded, as they are
 * part of what is measured. Results go to bench/results/inbox-latency-<date-time>.json. Every
 * server started here is stopped by PID at the end, on error too.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes, scrypt } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { hashPassword } from '../src/auth/password.ts';
import { parseConfig } from '../src/config/load.ts';
import { TaskStore } from '../src/people/task-store.ts';
import { taskIdFor } from '../src/people/task-intake.ts';
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { machineBusySeconds, parseInfo, processCpuSeconds, redisCpu, sleep, measuredCode, gatewayFlagsInUse } from './support/measure.ts';

// ───────────────────────────── options ─────────────────────────────

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string' },
    seconds: { type: 'string' },
    'warmup-s': { type: 'string' },
    'baseline-s': { type: 'string' },
    'drain-s': { type: 'string' },
    concurrency: { type: 'string' },
    streams: { type: 'string' },
    watchers: { type: 'string' },
    'timeout-s': { type: 'string' },
    // Shared options `bench/run-all.ts` hands to every benchmark; they mean nothing here.
    n: { type: 'string' },
    rounds: { type: 'string' },
    warmup: { type: 'string' },
    'body-bytes': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (args.help) {
  console.log(`usage: node --import tsx bench/inbox-latency.ts [--rate R] [--seconds S] [--warmup-s W] [--baseline-s B] [--drain-s D] [--concurrency C] [--timeout-s T]
  --rate         flows started (tasks created) per second (default 100, or BENCH_INBOX_RATE)
  --seconds      measured seconds at that rate (default 10)
  --warmup-s     untimed seconds at that rate first (default 2)
  --baseline-s   seconds of the raw PUBLISH → SUBSCRIBE baseline at the same rate, 0 to skip (default: --seconds)
  --drain-s      after the last start, wait at most this long for the last events (default 5)
  --concurrency  flows.concurrency of the gateway (default: the config default)
  --streams      other inbox streams held open during the run, one per logged-in bench user, in a
                 child process (default 1000; 0 for the measured stream alone)
  --watchers     how many of those users are in the group every task goes to, so their streams
                 get every task too (default 100, at most --streams)
  --timeout-s    give up on the whole run after this long (default 120)
  (--n, --rounds, --warmup, --body-bytes are accepted for bench/run-all.ts and ignored)`);
  process.exit(0);
}

function numOption(name: string, raw: string | undefined, fallback: number, min: number, integer = false): number {
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw.replace(/_/g, ''));
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) throw new Error(`--${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

const RATE = numOption('rate', args.rate ?? process.env.BENCH_INBOX_RATE, 100, 1);
if (RATE > 2000) throw new Error('--rate must be at most 2000');
const SECONDS = numOption('seconds', args.seconds, 10, 1);
const WARMUP_S = numOption('warmup-s', args['warmup-s'], 2, 0);
const BASELINE_S = numOption('baseline-s', args['baseline-s'], SECONDS, 0);
const DRAIN_MS = numOption('drain-s', args['drain-s'], 5, 0.1) * 1000;
const CONCURRENCY = args.concurrency === undefined ? undefined : numOption('concurrency', args.concurrency, 20, 1, true);
const STREAMS = numOption('streams', args.streams, 1000, 0, true);
const WATCHERS = numOption('watchers', args.watchers, Math.min(100, STREAMS), 0, true);
if (WATCHERS > STREAMS) throw new Error(`--watchers (${WATCHERS}) must be at most --streams (${STREAMS})`);
// Logging in the crowd takes a while; the run's own parts are unchanged.
const TIMEOUT_MS = numOption('timeout-s', args['timeout-s'], 120 + Math.ceil(STREAMS / 10), 5) * 1000;
const IGNORED_OPTIONS = (['n', 'rounds', 'warmup', 'body-bytes'] as const).filter((k) => args[k] !== undefined);

const PREFIX = 'sblat';
const FLOW = 'latencyask';
const GROUP = 'bench-approvers';
const GROUP_ADDRESS = `group:${GROUP}`;
const APPROVER = { name: 'approver', password: 'approver-bench-pw' };
const STARTER = { name: 'starter', password: 'starter-bench-pw' };
const CHANNEL = 'bench:pubsub-baseline';
const CROWD_GROUP = 'bench-crowd';
const CROWD_PASSWORD = 'crowd-bench-pw';
const crowdName = (i: number) => `crowd${String(i).padStart(5, '0')}`;
const QUIET_PERCENT = 15;

const FLOW_FILES: Record<string, string> = {
  'package.json': '{ "type": "module" }\n',
  [`${FLOW}.ts`]: `import { defineFlow } from 'switchboard';
import { z } from 'zod';

// One task for the group, first thing: the flow of the inbox latency benchmark.
export default defineFlow({
  name: '${FLOW}',
  input: z.object({ seq: z.number().int(), sentAt: z.number() }),
  async run(ctx, input) {
    const d = await ctx.ask('group:${GROUP}', {
      title: \`bench task #\${input.seq} sent at \${input.sentAt}\`,
      data: { seq: input.seq, sentAt: input.sentAt },
      actions: ['ok'],
    });
    return { seq: input.seq, action: d.action };
  },
});
`,
};

// ───────────────────────────── helpers ─────────────────────────────

const round3 = (x: number) => Math.round(x * 1000) / 1000;




interface Stats { count: number; median: number; p95: number; p99: number; max: number; min: number; mean: number }

/** Nearest-rank percentiles, in ms. */
function stats(xs: number[]): Stats {
  if (xs.length === 0) return { count: 0, median: NaN, p95: NaN, p99: NaN, max: NaN, min: NaN, mean: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  return {
    count: s.length,
    median: round3(s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2),
    p95: round3(at(95)),
    p99: round3(at(99)),
    max: round3(s[s.length - 1]!),
    min: round3(s[0]!),
    mean: round3(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

/**
 * Calls `fire(seq)` at a steady `rate` for `seconds`, on an absolute schedule (a late timer fires
 * what is due at once rather than drifting). Returns how late, at worst and on average, the starts
 * left against their schedule.
 */
async function steady(rate: number, seconds: number, first: number, fire: (seq: number) => void, signal?: AbortSignal): Promise<{ sent: number; seconds: number; maxLagMs: number; meanLagMs: number }> {
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const t0 = performance.now();
  let i = 0;
  let maxLag = 0;
  let sumLag = 0;
  while (i < total) {
    signal?.throwIfAborted();
    const now = performance.now();
    while (i < total && t0 + i * interval <= now) {
      const lag = now - (t0 + i * interval);
      maxLag = Math.max(maxLag, lag);
      sumLag += lag;
      fire(first + i);
      i++;
    }
    if (i < total) await sleep(Math.max(0, t0 + i * interval - performance.now()));
  }
  return { sent: total, seconds: (performance.now() - t0) / 1000, maxLagMs: round3(maxLag), meanLagMs: round3(sumLag / Math.max(1, total)) };
}

/** Waits until `done()` or `ms` passed. */
async function until(done: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!done() && performance.now() < end) await sleep(10);
}

/** Process-wide view of one phase: event-loop delay, this process's, Redis's and other processes' CPU. */
function phaseMeter(admin: Redis, crowdPid?: number) {
  // The histogram holds the whole interval of its sampling timer: the delay is what exceeds it.
  const RESOLUTION_MS = 2;
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  const delay = (ns: number) => round3(Math.max(0, ns / 1e6 - RESOLUTION_MS));
  let cpu0: NodeJS.CpuUsage;
  let busy0: number | undefined;
  let redis0 = 0;
  let crowd0 = 0;
  let t0 = 0;
  return {
    async start() {
      redis0 = await redisCpu(admin);
      crowd0 = crowdPid === undefined ? 0 : processCpuSeconds(crowdPid) ?? 0;
      cpu0 = process.cpuUsage();
      busy0 = machineBusySeconds();
      t0 = performance.now();
      h.enable();
    },
    async stop() {
      h.disable();
      const seconds = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const busy1 = machineBusySeconds();
      const redisSeconds = (await redisCpu(admin)) - redis0;
      const crowdSeconds = crowdPid === undefined ? 0 : (processCpuSeconds(crowdPid) ?? crowd0) - crowd0;
      const nodeSeconds = (cpu.user + cpu.system) / 1e6;
      const otherCpuPercent = busy0 === undefined || busy1 === undefined ? null : Math.max(0, Math.round(((busy1 - busy0 - nodeSeconds - redisSeconds - crowdSeconds) / (seconds * cpus().length)) * 100));
      return {
        seconds: round3(seconds),
        eventLoopDelayMs: { p50: delay(h.percentile(50)), p99: delay(h.percentile(99)), max: delay(h.max) },
        nodeCpuPercent: Math.round((nodeSeconds / seconds) * 100),
        redisCpuPercent: Math.round((redisSeconds / seconds) * 100),
        crowdCpuPercent: Math.round((crowdSeconds / seconds) * 100),
        otherCpuPercent,
        loadAverage1m: Math.round(loadavg()[0]! * 100) / 100,
      };
    },
  };
}

type PhaseEnv = Awaited<ReturnType<ReturnType<typeof phaseMeter>['stop']>>;

// ───────────────────────────── the web client ─────────────────────────────

/** A browser-like client: keeps cookies, never follows redirects. */
class WebClient {
  readonly cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  private remember(res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c) || /max-age=0\b/i.test(c)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  get cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(method: string, path: string, form?: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { accept: 'text/html' };
    if (this.cookies.size) headers.cookie = this.cookieHeader;
    let body: string | undefined;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(this.base + path, { method, headers, body, redirect: 'manual', ...(signal ? { signal } : {}) });
    this.remember(res);
    return res;
  }

  /** The login form: a session cookie and its CSRF token, then the POST (303 and a new session id). */
  async login(username: string, password: string): Promise<void> {
    const page = await this.request('GET', '/login');
    const html = await page.text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(html)?.[1];
    if (page.status !== 200 || !csrf) throw new Error(`GET /login: ${page.status}, ${csrf ? '' : 'no _csrf field in the form'}`);
    if (!this.cookies.has('sb.sid')) throw new Error('GET /login set no session cookie');
    const before = this.cookies.get('sb.sid');
    const res = await this.request('POST', '/login', { _csrf: csrf, username, password, next: '/inbox' });
    await res.text();
    if (res.status !== 303) throw new Error(`POST /login as ${username}: expected 303, got ${res.status}`);
    if (this.cookies.get('sb.sid') === before) throw new Error('POST /login did not give a new session cookie');
  }
}

interface SseEvent { type: string; taskId?: string; by?: string }

/**
 * GET /inbox/events, read as it comes: `onEvent` gets each `event: task` with the moment
 * (performance.now() and Date.now()) its chunk arrived.
 */
async function openEventStream(client: WebClient, base: string, signal: AbortSignal, onEvent: (e: SseEvent, at: number, wall: number) => void): Promise<{ closed: Promise<void>; error: () => Error | undefined }> {
  const res = await fetch(`${base}/inbox/events`, { headers: { accept: 'text/event-stream', cookie: client.cookieHeader }, redirect: 'manual', signal });
  if (res.status !== 200 || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream') || !res.body) {
    throw new Error(`GET /inbox/events: ${res.status} ${res.headers.get('content-type')} ${res.headers.get('location') ?? ''}`);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let failure: Error | undefined;
  const closed = (async () => {
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        if (!signal.aborted) failure = new Error('the server ended the event stream');
        return;
      }
      const at = performance.now();
      const wall = Date.now();
      buf += value;
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (event === 'task' && data.length > 0) onEvent(JSON.parse(data.join('\n')) as SseEvent, at, wall);
      }
    }
  })().catch((err: Error) => {
    if (!signal.aborted) failure = err;
  });
  return { closed, error: () => failure };
}

// ───────────────────────────── phases ─────────────────────────────

interface Sample {
  seq: number;
  taskId: string;
  warmup: boolean;
  /** performance.now() / Date.now() just before the start request was made. */
  sentAt: number;
  sentWall: number;
  acceptedAt?: number;
  status?: number;
  error?: string;
  arrivedAt?: number;
  arrivedWall?: number;
  /** performance.now() when the bench's own subscriber on the gateway's task-events channel heard 'created'. */
  publishedAt?: number;
  duplicates: number;
  /** Date.parse of the task's createdAt (the ask message's), from Redis. */
  askWall?: number;
  titleOk?: boolean;
}

interface SwitchboardResult {
  sent: number;
  accepted: number;
  received: number;
  lost: number;
  duplicates: number;
  unknownEvents: number;
  httpErrors: Record<string, number>;
  achievedRate: number;
  schedule: { maxLagMs: number; meanLagMs: number };
  startToSse: Stats;
  startToAccepted: Stats;
  startToAsk: Stats;
  askToSse: Stats;
  startToPublished: Stats;
  publishedToSse: Stats;
  warmup: { sent: number; received: number; startToSse: Stats };
  env: PhaseEnv;
  verifiedTitles: number;
}

/**
 * The crowd's one password hash, in the directory's scrypt format with the lowest cost it accepts
 * (N = 1,024 instead of 16,384): logging in 1,000 users is the setup, not what is measured, and at
 * full cost it would take the 2 cores for half a minute. Every crowd login still goes through the
 * real form and the real verification.
 */
async function cheapHash(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await new Promise<Buffer>((resolve, reject) => scrypt(password, salt, 32, { N: 1024, r: 8, p: 1 }, (err, k) => (err ? reject(err) : resolve(k))));
  return `scrypt$1024$8$1$${salt.toString('base64')}$${key.toString('base64')}`;
}

function gatewayConfig(redisUrl: string, flowsDir: string, hashes: { approver: string; starter: string; crowd: string }) {
  const crowd = Array.from({ length: STREAMS }, (_, i) => ({ name: crowdName(i), passwordHash: hashes.crowd, groups: [i < WATCHERS ? GROUP : CROWD_GROUP] }));
  const raw = {
    http: { port: 0, host: '127.0.0.1' },
    redis: { url: redisUrl, prefix: PREFIX },
    directory: {
      type: 'file',
      users: [
        { name: APPROVER.name, passwordHash: hashes.approver, groups: [GROUP] },
        { name: STARTER.name, passwordHash: hashes.starter, groups: ['bench-ops'] },
        ...crowd,
      ],
    },
    permissions: [
      { group: GROUP, allow: [{ address: `group:${GROUP}`, verbs: ['consume', 'browse'] }] },
      { group: 'bench-ops', allow: [{ address: `flow:${FLOW}`, verbs: ['start', 'browse'] }] },
      { group: CROWD_GROUP, allow: [{ address: `group:${CROWD_GROUP}`, verbs: ['consume', 'browse'] }] },
    ],
    flows: { dir: flowsDir, ...(CONCURRENCY !== undefined ? { concurrency: CONCURRENCY } : {}) },
    log: { level: 'warn' },
  };
  return parseConfig(stringify(raw), 'bench-config.yaml', {});
}

async function runSwitchboard(gateway: Gateway, admin: Redis, monitor: Redis, redisUrl: string, runTag: string, ac: AbortController, crowdPid?: number): Promise<SwitchboardResult> {
  const base = gateway.url;
  const web = new WebClient(base);
  await web.login(APPROVER.name, APPROVER.password);
  const basic = `Basic ${Buffer.from(`${STARTER.name}:${STARTER.password}`).toString('base64')}`;

  const byTask = new Map<string, Sample>();
  const early = new Map<string, { at: number; wall: number }>();
  const earlyPublished = new Map<string, number>();
  const samples: Sample[] = [];
  let unknownEvents = 0;
  let otherEvents = 0;
  const inflight = new Set<Promise<void>>();
  let stream: Awaited<ReturnType<typeof openEventStream>> | undefined;
  // A second listener on the gateway's own task-events channel: when the PUBLISH reached Redis
  // subscribers, to split the way into "until published" and "subscriber → SSE → client".
  let side: Redis | undefined;
  try {
    side = await openRedis(redisUrl);
    side.on('message', (_ch: string, raw: string) => {
      const at = performance.now();
      const e = JSON.parse(raw) as SseEvent;
      const s = e.type === 'created' && e.taskId ? byTask.get(e.taskId) : undefined;
      if (s && s.publishedAt === undefined) s.publishedAt = at;
      else if (!s && e.type === 'created' && e.taskId) earlyPublished.set(e.taskId, at);
    });
    await side.subscribe(`${PREFIX}:task-events`);
    stream = await openEventStream(web, base, ac.signal, (e, at, wall) => {
      if (e.type !== 'created') { otherEvents++; return; }
      const s = e.taskId ? byTask.get(e.taskId) : undefined;
      // Task ids are made by the inbox from the flow's random instance id: an event can arrive
      // before the start's 202 told us the instance; keep it until then.
      if (!s) { if (e.taskId) early.set(e.taskId, { at, wall }); else unknownEvents++; return; }
      if (s.arrivedAt !== undefined) { s.duplicates++; return; }
      s.arrivedAt = at;
      s.arrivedWall = wall;
    });
    const fire = (warmup: boolean) => (seq: number) => {
      const id = `lat-${runTag}-${seq}`;
      const s: Sample = { seq, taskId: '', warmup, sentAt: performance.now(), sentWall: Date.now(), duplicates: 0 };
      samples.push(s);
      const p = fetch(`${base}/api/flows/${FLOW}`, {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ id, input: { seq, sentAt: s.sentWall } }),
      }).then(async (res) => {
        s.acceptedAt = performance.now();
        s.status = res.status;
        const text = await res.text();
        if (res.status !== 202) s.error = `${res.status} ${text.slice(0, 200)}`;
        else {
          // The ask is step 0 of the instance; its task id is the inbox's digest of that message.
          const instanceId = (JSON.parse(text) as { instanceId: string }).instanceId;
          s.taskId = taskIdFor({ to: GROUP_ADDRESS, sender: { kind: 'flow', name: FLOW }, id: `${instanceId}:0` });
          byTask.set(s.taskId, s);
          const e = early.get(s.taskId);
          if (e) { s.arrivedAt = e.at; s.arrivedWall = e.wall; early.delete(s.taskId); }
          const pub = earlyPublished.get(s.taskId);
          if (pub !== undefined) { s.publishedAt = pub; earlyPublished.delete(s.taskId); }
        }
      }, (err: Error) => {
        s.error = err.message;
      });
      const tracked = p.finally(() => inflight.delete(tracked));
      inflight.add(tracked);
    };

    // Warm-up at the same rate (JIT, connections, the flow's first load), not counted.
    const warmN = Math.round(RATE * WARMUP_S);
    if (warmN > 0) {
      await steady(RATE, WARMUP_S, 0, fire(true), ac.signal);
      await until(() => samples.every((s) => s.arrivedAt !== undefined || s.error !== undefined), DRAIN_MS);
      await Promise.all(inflight);
    }
    const warm = samples.filter((s) => s.warmup);
    if (warm.length > 0 && !warm.some((s) => s.arrivedAt !== undefined)) {
      throw new Error(`no task of the warm-up arrived over SSE (${warm.filter((s) => s.status === 202).length} of ${warm.length} starts accepted${warm.find((s) => s.error) ? `; e.g. ${warm.find((s) => s.error)!.error}` : ''})`);
    }

    const meter = phaseMeter(admin, crowdPid);
    await meter.start();
    const sched = await steady(RATE, SECONDS, warmN, fire(false), ac.signal);
    const measured = samples.filter((s) => !s.warmup);
    await until(() => measured.every((s) => s.arrivedAt !== undefined || s.error !== undefined), DRAIN_MS);
    const env = await meter.stop();
    await Promise.all(inflight);
    const streamError = stream.error();
    if (streamError) throw new Error(`the SSE stream failed during the run: ${streamError.message}`);

    // Read every task back: the title names its sequence number; createdAt is when ctx.ask made it.
    const store = new TaskStore(monitor, PREFIX);
    let verifiedTitles = 0;
    for (let i = 0; i < samples.length; i += 100) {
      await Promise.all(samples.slice(i, i + 100).map(async (s) => {
        const t = await store.get(s.taskId);
        if (!t) return;
        s.askWall = Date.parse(t.createdAt);
        s.titleOk = t.title === `bench task #${s.seq} sent at ${s.sentWall}` && t.group === GROUP;
        if (s.titleOk) verifiedTitles++;
      }));
    }
    const badTitle = samples.find((s) => s.titleOk === false);
    if (badTitle) throw new Error(`task ${badTitle.taskId} of start #${badTitle.seq} has an unexpected title or group`);
    const arrivedWithoutTask = samples.find((s) => s.arrivedAt !== undefined && s.titleOk !== true);
    if (arrivedWithoutTask) throw new Error(`an SSE event for task ${arrivedWithoutTask.taskId} arrived, but the task is not in Redis`);
    if (otherEvents > 0) console.log(`note: ${otherEvents} SSE event(s) of other types (not counted)`);

    const arrived = measured.filter((s) => s.arrivedAt !== undefined);
    const httpErrors: Record<string, number> = {};
    for (const s of measured) if (s.error) httpErrors[s.error.slice(0, 80)] = (httpErrors[s.error.slice(0, 80)] ?? 0) + 1;
    const warmArrived = warm.filter((s) => s.arrivedAt !== undefined);
    return {
      sent: measured.length,
      accepted: measured.filter((s) => s.status === 202).length,
      received: arrived.length,
      lost: measured.length - arrived.length,
      duplicates: samples.reduce((n, s) => n + s.duplicates, 0),
      unknownEvents,
      httpErrors,
      achievedRate: Math.round((measured.length / sched.seconds) * 10) / 10,
      schedule: { maxLagMs: sched.maxLagMs, meanLagMs: sched.meanLagMs },
      startToSse: stats(arrived.map((s) => s.arrivedAt! - s.sentAt)),
      startToAccepted: stats(measured.filter((s) => s.acceptedAt !== undefined && s.status === 202).map((s) => s.acceptedAt! - s.sentAt)),
      startToAsk: stats(measured.filter((s) => s.askWall !== undefined).map((s) => s.askWall! - s.sentWall)),
      askToSse: stats(arrived.filter((s) => s.askWall !== undefined).map((s) => s.arrivedWall! - s.askWall!)),
      startToPublished: stats(measured.filter((s) => s.publishedAt !== undefined).map((s) => s.publishedAt! - s.sentAt)),
      publishedToSse: stats(arrived.filter((s) => s.publishedAt !== undefined).map((s) => s.arrivedAt! - s.publishedAt!)),
      warmup: { sent: warm.length, received: warmArrived.length, startToSse: stats(warmArrived.map((s) => s.arrivedAt! - s.sentAt)) },
      env,
      verifiedTitles,
    };
  } finally {
    ac.abort();
    await stream?.closed.catch(() => undefined);
    await Promise.allSettled([...inflight]);
    await side?.quit().catch(() => side?.disconnect());
  }
}

interface BaselineResult {
  sent: number;
  received: number;
  lost: number;
  achievedRate: number;
  schedule: { maxLagMs: number; meanLagMs: number };
  publishToMessage: Stats;
  payloadBytes: number;
  env: PhaseEnv;
}

/** PUBLISH on one connection, SUBSCRIBE on another, at the same steady rate, same Redis. */
async function runBaseline(redisUrl: string, admin: Redis): Promise<BaselineResult> {
  const pub = await openRedis(redisUrl);
  const sub = await openRedis(redisUrl);
  try {
    const sentAt = new Map<number, number>();
    const lat = new Map<number, number>();
    sub.on('message', (_ch: string, raw: string) => {
      const at = performance.now();
      const seq = (JSON.parse(raw) as { seq: number }).seq;
      const t = sentAt.get(seq);
      if (t !== undefined && !lat.has(seq)) lat.set(seq, at - t);
    });
    await sub.subscribe(CHANNEL);
    // The same shape and size as a task event on the gateway's channel.
    const payload = (seq: number) => JSON.stringify({ type: 'created', taskId: `baseline-${seq}`, group: GROUP, seq });
    const fire = (seq: number) => {
      sentAt.set(seq, performance.now());
      void pub.publish(CHANNEL, payload(seq));
    };
    const warmN = Math.round(RATE * Math.min(WARMUP_S, 1));
    if (warmN > 0) {
      await steady(RATE, warmN / RATE, 0, fire);
      await until(() => lat.size >= warmN, DRAIN_MS);
    }
    const meter = phaseMeter(admin);
    await meter.start();
    const sched = await steady(RATE, BASELINE_S, warmN, fire);
    const total = sched.sent;
    const measured = () => [...lat.keys()].filter((k) => k >= warmN).length;
    await until(() => measured() >= total, DRAIN_MS);
    const env = await meter.stop();
    const xs = [...lat.entries()].filter(([k]) => k >= warmN).map(([, v]) => v);
    return {
      sent: total, received: xs.length, lost: total - xs.length,
      achievedRate: Math.round((total / sched.seconds) * 10) / 10,
      schedule: { maxLagMs: sched.maxLagMs, meanLagMs: sched.meanLagMs },
      publishToMessage: stats(xs), payloadBytes: Buffer.byteLength(payload(0)), env,
    };
  } finally {
    await sub.quit().catch(() => sub.disconnect());
    await pub.quit().catch(() => pub.disconnect());
  }
}

// ───────────────────────────── main ─────────────────────────────

function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '-';
}

function row(label: string, sent: number | string, recv: number | string, s: Stats): string {
  return [label.padEnd(34), String(sent).padStart(6), String(recv).padStart(6), fmt(s.median).padStart(8), fmt(s.p95).padStart(8), fmt(s.p99).padStart(8), fmt(s.max).padStart(8), fmt(s.mean).padStart(8)].join(' ');
}

function envLine(label: string, e: PhaseEnv): string {
  return `${label}: event-loop delay p50 ${fmt(e.eventLoopDelayMs.p50)} / p99 ${fmt(e.eventLoopDelayMs.p99)} / max ${fmt(e.eventLoopDelayMs.max)} ms; CPU node ${e.nodeCpuPercent}%, redis ${e.redisCpuPercent}%${e.crowdCpuPercent ? `, crowd ${e.crowdCpuPercent}%` : ''}, other processes ${e.otherCpuPercent ?? '?'}% of ${cpus().length} cores; load ${e.loadAverage1m}`;
}

// ───────────────────────────── the crowd ─────────────────────────────

interface CrowdEnd { open: number; ended: number; endReason: string | null; events: number[] }
interface Crowd { child: ChildProcess; opened: number; loginSeconds: number; stop(expect: number): Promise<CrowdEnd> }

/**
 * Logs every crowd user in over the form (a few at a time) and hands their session cookies to a
 * child process that opens one inbox stream each. Every stream must be accepted: a refused one
 * (the per-user cap, a connection limit, a lost session) stops the run with the reasons.
 */
async function openCrowd(base: string, signal: AbortSignal): Promise<Crowd | undefined> {
  if (STREAMS === 0) return undefined;
  const t0 = performance.now();
  const cookies: string[] = new Array<string>(STREAMS);
  for (let i = 0; i < STREAMS; i += 20) {
    signal.throwIfAborted();
    await Promise.all(Array.from({ length: Math.min(20, STREAMS - i) }, async (_, j) => {
      const c = new WebClient(base);
      await c.login(crowdName(i + j), CROWD_PASSWORD);
      cookies[i + j] = c.cookieHeader;
    }));
  }
  const loginSeconds = round3((performance.now() - t0) / 1000);
  const child = fork(join(import.meta.dirname, 'support', 'inbox-crowd.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = <T>() => new Promise<T>((resolve, reject) => {
    const onMessage = (m: T) => { child.off('exit', onExit); resolve(m); };
    const onExit = (code: number | null) => { child.off('message', onMessage); reject(new Error(`the crowd process (pid ${child.pid}) exited with ${code} before answering`)); };
    child.once('message', onMessage);
    child.once('exit', onExit);
  });
  const answer = next<{ opened: number; refused: Record<string, number> }>();
  child.send({ base, cookies });
  const r = await answer;
  if (r.opened !== STREAMS) {
    child.kill();
    throw new Error(`${STREAMS - r.opened} of ${STREAMS} crowd inbox streams were refused (${JSON.stringify(r.refused)}): the run would not have ${STREAMS} open streams`);
  }
  return {
    child, opened: r.opened, loginSeconds,
    stop: (expect) => {
      const end = next<CrowdEnd>();
      child.send({ stop: true, watchers: WATCHERS, expect, waitMs: DRAIN_MS });
      return end;
    },
  };
}

/** Fails the run unless every crowd stream stayed open, every watcher got every task, and nobody else got one. */
function checkCrowd(end: CrowdEnd, expect: number): { watcherEventsMin: number; watcherEventsMax: number } {
  if (end.open !== STREAMS) throw new Error(`${STREAMS - end.open} of ${STREAMS} crowd inbox streams were not open at the end of the run (first reason: ${end.endReason ?? 'the server closed it'}): no latency is printed for a run without its open streams`);
  const watchers = end.events.slice(0, WATCHERS);
  const short = watchers.filter((n) => n < expect).length;
  if (short > 0) throw new Error(`${short} of ${WATCHERS} watcher streams got fewer than the ${expect} tasks the measured stream got (fewest: ${Math.min(...watchers)})`);
  const strangers = end.events.slice(WATCHERS).filter((n) => n > 0).length;
  if (strangers > 0) throw new Error(`${strangers} crowd streams of users outside group:${GROUP} got its task events`);
  return { watcherEventsMin: watchers.length ? Math.min(...watchers) : 0, watcherEventsMax: watchers.length ? Math.max(...watchers) : 0 };
}

let interrupted: NodeJS.Signals | undefined;

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-inbox-redis-'));
  const flowsDir = mkdtempSync(join(tmpdir(), 'sb-bench-inbox-flows-'));
  for (const [file, text] of Object.entries(FLOW_FILES)) writeFileSync(join(flowsDir, file), text);
  let redis: EmbeddedRedis | undefined;
  let admin: Redis | undefined;
  let monitor: Redis | undefined;
  let gateway: Gateway | undefined;
  let crowd: Crowd | undefined;
  let stopping: Promise<void> | undefined;
  // Ends the event stream and the start loop first, so the gateway need not wait for them.
  const abort = new AbortController();
  const cleanup = () => (stopping ??= (async () => {
    abort.abort();
    if (crowd && crowd.child.exitCode === null && crowd.child.signalCode === null) crowd.child.kill();
    await gateway?.stop().catch((err: Error) => console.error(`gateway stop: ${err.message}`));
    await admin?.quit().catch(() => admin?.disconnect());
    await monitor?.quit().catch(() => monitor?.disconnect());
    if (redis) {
      await redis.stop().catch(() => redis?.kill());
      console.log(`stopped redis-server pid ${redis.pid}`);
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(flowsDir, { recursive: true, force: true });
  })());
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    console.error(`\n${sig}: stopping servers`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    console.error(`bench failed: still running after ${TIMEOUT_MS / 1000} s (--timeout-s); stopping servers`);
    void cleanup().finally(() => process.exit(1));
  }, TIMEOUT_MS);
  watchdog.unref();

  const started = new Date();
  try {
    if (IGNORED_OPTIONS.length > 0) console.log(`note: ${IGNORED_OPTIONS.map((o) => `--${o}`).join(', ')} ignored by this benchmark (see --help)`);
    const [approverHash, starterHash, crowdHash] = await Promise.all([hashPassword(APPROVER.password), hashPassword(STARTER.password), cheapHash(CROWD_PASSWORD)]);
    redis = await startEmbeddedRedis(dir);
    admin = await openRedis(redis.url);
    monitor = await openRedis(redis.url);
    await admin.config('SET', 'auto-aof-rewrite-percentage', '0');
    const version = parseInfo(await admin.info('server')).redis_version;
    const config = gatewayConfig(redis.url, flowsDir, { approver: approverHash, starter: starterHash, crowd: crowdHash });

    console.log(`inbox latency: POST /api/flows/${FLOW} (ctx.ask to group:${GROUP}) → GET /inbox/events of a logged-in member, ${RATE} tasks/s for ${SECONDS} s (+${WARMUP_S} s warm-up); raw PUBLISH → SUBSCRIBE baseline ${BASELINE_S} s at the same rate`);
    console.log(`redis-server ${version} pid ${redis.pid} port ${redis.port} (AOF, appendfsync everysec), node ${process.version}, ${cpus().length} CPU(s), flows.concurrency ${config.flows.concurrency}\n`);

    gateway = await startGateway({ config, log: createLogger(config.log.level) });
    const runTag = started.getTime().toString(36);
    crowd = await openCrowd(gateway.url, abort.signal);
    if (crowd) console.log(`crowd: ${crowd.opened} other inbox streams open (one per user, logged in over the form in ${fmt(crowd.loginSeconds)} s; ${WATCHERS} of them in group:${GROUP}), pid ${crowd.child.pid}`);
    const sb = await runSwitchboard(gateway, admin, monitor, redis.url, runTag, abort, crowd?.child.pid);
    // Counted while the gateway still runs: a stream the server ended or refused fails the run here.
    const crowdEnd = crowd ? await crowd.stop(sb.received + sb.warmup.received) : undefined;
    const crowdCheck = crowdEnd ? checkCrowd(crowdEnd, sb.received + sb.warmup.received) : undefined;
    if (crowdEnd && crowdCheck) console.log(`crowd: ${crowdEnd.open} of ${STREAMS} streams still open at the end; the ${WATCHERS} watchers got ${crowdCheck.watcherEventsMin}–${crowdCheck.watcherEventsMax} task events each (the measured stream ${sb.received + sb.warmup.received}), the others none`);
    await gateway.stop();
    gateway = undefined;
    const raw = BASELINE_S > 0 ? await runBaseline(redis.url, admin) : undefined;

    console.log(['latency (ms)'.padEnd(34), 'sent'.padStart(6), 'recv'.padStart(6), 'median'.padStart(8), 'p95'.padStart(8), 'p99'.padStart(8), 'max'.padStart(8), 'mean'.padStart(8)].join(' '));
    console.log(row('start request → SSE task event', sb.sent, sb.received, sb.startToSse));
    console.log(row('  start request → 202 accepted', sb.sent, sb.accepted, sb.startToAccepted));
    console.log(row('  start request → ctx.ask (±1 ms)', sb.sent, sb.startToAsk.count, sb.startToAsk));
    console.log(row('  ctx.ask → SSE task event (±1 ms)', sb.askToSse.count, sb.received, sb.askToSse));
    console.log(row('  start request → PUBLISH heard', sb.sent, sb.startToPublished.count, sb.startToPublished));
    console.log(row('  PUBLISH heard → SSE task event', sb.publishedToSse.count, sb.received, sb.publishedToSse));
    if (raw) console.log(row('raw PUBLISH → SUBSCRIBE', raw.sent, raw.received, raw.publishToMessage));
    console.log(row('(warm-up, not counted)', sb.warmup.sent, sb.warmup.received, sb.warmup.startToSse));
    console.log('');
    console.log(`switchboard: ${sb.sent} starts at ${fmt(sb.achievedRate)}/s (schedule lag mean ${fmt(sb.schedule.meanLagMs)} / max ${fmt(sb.schedule.maxLagMs)} ms), ${sb.accepted} accepted (202), ${sb.received} received over SSE, ${sb.lost} lost, ${sb.duplicates} duplicate(s), ${sb.unknownEvents} unknown; ${sb.verifiedTitles} task titles checked in Redis`);
    if (Object.keys(sb.httpErrors).length > 0) console.log(`start errors: ${JSON.stringify(sb.httpErrors)}`);
    console.log(envLine('  switchboard phase', sb.env));
    if (raw) {
      console.log(`raw: ${raw.sent} PUBLISH at ${fmt(raw.achievedRate)}/s (${raw.payloadBytes}-byte JSON), ${raw.received} received, ${raw.lost} lost`);
      console.log(envLine('  raw phase', raw.env));
      console.log(`median start → SSE is ${fmt(sb.startToSse.median / raw.publishToMessage.median, 0)}× the raw pub/sub round trip (${fmt(sb.startToSse.median - raw.publishToMessage.median)} ms more); ctx.ask → SSE median ${fmt(sb.askToSse.median)} ms vs raw ${fmt(raw.publishToMessage.median, 2)} ms`);
    }
    const withStreams = `${STREAMS} other inbox stream(s) open (${WATCHERS} getting every task)`;
    console.log(`goal 4, ask → task on screen (ctx.ask → SSE, ±1 ms) with ${withStreams}: p50 ${fmt(sb.askToSse.median)} / p95 ${fmt(sb.askToSse.p95)} / p99 ${fmt(sb.askToSse.p99)} ms (goal p99 < 50)${raw ? `; raw PUBLISH → SUBSCRIBE floor p50 ${fmt(raw.publishToMessage.median, 2)} / p95 ${fmt(raw.publishToMessage.p95, 2)} / p99 ${fmt(raw.publishToMessage.p99, 2)} ms` : ''}`);
    const noisy = [sb.env, raw?.env].some((e) => e && (e.otherCpuPercent ?? 0) > QUIET_PERCENT);
    if (noisy) console.log(`WARNING: other processes took more than ${QUIET_PERCENT}% of the CPU during a phase: tail latencies (p99, max) are unreliable; rerun on a quiet machine`);
    if (sb.lost > 0) console.log(`WARNING: ${sb.lost} of ${sb.sent} tasks did not arrive over SSE within ${DRAIN_MS / 1000} s of the last start`);

    mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
    const file = join(import.meta.dirname, 'results', `inbox-latency-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({
      bench: 'inbox-latency',
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: {
        ratePerSecond: RATE, seconds: SECONDS, warmupSeconds: WARMUP_S, baselineSeconds: BASELINE_S, drainSeconds: DRAIN_MS / 1000, flowsConcurrency: config.flows.concurrency,
        otherStreams: STREAMS, watchers: WATCHERS,
        crowd: 'one inbox stream per bench user of the file directory, logged in over /login, held by a child process; the first --watchers users are in the group every task goes to, the rest in a group that gets none',
        start: `POST /api/flows/${FLOW} (HTTP Basic), fixed start id → known task id`,
        flow: `ctx.ask('group:${GROUP}', {title, data, actions: ['ok']}) as the first step`,
        client: 'logged in over /login (cookie + _csrf), GET /inbox/events read with fetch in the same process',
        split: 'ctx.ask = the task createdAt (ms resolution); PUBLISH heard = a bench subscriber on the gateway channel (same process)',
        raw: `PUBLISH/SUBSCRIBE on ${CHANNEL}, two ioredis connections, same process and Redis, gateway stopped`,
        percentiles: 'nearest rank; ms',
      },
      environment: { gatewayCode: measuredCode(), nodeFlags: gatewayFlagsInUse(), node: process.version, redis: version, appendfsync: 'everysec', cpus: cpus().length, cpuModel: cpus()[0]?.model, totalMemMB: Math.round(totalmem() / 1048576) },
      summary: {
        startToSseMs: sb.startToSse,
        askToSseMs: sb.askToSse,
        rawPubSubMs: raw?.publishToMessage ?? null,
        streams: crowdEnd && crowdCheck ? { other: STREAMS, openAtEnd: crowdEnd.open, watchers: WATCHERS, watcherEventsMin: crowdCheck.watcherEventsMin, expectedPerWatcher: sb.received + sb.warmup.received, loginSeconds: crowd?.loginSeconds ?? null } : { other: 0, openAtEnd: 0, watchers: 0 },
        loadAverage1m: sb.env.loadAverage1m,
        sent: sb.sent,
        received: sb.received,
        lost: sb.lost,
        medianRatioToRaw: raw ? round3(sb.startToSse.median / raw.publishToMessage.median) : null,
        otherCpuPercent: { switchboard: sb.env.otherCpuPercent, raw: raw?.env.otherCpuPercent ?? null },
      },
      switchboard: sb,
      raw: raw ?? null,
    }, null, 2)}\n`);
    console.log(`results: ${file}`);
    // Written first (what did arrive is still worth reading), then a failure: a latency of the tasks that arrived says nothing of those that did not.
    if (sb.lost > 0) throw new Error(`${sb.lost} of ${sb.sent} tasks did not arrive over SSE within ${DRAIN_MS / 1000} s of the last start: the latencies above leave them out`);
    return 0;
  } finally {
    clearTimeout(watchdog);
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
