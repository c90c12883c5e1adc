/**
 * MQ throughput: RabbitMQ queue → Switchboard route (dedup on) → RabbitMQ queue, beside a raw rhea
 * forwarder between two queues of the same RabbitMQ, in the same run (issue 6's benchmark).
 *
 *   node --import tsx bench/mq-throughput.ts                 # N = 20,000 messages per run
 *   node --import tsx bench/mq-throughput.ts --n 5000 --rounds 5 --body-bytes 1024
 *   BENCH_N=5000 node --import tsx bench/mq-throughput.ts
 *
 * Started here, stopped by PID at the end (on error and on Ctrl-C too): a private RabbitMQ 3.10
 * node with the AMQP 1.0 plugin (test/support/rabbitmq.ts) and a private redis-server (AOF,
 * fsync every second, as the gateway's own). Every phase uses fresh durable queues on RabbitMQ:
 *
 * - pre-fill: a rhea client puts N durable messages (JSON data sections of --body-bytes bytes,
 *   unique message_id, a couple of application properties) on queue A with settled sends;
 * - a counting consumer (rhea, its own connection, credit 1000, accepts everything) takes queue B
 *   and counts ids as they arrive;
 * - the mover starts, and the clock runs from the first id's arrival at B until the counter has
 *   seen all N distinct ids (N - 1 arrivals in that time): neither the gateway's start nor the
 *   forwarder's connect is timed. CPU and Redis counters are read at the first arrival too.
 *
 * The two movers, each moving at most --concurrency (50) messages at once (each may hold more,
 * unsettled, waiting for a free slot):
 * - sb:  a gateway (config through the real parser, broker `legacy`, addressFormat rabbitmq) whose
 *        config declares the route mq:legacy/A → mq:legacy/B (a route sends as its own principal,
 *        allowed to by its declaration: DESIGN §5), started once A is filled: credit-based
 *        consume, Message mapping both ways, the router's dedup (Redis EXISTS + SET per message
 *        id at the mq: ingress), a settled send to B, and the source accepted only after RabbitMQ
 *        accepted the copy on B. A message the route dead-letters (refused, failing) stops the
 *        run at once with the gateway's count of them: no ratio is printed for messages that did
 *        not arrive.
 * - raw: a rhea forwarder on one connection: a receiver on A with manual credit and a sender to
 *        B; each message is sent on to B as it came (same properties and body), and its delivery
 *        on A is accepted only once RabbitMQ accepted the copy (the same guarantee, no dedup).
 * Rounds alternate which side goes first; the medians are compared (target sb/raw ≥ 0.7, issue 16). Each
 * phase is verified before it counts: B got exactly the N ids (no duplicates, nothing unknown)
 * and nothing is left on A. Node, Redis and RabbitMQ CPU per message and the CPU other processes
 * took meanwhile (the machine is shared: noisy phases are flagged) are recorded too.
 *
 * Results go to bench/results/mq-throughput-<date-time>.json.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver, type Sender } from 'rhea';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { startGateway, type Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { startTestRabbit, type TestRabbit } from '../test/support/rabbitmq.ts';
import { fmt, intOption, machineBusySeconds, mb, median, parseInfo, processCpuSeconds, redisCpu, SHARED_OPTIONS, sleep, startProfile, measuredCode, gatewayFlagsInUse } from './support/measure.ts';

// ───────────────────────────── options ─────────────────────────────

const { values: args } = parseArgs({
  options: {
    ...SHARED_OPTIONS,
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (args.help) {
  console.log(`usage: node --import tsx bench/mq-throughput.ts [--n N] [--rounds R] [--concurrency C] [--warmup W] [--body-bytes B] [--timeout-s S]
  --n           messages per run (default 20000, or BENCH_N)
  --rounds      rounds of both sides, the order alternating (raw,sb | sb,raw | …);
                the median of each side is compared (default 3)
  --concurrency messages in flight per mover: route concurrency / forwarder credit (default 50)
  --warmup      messages of an untimed warm-up per side, 0 for none (default 2000)
  --body-bytes  size of each JSON body (default 1024)
  --timeout-s   give up when a moving phase makes no progress for this long (default 60)`);
  process.exit(0);
}


const N = intOption('n', args.n ?? process.env.BENCH_N, 20_000, 1);
const ROUNDS = intOption('rounds', args.rounds, 3, 1);
const CONCURRENCY = intOption('concurrency', args.concurrency, 50, 1);
const WARMUP = intOption('warmup', args.warmup, 2_000, 0);
const BODY_BYTES = intOption('body-bytes', args['body-bytes'], 1024, 100);
const STALL_MS = intOption('timeout-s', args['timeout-s'], 60, 1) * 1000;
const TARGET = 0.7; // issue 16, goal 4
const QUIET_PERCENT = 15;
const DEBUG = process.env.MQ_BENCH_DEBUG === '1';
const debug = (...a: unknown[]) => { if (DEBUG) console.error(new Date().toISOString(), ...a); };

// ───────────────────────────── helpers ─────────────────────────────



/** A JSON body of exactly BODY_BYTES bytes, unique per seq. */
function makeBody(id: string): Buffer {
  const b = { id, orderId: `ord-${id}`, customer: 'cust-0042', amount: 1234.56, currency: 'EUR', note: '' };
  b.note = 'x'.repeat(Math.max(0, BODY_BYTES - Buffer.byteLength(JSON.stringify(b))));
  return Buffer.from(JSON.stringify(b));
}



/**
 * The PID of the RabbitMQ node's Erlang VM (beam): the beam process that holds the socket
 * listening on the node's AMQP port (from /proc/net/tcp and the beam processes' fd links).
 */
function beamPid(port: number): number | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    try {
      for (const line of readFileSync(file, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A') inodes.add(f[9]!); // 0A = LISTEN
      }
    } catch { /* no IPv6 */ }
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('beam')) continue;
      for (const fd of readdirSync(`/proc/${entry}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) return Number(entry);
      }
    } catch { /* gone, or not ours to read */ }
  }
  return undefined;
}



async function redisCommands(admin: Redis): Promise<number> {
  const stats = parseInfo(await admin.info('commandstats'));
  let total = 0;
  for (const [k, v] of Object.entries(stats)) {
    const m = /calls=(\d+)/.exec(v);
    if (k.startsWith('cmdstat_') && m && !['cmdstat_info', 'cmdstat_ping'].includes(k)) total += Number(m[1]);
  }
  return total;
}

/**
 * The route's failed deliveries and dead letters so far, from the gateway's own /metrics (the
 * source is mq:, so both are counted under endpoint "mq").
 */
async function routeFailures(gateway: Gateway): Promise<{ failed: number; deadLettered: number }> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const value = (metric: string) => Number(new RegExp(`^${metric}\\{endpoint="mq"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { failed: value('switchboard_messages_failed_total'), deadLettered: value('switchboard_dead_lettered_total') };
}

// ───────────────────────────── rhea plumbing ─────────────────────────────

async function connect(port: number, id: string): Promise<Connection> {
  const container = rhea.create_container({ id: `${id}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port, username: 'guest', password: 'guest', reconnect: false, idle_time_out: 60_000 } as ConnectionOptions);
  // rhea re-raises unhandled link/session errors on the container: listen, and make them visible.
  const fail = (what: string) => (ctx: EventContext) => console.error(`${id}: ${what}: ${JSON.stringify((ctx.sender ?? ctx.receiver ?? ctx.session ?? ctx.connection)?.error ?? '')}`);
  c.on('error', (err: unknown) => console.error(`${id}: ${String(err)}`));
  c.on('connection_error', fail('connection error'));
  c.on('session_error', fail('session error'));
  c.on('sender_error', fail('sender error'));
  c.on('receiver_error', fail('receiver error'));
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('disconnected', (ctx: EventContext) => reject(new Error(`${id}: cannot connect to RabbitMQ: ${(ctx as { error?: Error }).error?.message ?? 'disconnected'}`)));
  });
  return c;
}

function close(c: Connection | undefined): Promise<void> {
  if (!c) return Promise.resolve();
  return new Promise((r) => {
    const t = setTimeout(r, 3000);
    c.once('connection_close', () => { clearTimeout(t); r(); });
    c.once('disconnected', () => { clearTimeout(t); r(); });
    try { c.close(); } catch { clearTimeout(t); r(); }
  });
}

const queueAddress = (q: string) => `/queue/${q}`;

/** Puts the messages on `queue` (durable) with settled sends; resolves when all were accepted. */
async function prefill(c: Connection, queue: string, ids: string[]): Promise<void> {
  const s: Sender = c.open_sender({ target: { address: queueAddress(queue), durable: 2 }, autosettle: true });
  await new Promise<void>((resolve, reject) => {
    let next = 0;
    let accepted = 0;
    s.on('sendable', () => {
      while (next < ids.length && s.sendable()) {
        const id = ids[next++]!;
        s.send({ message_id: id, durable: true, content_type: 'application/json', application_properties: { 'x-bench': 'mq', 'x-seq': next }, body: rhea.message.data_section(makeBody(id)) } as never);
      }
    });
    s.on('accepted', () => { if (++accepted === ids.length) resolve(); });
    s.on('rejected', () => reject(new Error('RabbitMQ rejected a pre-fill message')));
    s.on('released', () => reject(new Error('RabbitMQ released a pre-fill message')));
    if (ids.length === 0) resolve();
  });
  s.close();
}

/** Counts the ids arriving on `queue` (accepting each); `distinct` grows as they come. */
async function counter(c: Connection, queue: string, expected: Set<string>, onFirst: () => void) {
  const seen = new Set<string>();
  let duplicates = 0;
  let unknown = 0;
  let last = performance.now();
  let first: number | undefined;
  const r: Receiver = c.open_receiver({ source: { address: queueAddress(queue), durable: 2 }, autoaccept: true, credit_window: 1000 });
  await new Promise<void>((resolve) => r.once('receiver_open', () => resolve()));
  r.on('message', (ctx: EventContext) => {
    const id = String(ctx.message?.message_id);
    if (!expected.has(id)) unknown++;
    else if (seen.has(id)) duplicates++;
    else seen.add(id);
    last = performance.now();
    if (first === undefined) {
      first = last;
      onFirst();
    }
  });
  return {
    get distinct() { return seen.size; },
    get duplicates() { return duplicates; },
    get unknown() { return unknown; },
    get lastArrival() { return last; },
    get firstArrival() { return first; },
    close: () => r.close(),
  };
}

/** Takes whatever is left on `queue` for `ms` (accepting it) and returns how many. */
async function leftover(c: Connection, queue: string, ms = 1000): Promise<number> {
  let n = 0;
  const r: Receiver = c.open_receiver({ source: { address: queueAddress(queue), durable: 2 }, autoaccept: true, credit_window: 500 });
  r.on('message', () => { n++; });
  await sleep(ms);
  r.close();
  return n;
}

/**
 * The raw forwarder: receiver on A with manual credit, sender to B; a message on A is accepted
 * only after RabbitMQ accepted its copy on B, and at most `concurrency` are being forwarded at
 * once. RabbitMQ 3.x's AMQP 1.0 plugin reads each flow frame as the credit from now on, ignoring
 * transfers already on their way, so this forwarder's grant per finished message lets it send past
 * the credit: measured up to 95 messages in hand at --concurrency 50. Those wait in hand,
 * unsettled, for a free slot (as the route holds its own), so the forwarder does not move twice
 * the messages at once that the route may.
 */
async function startForwarder(port: number, from: string, to: string, concurrency: number): Promise<{ stop(): Promise<void> }> {
  const c = await connect(port, 'raw-forwarder');
  const sender: Sender = c.open_sender({ target: { address: queueAddress(to), durable: 2 }, autosettle: true });
  await new Promise<void>((r) => sender.once('sendable', () => r()));
  const receiver: Receiver = c.open_receiver({ source: { address: queueAddress(from), durable: 2 }, autoaccept: false, credit_window: 0 });
  const waiting = new Map<Delivery, Delivery>(); // onward delivery → source delivery
  const backlog: { message: Record<string, unknown>; source: Delivery }[] = [];
  let inHand = 0;
  const topUp = () => {
    const want = concurrency - inHand - (receiver as unknown as { credit: number }).credit;
    if (want > 0) receiver.add_credit(want);
  };
  const pump = () => {
    while (backlog.length > 0 && waiting.size < concurrency && sender.sendable()) {
      const { message, source } = backlog.shift()!;
      waiting.set(sender.send(message as never), source);
    }
  };
  receiver.on('receiver_open', topUp);
  receiver.on('message', (ctx: EventContext) => {
    const m = ctx.message as unknown as Record<string, unknown>;
    inHand++;
    backlog.push({
      message: { message_id: m.message_id, durable: true, content_type: m.content_type, application_properties: m.application_properties, body: m.body },
      source: ctx.delivery as Delivery,
    });
    pump();
  });
  sender.on('sendable', pump);
  sender.on('accepted', (ctx: EventContext) => {
    const source = waiting.get(ctx.delivery as Delivery);
    if (!source) return;
    waiting.delete(ctx.delivery as Delivery);
    source.accept();
    inHand--;
    topUp();
    pump();
  });
  const refused = (ctx: EventContext) => {
    // Not expected here; hand the source message back so it is not lost.
    const source = waiting.get(ctx.delivery as Delivery);
    if (!source) return;
    waiting.delete(ctx.delivery as Delivery);
    source.release();
    inHand--;
    topUp();
    pump();
  };
  sender.on('rejected', refused);
  sender.on('released', refused);
  return {
    async stop() {
      // The counter may see a copy on B before RabbitMQ's accept of it reached us: wait until every
      // source delivery in hand is accepted, or it would go back to A when the link closes.
      for (let t = 0; inHand > 0 && t < 100; t++) await sleep(50);
      receiver.close();
      await close(c);
    },
  };
}

// ───────────────────────────── phases ─────────────────────────────

interface PhaseResult {
  name: 'raw' | 'sb';
  round: number;
  warmup: boolean;
  messages: number;
  prefillPerSecond: number;
  seconds: number;
  perSecond: number;
  firstHalfPerSecond: number;
  secondHalfPerSecond: number;
  nodeCpuMicrosPerMessage: number;
  rabbitCpuMicrosPerMessage: number | null;
  redisCpuMicrosPerMessage: number;
  redisCommandsPerMessage: number;
  /** CPU used by other processes during the phase, in % of all cores (noise). */
  otherCpuPercent: number | null;
  loadAverage1mBefore: number;
  rssMB: number;
  duplicatesAtDestination: number;
  leftInSource: number;
  verified: boolean;
}

interface Ctx {
  rabbit: TestRabbit;
  beam: number | undefined;
  redis: EmbeddedRedis;
  admin: Redis;
  client: Connection;
}

async function runPhase(ctx: Ctx, name: 'raw' | 'sb', round: number, n: number, warmup: boolean): Promise<PhaseResult> {
  const tag = `r${round}${warmup ? 'w' : ''}.${name}`;
  const from = `bench.${tag}.a`;
  const to = `bench.${tag}.b`;
  const ids = Array.from({ length: n }, (_, i) => `${tag}-${String(i).padStart(7, '0')}`);
  const expected = new Set(ids);
  let gateway: Gateway | undefined;
  let forwarder: { stop(): Promise<void> } | undefined;
  const countConn = await connect(ctx.rabbit.port, 'bench-counter');
  try {
    // Counters as they were at the first arrival at B: the clock starts there (see the header).
    let at0: { cpu: NodeJS.CpuUsage; busy: number | undefined; beam: number | undefined; redis: Promise<[number, number]> } | undefined;
    const onFirst = () => {
      at0 = { cpu: process.cpuUsage(), busy: machineBusySeconds(), beam: ctx.beam ? processCpuSeconds(ctx.beam) : undefined, redis: Promise.all([redisCpu(ctx.admin), redisCommands(ctx.admin)]) };
    };
    // The counter's receiver declares B (durable); the pre-fill's sender declares A.
    debug(tag, 'counter on', to);
    const count = await counter(countConn, to, expected, onFirst);
    debug(tag, 'prefill', from);
    const p0 = performance.now();
    await prefill(ctx.client, from, ids);
    const prefillPerSecond = n / ((performance.now() - p0) / 1000);
    debug(tag, 'prefilled');
    await sleep(300);
    const load = Math.round(loadavg()[0]! * 100) / 100;

    debug(tag, 'start mover');
    const tStart = performance.now();
    if (name === 'sb') {
      const raw = {
        http: { port: 0, host: '127.0.0.1' },
        redis: { url: ctx.redis.url, prefix: `mqb${round}${warmup ? 'w' : ''}` },
        brokers: { legacy: { url: ctx.rabbit.url, addressFormat: 'rabbitmq', sendTimeout: '30s' } },
        routes: [{ from: `mq:legacy/${from}`, to: `mq:legacy/${to}`, concurrency: CONCURRENCY }],
        flows: { dir: join(tmpdir(), 'sb-bench-no-flows') },
        log: { level: 'warn' },
      };
      const config = parseConfig(stringify(raw), 'bench-config.yaml', {});
      gateway = await startGateway({ config, log: createLogger(config.log.level) });
    } else {
      forwarder = await startForwarder(ctx.rabbit.port, from, to, CONCURRENCY);
    }
    const stopProfile = await startProfile(tag);
    let half = 0;
    let lastLook = performance.now();
    for (;;) {
      const now = performance.now();
      if (!half && count.distinct >= n / 2) half = now;
      if (count.distinct >= n) break;
      if (gateway && now - lastLook >= 500) {
        lastLook = now;
        const failed = await routeFailures(gateway);
        if (failed.deadLettered > 0) throw new Error(`${name} ${tag}: the route dead-lettered ${failed.deadLettered} message(s) (${failed.failed} failed deliveries) with ${count.distinct} of ${n} at the destination; the gateway's warnings above say why`);
      }
      if (now - Math.max(tStart, count.lastArrival) > STALL_MS) {
        const health = gateway ? JSON.stringify((await gateway.router.health()).mq) : '';
        const failed = gateway ? await routeFailures(gateway) : undefined;
        throw new Error(`${name} ${tag}: no progress for ${STALL_MS / 1000} s with ${count.distinct} of ${n} at the destination${health ? `; broker: ${health}` : ''}${failed ? `; ${failed.failed} failed deliveries in the route` : ''}`);
      }
      await sleep(5);
    }
    const t1 = performance.now();
    await stopProfile();
    debug(tag, 'moved');
    const cpu = process.cpuUsage(at0!.cpu);
    const busy1 = machineBusySeconds();
    const beam1 = ctx.beam ? processCpuSeconds(ctx.beam) : undefined;
    const [redis0, cmds0] = await at0!.redis;
    const redis1 = await redisCpu(ctx.admin);
    const cmds1 = await redisCommands(ctx.admin);
    const t0 = count.firstArrival!;
    const seconds = (t1 - t0) / 1000;
    const busy0 = at0!.busy;
    const beam0 = at0!.beam;
    const moved = Math.max(1, n - 1); // arrivals after the first, the one that started the clock

    // Verify: exactly the N ids at B, nothing late, nothing left on A.
    if (gateway) { await gateway.stop(); gateway = undefined; }
    else { await forwarder!.stop(); forwarder = undefined; }
    await sleep(500);
    count.close();
    debug(tag, 'leftover');
    const leftInSource = await leftover(ctx.client, from);
    debug(tag, 'verified');
    const problems: string[] = [];
    if (count.distinct !== n) problems.push(`${count.distinct} of ${n} distinct ids at the destination`);
    if (count.duplicates > 0) problems.push(`${count.duplicates} duplicate(s) at the destination`);
    if (count.unknown > 0) problems.push(`${count.unknown} unknown message(s) at the destination`);
    if (leftInSource > 0) problems.push(`${leftInSource} message(s) left on the source queue`);
    if (problems.length) throw new Error(`${name} ${tag}: verification failed: ${problems.join('; ')}`);

    const nodeCpu = (cpu.user + cpu.system) / 1e6;
    const rabbitCpu = beam0 !== undefined && beam1 !== undefined ? beam1 - beam0 : undefined;
    const ownCpu = nodeCpu + (redis1 - redis0) + (rabbitCpu ?? 0);
    return {
      name, round, warmup, messages: n, prefillPerSecond,
      seconds,
      perSecond: moved / seconds,
      firstHalfPerSecond: (n / 2 - 1) / Math.max(0.001, (half - t0) / 1000),
      secondHalfPerSecond: n / 2 / Math.max(0.001, (t1 - half) / 1000),
      nodeCpuMicrosPerMessage: (nodeCpu * 1e6) / moved,
      rabbitCpuMicrosPerMessage: rabbitCpu === undefined ? null : (rabbitCpu * 1e6) / moved,
      redisCpuMicrosPerMessage: ((redis1 - redis0) * 1e6) / moved,
      redisCommandsPerMessage: (cmds1 - cmds0) / moved,
      otherCpuPercent: busy0 === undefined || busy1 === undefined || rabbitCpu === undefined ? null : Math.max(0, Math.round(((busy1 - busy0 - ownCpu) / (seconds * cpus().length)) * 100)),
      loadAverage1mBefore: load,
      rssMB: mb(process.memoryUsage().rss),
      duplicatesAtDestination: count.duplicates,
      leftInSource,
      verified: true,
    };
  } finally {
    await forwarder?.stop().catch(() => undefined);
    await gateway?.stop().catch(() => undefined);
    await close(countConn);
  }
}

function printRow(r: PhaseResult): void {
  const name = `${r.name}${r.warmup ? ' (warm-up)' : ` #${r.round}`}`;
  console.log([
    name.padEnd(15),
    fmt(r.messages).padStart(8),
    fmt(r.seconds, 2).padStart(8),
    fmt(r.perSecond).padStart(8),
    `${fmt(r.firstHalfPerSecond)}/${fmt(r.secondHalfPerSecond)}`.padStart(14),
    fmt(r.prefillPerSecond).padStart(8),
    fmt(r.nodeCpuMicrosPerMessage).padStart(8),
    (r.rabbitCpuMicrosPerMessage === null ? '?' : fmt(r.rabbitCpuMicrosPerMessage)).padStart(8),
    fmt(r.redisCpuMicrosPerMessage).padStart(8),
    fmt(r.redisCommandsPerMessage, 1).padStart(6),
    fmt(r.rssMB).padStart(6),
    (r.otherCpuPercent === null ? '?' : `${r.otherCpuPercent}%`).padStart(6),
  ].join(' '));
}

// ───────────────────────────── main ─────────────────────────────

let interrupted: NodeJS.Signals | undefined;

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-bench-mq-redis-'));
  let rabbit: TestRabbit | undefined;
  let redis: EmbeddedRedis | undefined;
  let admin: Redis | undefined;
  let client: Connection | undefined;
  let stopping = false;
  const cleanup = async () => {
    if (stopping) return;
    stopping = true;
    await close(client);
    await admin?.quit().catch(() => admin?.disconnect());
    if (redis) { await redis.stop().catch(() => redis?.kill()); console.log(`stopped redis-server pid ${redis.pid}`); }
    if (rabbit) { await rabbit.dispose().catch(() => undefined); console.log('stopped RabbitMQ'); }
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
    [rabbit, redis] = await Promise.all([startTestRabbit(), startEmbeddedRedis(dir)]);
    admin = await openRedis(redis.url);
    await admin.config('SET', 'auto-aof-rewrite-percentage', '0'); // no fork in the middle of a phase
    client = await connect(rabbit.port, 'bench-client');
    const beam = beamPid(rabbit.port);
    const redisVersion = parseInfo(await admin.info('server')).redis_version;
    const ctx: Ctx = { rabbit, beam, redis, admin, client };

    console.log(`mq throughput: ${fmt(N)} messages of ${BODY_BYTES}-byte JSON bodies, RabbitMQ queue → RabbitMQ queue, ${CONCURRENCY} in flight, ${ROUNDS} round(s), order alternating`);
    console.log(`RabbitMQ (AMQP 1.0 plugin) on port ${rabbit.port}${beam ? ` (beam pid ${beam})` : ''}, redis-server ${redisVersion} pid ${redis.pid} (AOF everysec), node ${process.version}, ${cpus().length} CPU(s)\n`);
    console.log(['phase'.padEnd(15), 'messages'.padStart(8), 'seconds'.padStart(8), 'msg/s'.padStart(8), '1st/2nd half'.padStart(14), 'fill/s'.padStart(8), 'node µs'.padStart(8), 'rmq µs'.padStart(8), 'redis µs'.padStart(8), 'r.cmds'.padStart(6), 'rss MB'.padStart(6), 'other'.padStart(6)].join(' '));
    console.log(`${' '.repeat(66)}(per message: CPU µs of Node, RabbitMQ, Redis; Redis commands)`);

    const results: PhaseResult[] = [];
    if (WARMUP > 0) {
      for (const name of ['raw', 'sb'] as const) { const r = await runPhase(ctx, name, 0, Math.min(WARMUP, N), true); printRow(r); results.push(r); }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const name of round % 2 ? (['raw', 'sb'] as const) : (['sb', 'raw'] as const)) {
        const r = await runPhase(ctx, name, round, N, false);
        printRow(r);
        results.push(r);
      }
    }

    const timed = results.filter((r) => !r.warmup);
    const rate = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.perSecond));
    const raw = rate('raw');
    const sb = rate('sb');
    const ratio = sb / raw;
    const pass = ratio >= TARGET;
    console.log('');
    console.log(`raw rhea forwarder   ${fmt(raw).padStart(8)} msg/s   (median of ${ROUNDS})`);
    console.log(`switchboard route    ${fmt(sb).padStart(8)} msg/s`);
    console.log(`\nratio switchboard/raw = ${ratio.toFixed(2)}   target ≥ ${TARGET}   ${pass ? 'PASS' : 'BELOW TARGET'}`);
    const cpuPer = (name: 'raw' | 'sb') => median(timed.filter((r) => r.name === name).map((r) => r.nodeCpuMicrosPerMessage + (r.rabbitCpuMicrosPerMessage ?? 0) + r.redisCpuMicrosPerMessage));
    const cpuRatio = cpuPer('raw') / cpuPer('sb');
    console.log(`CPU per message (Node + RabbitMQ + Redis, median): raw ${fmt(cpuPer('raw'))} µs, sb ${fmt(cpuPer('sb'))} µs → CPU-cost ratio raw/sb = ${cpuRatio.toFixed(2)} (noise-robust estimate)`);
    const otherCpu = median(timed.map((r) => r.otherCpuPercent ?? 0));
    const quiet = (name: 'raw' | 'sb') => timed.filter((r) => r.name === name && r.otherCpuPercent !== null && r.otherCpuPercent <= QUIET_PERCENT).map((r) => r.perSecond);
    const quietRatio = quiet('raw').length && quiet('sb').length ? median(quiet('sb')) / median(quiet('raw')) : null;
    if (quietRatio !== null) console.log(`quiet runs only (other CPU ≤ ${QUIET_PERCENT}%): ratio ${quietRatio.toFixed(2)} (${quiet('raw').length} raw, ${quiet('sb').length} sb run(s))`);
    if (otherCpu > 20) console.log(`WARNING: other processes used a median ${otherCpu}% of the CPU during the timed phases: the rates above are unreliable; rerun on a quiet machine or with more --rounds`);

    mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
    const file = join(import.meta.dirname, 'results', `mq-throughput-${started.toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({
      bench: 'mq-throughput',
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      settings: { messages: N, rounds: ROUNDS, concurrency: CONCURRENCY, warmup: WARMUP, bodyBytes: BODY_BYTES, path: 'RabbitMQ /queue/A → mover → RabbitMQ /queue/B (durable queues, durable messages)', sb: 'Route mq:legacy/A → mq:legacy/B, dedup on', raw: 'rhea forwarder, accept after the onward send was accepted' },
      environment: { gatewayCode: measuredCode(), nodeFlags: gatewayFlagsInUse(), node: process.version, redis: redisVersion, appendfsync: 'everysec', cpus: cpus().length, cpuModel: cpus()[0]?.model, totalMemMB: mb(totalmem()) },
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
    if (interrupted) return;
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
