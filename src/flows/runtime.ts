import { createHash, createHmac } from 'node:crypto';
import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Conflict, NotFound, ValidationError } from '../core/errors.ts';
import { encodeMessage, principalId, type Message } from '../core/message.ts';
import { randomBase64url } from '../core/random-text.ts';
import type { EventJournal, LifecycleEvent } from '../core/lifecycle.ts';
import type { Router } from '../core/router.ts';
import { readTraceContext, withTraceContext } from '../tracing/trace-context.ts';
import { NO_TRACING, type SpanOptions, type Tracing } from '../tracing/tracing.ts';
import { ReplayContext, answers, traceOf } from './context.ts';
import type { FlowDefinition } from './define.ts';
import { EagerStarts } from './eager-starts.ts';
import { ReplyRefused, Suspend } from './errors.ts';
import { FlowKeys, RUN_QUEUE_STREAMS, UNSHARDED_RUN_QUEUE, runQueues, runShard } from './keys.ts';
import { DeliverCode, InstanceStore, type FlowStatus, type InstanceMeta, type JournalEntry } from './store.ts';

type Settled = { result: unknown; thrown?: undefined } | { result?: undefined; thrown: unknown };

/** A flow function running in this process: its context, its end, and the run that last ran it. */
interface Execution {
  ctx: ReplayContext;
  done: Promise<Settled>;
  /** Token of the run that last ran it (the instance's `run` mark when nobody ran it since). */
  token: string;
}

export interface FlowRuntimeOptions {
  redis: Redis;
  prefix: string;
  router: Router;
  flows: Map<string, FlowDefinition>;
  /** Instances replayed at once by this process (spread over the shards' workers: ceil(c/N) each). */
  concurrency: number;
  /**
   * Run queues (redis.shards as it applies): 1 keeps the one queue `{flow-runs}`; N > 1 runs an
   * instance in the queue of its shard, `{flow-runs.<i>.<n>}` (see keys.ts).
   * @defaultValue 1
   */
  shards?: number;
  /** Lock on an instance while a process replays it; expires if that process dies. */
  lockMs: number;
  /** How often a crashed run is looked for (BullMQ stalled check). */
  stalledCheckMs: number;
  /** How long a completed, failed or cancelled instance stays visible. */
  retentionMs: number;
  /**
   * Waiting instances this process keeps in memory (Temporal's sticky cache): a wake of one of
   * them continues the parked flow function instead of replaying its journal from the first step,
   * so waking costs the same at step 10 or 1,000. 0 turns it off (every wake replays).
   * @defaultValue 1000
   */
  stickyInstances?: number;
  /**
   * Run a new instance in the process that received its start, without a run job (see
   * eager-starts.ts); false sends every start through the run queue, to be run by whichever
   * process takes it.
   * @defaultValue true
   */
  eagerStart?: boolean;
  /** Told of every instance that ends (completed, failed, cancelled): the outcome counters of /metrics. */
  onOutcome?: (flow: string, status: FlowStatus) => void;
  /**
   * Spans of instances and their steps (see `openTracing`).
   * @defaultValue NO_TRACING
   */
  tracing?: Tracing;
  /**
   * Where starts, waits and ends record their lifecycle events, in the same script as the change
   * (none: events off, no extra work).
   * @defaultValue undefined
   */
  events?: EventJournal;
  log: Logger;
}

/** A search of instances (the console): every field optional but `limit`. */
export interface FlowSearch {
  flow?: string;
  status?: FlowStatus;
  /** `user:alice`, as the instance records its starter. */
  startedBy?: string;
  /** Created at or after / at or before (epoch ms). */
  from?: number;
  to?: number;
  /** A business key set by `ctx.tag`. */
  tag?: { name: string; value: string };
  limit: number;
  /** Whether the asker may see this row (checked before it counts towards `limit`). */
  visible?: (row: FlowRow) => boolean;
}

export interface FlowRow {
  instanceId: string;
  flow: string;
  status: FlowStatus;
  startedBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface FlowView {
  instanceId: string;
  flow: string;
  status: FlowStatus;
  waitingOn?: InstanceMeta['waitingOn'];
  input: unknown;
  result?: unknown;
  error?: InstanceMeta['error'];
  startedBy: string;
  createdAt: string;
  updatedAt: string;
  cancelledBy?: string;
  /** Business keys set by `ctx.tag`. */
  tags: Record<string, string>;
  steps: { n: number; kind: string; target?: string; at: string; done: boolean; error?: string }[];
}

const FINISHED: FlowStatus[] = ['completed', 'failed', 'cancelled'];

/**
 * Started instances one process holds for an eager run beyond its `concurrency` (ids only, a few
 * hundred KB at most); a start beyond it goes to the run queue, where any process may take it.
 */
const EAGER_BACKLOG = 5000;

/**
 * Runs flow instances by journal replay. A run is a BullMQ job "run instance X" on the internal
 * queue of the instance's shard (the one queue `{flow-runs}` with one shard): starting, a message
 * arriving, a timer firing all add such a job; the job takes the instance's lock, runs the flow
 * to where it must wait, and ends. A process keeps up to `stickyInstances` waiting flows
 * suspended in memory and continues them on their next run here; anything else — a crash, a run
 * on another process, an eviction — replays from the journal, and a run lost with its process is
 * retried once its lock expires.
 */
export class FlowRuntime {
  readonly store: InstanceStore;
  /** The store's connection (a duplicate of the one given, closed with the runtime). */
  private readonly storeRedis: Redis;
  /** Parked flow functions by instance id, least recently parked first. */
  private readonly sticky = new Map<string, Execution>();
  /** Locks of the runs in progress here, refreshed together (holdLock). */
  private readonly heldLocks = new Set<HeldLock>();
  private lockRefresher?: NodeJS.Timeout;
  private readonly stickyLimit: number;
  /** Runs that continued a parked flow, replayed one, and parked flows dropped (for benchmarks and metrics). */
  readonly stats = { continued: 0, replayed: 0, evicted: 0 };
  private readonly shards: number;
  /** The run queues' names, shard i at index i. */
  readonly queueNames: readonly string[];
  private readonly queues: Queue<{ id: string }>[];
  private workers: Worker<{ id: string }>[] = [];
  /** The look at the unsharded queue `{flow-runs}` for runs left from before the sharding. */
  private leftovers?: Promise<void>;
  private closing = false;
  /** The secret key instance ids are derived under, read once (see `instanceId`). */
  private idKey?: Promise<{ key: Buffer; legacyUntil: number }>;
  private readonly tracing: Tracing;
  /** New instances run here, without a run job (none: `eagerStart` off). */
  readonly eager?: EagerStarts;

  constructor(private readonly o: FlowRuntimeOptions) {
    this.tracing = o.tracing ?? NO_TRACING;
    // The instances' reads and writes on a connection of their own, beside the one their sends
    // take: Redis answers one while the process works through the other's replies, where one
    // connection made the two wait for each other in turn (0.62 → 0.75× raw on the flow bench).
    this.storeRedis = o.redis.duplicate();
    this.storeRedis.on('error', () => {}); // reconnects are reported by the health checks
    this.store = new InstanceStore(this.storeRedis, o.prefix, o.events);
    if (o.eagerStart ?? true) {
      this.eager = new EagerStarts({
        redis: this.storeRedis, keys: new FlowKeys(o.prefix), wake: (id) => this.wake(id),
        concurrency: Math.max(1, o.concurrency),
        backlog: EAGER_BACKLOG,
        leaseMs: o.lockMs,
        sweepMs: o.stalledCheckMs,
        log: o.log,
      });
    }
    this.stickyLimit = Math.max(0, o.stickyInstances ?? 1000);
    this.shards = Math.max(1, o.shards ?? 1);
    this.queueNames = runQueues(this.shards);
    this.queues = this.queueNames.map((name) => {
      const q = new Queue<{ id: string }>(name, { connection: o.redis, prefix: o.prefix, streams: RUN_QUEUE_STREAMS });
      q.on('error', (err) => o.log.error({ err: err.message, queue: name }, 'flow run queue error'));
      return q;
    });
  }

  /** The name of the queue that runs an instance (its runs, timers and stalled checks). */
  queueOf(id: string): string {
    return this.queueNames[runShard(id, this.shards)]!;
  }

  get definitions(): Map<string, FlowDefinition> {
    return this.o.flows;
  }

  /**
   * One worker per run queue, `concurrency` spread over them. With several shards, runs added to
   * `{flow-runs}` before the sharding (waiting, delayed timers, active in a process that died) are
   * still run: a worker on that queue too, if it holds any job when this process starts.
   */
  async start(): Promise<void> {
    await this.eager?.start();
    this.workers = this.queueNames.map((name) => this.worker(name));
    if (this.shards > 1) {
      this.leftovers = this.startLeftoverWorker().catch((err: Error) => this.o.log.error({ err: err.message, queue: UNSHARDED_RUN_QUEUE }, 'could not look at the unsharded flow run queue'));
    }
  }

  private worker(name: string): Worker<{ id: string }> {
    const w = new Worker<{ id: string }>(name, (job, token) => this.process(job, token), {
      connection: this.o.redis,
      prefix: this.o.prefix,
      concurrency: Math.max(1, Math.ceil(this.o.concurrency / this.queueNames.length)),
      lockDuration: this.o.lockMs,
      stalledInterval: this.o.stalledCheckMs,
      // A run lost in a crash is simply run again: replay makes that safe, however often.
      maxStalledCount: 1000,
    });
    w.on('error', (err) => this.o.log.error({ err: err.message, queue: name }, 'flow worker error'));
    return w;
  }

  private async startLeftoverWorker(): Promise<void> {
    const old = new Queue<{ id: string }>(UNSHARDED_RUN_QUEUE, { connection: this.o.redis, prefix: this.o.prefix, streams: RUN_QUEUE_STREAMS });
    old.on('error', (err) => this.o.log.error({ err: err.message, queue: UNSHARDED_RUN_QUEUE }, 'flow run queue error'));
    let left: number;
    try {
      const counts = await old.getJobCounts('active', 'wait', 'delayed', 'prioritized', 'waiting-children');
      left = Object.values(counts).reduce((a, b) => a + b, 0);
    } finally {
      await old.close();
    }
    if (left === 0 || this.closing) return;
    this.o.log.info({ queue: UNSHARDED_RUN_QUEUE, jobs: left }, 'running the flow runs left in the unsharded queue');
    this.workers.push(this.worker(UNSHARDED_RUN_QUEUE));
  }

  private async process(job: Job<{ id: string }>, token?: string): Promise<void> {
    const outcome = await this.run(job.data.id);
    if (outcome === 'busy') {
      // Another process replays this instance right now; look again shortly.
      await job.moveToDelayed(Date.now() + 250, token);
      throw new DelayedError();
    }
  }

  /**
   * Adds a run of the instance, now or at `at`. A timer has a fixed job id per step (`key`), so
   * scheduling it again on every replay of a wait is harmless and a crash between journaling the
   * wait and scheduling its timer cannot leave the instance waiting forever.
   */
  async wake(id: string, at?: number, key?: string): Promise<void> {
    const delay = at === undefined ? 0 : Math.max(0, at - Date.now());
    await this.queues[runShard(id, this.shards)]!.add('run', { id }, { delay, removeOnComplete: true, removeOnFail: 1000, attempts: 20, backoff: { type: 'exponential', delay: 500 }, ...(key ? { jobId: `t-${id}-${key}` } : {}) });
  }

  /**
   * The instance a starter's start id makes: 128 bits of an HMAC of flow, starter and start id
   * under the deployment's secret id key. The same start again is the same instance (idempotent,
   * with no key per start to store); without the secret nobody can predict another starter's
   * instance, nor block it by taking its id first. For the retention time after an upgrade, a
   * start id an earlier version bound (a key per start) still finds its instance.
   */
  async instanceId(flow: string, starter: string, messageId: string): Promise<string> {
    const k = await (this.idKey ??= this.store.instanceIdKey(Math.max(this.o.retentionMs, 86_400_000)).catch((err: unknown) => {
      this.idKey = undefined;
      throw err;
    }));
    const text = `${flow}\0${starter}\0${messageId}`;
    if (Date.now() < k.legacyUntil) {
      const earlier = await this.store.legacyStart(createHash('sha256').update(text).digest('base64url').slice(0, 22));
      if (earlier) return earlier;
    }
    return createHmac('sha256', k.key).update(text).digest('base64url').slice(0, 22);
  }

  definition(name: string): FlowDefinition {
    const def = this.o.flows.get(name);
    if (!def) throw new NotFound(`no flow named '${name}' (deployed flows: ${[...this.o.flows.keys()].join(', ') || 'none'})`);
    return def;
  }

  /** `flow:<name>`: validates the input and creates the instance (once per message id). */
  async startFromMessage(name: string, message: Message): Promise<{ instanceId: string; duplicate: boolean }> {
    const def = this.definition(name);
    const parsed = def.input.safeParse(message.body);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(input)'}: ${i.message}`).join('; ');
      throw new ValidationError(`input for flow '${name}' is not valid: ${problems}`, 'bad_input');
    }
    // The same starter's same start id is the same instance: create is idempotent.
    const id = await this.instanceId(name, principalId(message.sender), message.id);
    const now = new Date().toISOString();
    // The instance is one span of the trace that started it, and its context is stored with it:
    // every step, on whichever process and after however many replays, is a child of this span.
    const parent = readTraceContext(message.headers);
    const spanOptions: SpanOptions = { attributes: { 'switchboard.flow': name, 'switchboard.flow.instance': id, 'switchboard.flow.starter': principalId(message.sender) } };
    if (parent) spanOptions.parent = parent;
    const span = this.tracing.startSpan(`flow ${name}`, spanOptions);
    const trace = span.context;
    // Run here, without a run job, when this process has room: the instance is claimed (in this
    // process's set, see eager-starts.ts) together with its creation, before the start is acknowledged.
    const eager = this.eager?.reserve() ? this.eager : undefined;
    // Its run begins with the creation (the lock taken in the same script): one round trip less.
    const run = eager ? { token: randomBase64url(16), lockMs: this.o.lockMs } : undefined;
    let meta: InstanceMeta | undefined;
    let created: boolean;
    try {
      [created] = await Promise.all([this.store.create(meta = {
        id,
        flow: name,
        status: 'running',
        input: parsed.data,
        createdAt: now,
        updatedAt: now,
        startedBy: principalId(message.sender),
        // 128 random bits as 22 characters (an HMAC key; instances stored with 32 hex digits keep them).
        secret: randomBase64url(16),
        ...(message.replyTo ? { replyTo: message.replyTo } : {}),
        ...(message.correlationId ? { correlationId: message.correlationId } : {}),
        ...(trace ? { traceparent: trace.traceparent, ...(trace.tracestate !== undefined ? { tracestate: trace.tracestate } : {}) } : {}),
      }, () => [this.event('started', name, id, id, { startedBy: principalId(message.sender) })], run), eager?.claim(id)]);
      span.setAttribute('switchboard.duplicate', !created);
    } catch (err) {
      eager?.release(id);
      span.fail(err);
      throw err;
    } finally {
      span.end();
    }
    if (eager && run && created) {
      const at = Date.now();
      // Begun late (a long backlog), the run begins again with the same token and reads the instance.
      eager.begin({
        id,
        run: () => this.run(id, Date.now() - at < this.o.lockMs / 2 ? { token: run.token, meta: meta! } : { token: run.token }),
        unlock: () => this.store.unlock(id, run.token),
      });
    } else {
      eager?.release(id);
      // Woken even for a duplicate: a crash between create and wake is repaired by the sender's retry.
      await this.wake(id);
    }
    return { instanceId: id, duplicate: !created };
  }

  /**
   * `flow:<name>/<id>`: puts the message in the instance's inbox (once per message id) and wakes
   * it. A message that claims to answer one of the instance's steps (its correlation id names the
   * instance) must be that step's answer exactly, or it is refused — a forged or replayed reply
   * never reaches the inbox, and the step keeps waiting for the real one.
   */
  async deliver(name: string, id: string, message: Message): Promise<{ duplicate: boolean }> {
    const meta = await this.store.meta(id);
    if (!meta || meta.flow !== name) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    if (message.correlationId?.startsWith(`${id}:`)) await this.checkAnswer(meta, message);
    const r = await this.store.deliver(id, encodeMessage(message));
    if (r === DeliverCode.NoInstance) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    if (r === DeliverCode.Finished) throw new Conflict(`instance '${id}' of flow '${name}' has ${meta.status}; it takes no more messages`);
    await this.wake(id);
    return { duplicate: r === DeliverCode.Duplicate };
  }

  /**
   * The step a reply claims to answer is named in its token (`<id>:<step>[:r<attempt>]:<nonce>`),
   * so one journal entry is read, not the whole journal: a reply to step 1,000 costs what a reply
   * to step 1 does. A token that names no step falls back to looking at every request and ask.
   */
  private async checkAnswer(meta: InstanceMeta, message: Message): Promise<void> {
    const n = Number(message.correlationId!.slice(meta.id.length + 1).split(':')[0]);
    const one = Number.isInteger(n) && n >= 0 ? await this.store.step(meta.id, n) : undefined;
    const journal = one ? new Map([[n, one]]) : await this.store.journal(meta.id);
    for (const entry of journal.values()) {
      if (entry.kind !== 'request' && entry.kind !== 'ask') continue;
      // Journals from before tokens had nonces recorded none: the step id was the token then.
      if (!answers({ ...entry, correlation: entry.correlation ?? `${meta.id}:${entry.n}` }, encodeMessage(message))) continue;
      // A step takes one answer: the same message again is a harmless redelivery (deduplicated
      // by its id), another message with the same token is a replay and is refused.
      if (entry.done && entry.consumed !== undefined && entry.consumed !== message.id) continue;
      return;
    }
    throw new ReplyRefused(`flow:${meta.flow}/${meta.id}`, message.id, principalId(message.sender));
  }

  /**
   * One run of one instance: a replay from the first step, or — when this process holds the
   * instance in memory from its last run and nobody ran it since — a continuation of the parked
   * flow from the wait it stopped in. 'busy' when another run holds it. An eager start passes
   * the token its creation locked the instance with, and the instance as created when its run
   * follows soon enough that the lock is still good for a while.
   */
  async run(id: string, begun0?: { token: string; meta?: InstanceMeta }): Promise<'done' | 'busy'> {
    // 128 random bits, 22 characters: the lock's value and the instance's run mark (kept short
    // for the meta hash's compact encoding).
    const token = begun0?.token ?? randomBase64url(16);
    const held = this.sticky.get(id);
    // An eager start's run began with the instance's creation: nothing to read, nothing journaled.
    // (A cancel landing in between is honoured at its next look, as for any run in progress.)
    const begun = begun0?.meta ? { meta: begun0.meta, journal: new Map<number, JournalEntry>() } : await this.store.beginRun(id, token, this.o.lockMs, held === undefined);
    if (begun === 'busy') return 'busy';
    this.sticky.delete(id);
    // Ended, its last run's lock not expired yet: nothing to run, and no lock taken to give back.
    if (begun === 'finished') {
      held?.ctx.evict();
      return 'done';
    }
    let released = false;
    const lock: HeldLock = { id, token, lost: false };
    this.holdLock(lock);
    const control = { lockLost: () => lock.lost };
    try {
      const { meta } = begun;
      if (!meta || FINISHED.includes(meta.status)) {
        held?.ctx.evict();
        return 'done';
      }
      const def = this.o.flows.get(meta.flow);
      if (!def) {
        held?.ctx.evict();
        released = true;
        await this.finish(id, 'failed', { error: { code: 'flow_missing', message: `flow '${meta.flow}' is not deployed in this gateway` } }, [], meta.flow, meta);
        return 'done';
      }
      // What this process holds is current only if the run before this one was its own: a run
      // elsewhere (even one that crashed half-way) may have changed the journal since.
      let exec = held && begun.previousRun === held.token && held.ctx.isParked ? held : undefined;
      if (held && !exec) held.ctx.evict();
      let parked: Promise<'parked'>;
      if (exec) {
        this.stats.continued++;
        parked = exec.ctx.whenParked();
        exec.ctx.resume(control);
      } else {
        this.stats.replayed++;
        // Asked for without the journal (this process held an instance somebody ran since): the
        // journal and the input, which the meta hash holds only when it is short, are read now.
        const journal = begun.journal ?? (await this.store.journal(id));
        if (!begun.journal) meta.input = await this.store.input(id);
        const ctx = new ReplayContext(meta, journal, {
          store: this.store,
          send: (m) => this.o.router.send(m, { principal: { kind: 'flow', name: meta.flow }, door: 'flow' }),
          wakeAt: (i, at, key) => this.wake(i, at, key),
          tracing: this.tracing,
          log: this.o.log,
        }, control);
        ctx.sticky = this.stickyLimit > 0;
        parked = ctx.whenParked();
        const done = Promise.resolve().then(() => def.run(ctx, meta.input as never)).then(
          (result): Settled => ({ result }),
          (thrown: unknown): Settled => ({ thrown: thrown ?? new Error('flow threw undefined') }),
        );
        exec = { ctx, done, token };
      }
      exec.token = token;
      const outcome = await Promise.race([exec.done, parked]);
      const ctx = exec.ctx;
      if (outcome === 'parked') {
        // Waiting, in memory: journal, record the wait and release the lock in one round trip.
        released = true;
        const waitingOn = ctx.waitingOn;
        const before = await this.store.park(id, token, ctx.takePending(), waitingOn, this.waitingEvent(meta.flow, id, waitingOn));
        if (before === 'cancelled' || before === null || lock.lost) ctx.evict();
        else this.keep(id, exec);
        return 'done';
      }
      const { result, thrown } = outcome;
      // A flow that caught our Suspend still stops: the context remembers it.
      const stop = ctx.stopped ?? (thrown instanceof Suspend ? thrown : undefined);
      if (stop?.reason === 'waiting') {
        released = true;
        const waitingOn = ctx.waitingOn;
        await this.store.park(id, token, ctx.takePending(), waitingOn, this.waitingEvent(meta.flow, id, waitingOn));
      } else if (stop?.reason === 'failed') {
        released = true;
        await this.finish(id, 'failed', { error: describe(ctx.failure) }, [], meta.flow, meta);
      } else if (stop) {
        // cancelled, lock lost or evicted: whoever cancelled or holds the lock has the say now.
      } else if (thrown !== undefined) {
        released = true;
        await this.finish(id, 'failed', { error: describe(thrown) }, ctx.takePending(), meta.flow, meta);
      } else {
        released = true;
        await this.complete(meta, result, ctx.takePending());
      }
      return 'done';
    } finally {
      this.heldLocks.delete(lock);
      if (!released) await this.store.unlock(id, token).catch(() => {});
    }
  }

  /**
   * Keeps the lock of a run alive while it runs: every run in progress has its lock refreshed by
   * one interval of the runtime (every third of the lock's time), instead of a timer of its own,
   * which nearly every run (done within milliseconds) made and cleared without ever firing.
   */
  private holdLock(lock: HeldLock): void {
    this.heldLocks.add(lock);
    this.lockRefresher ??= setInterval(() => {
      for (const l of this.heldLocks) {
        this.store.refreshLock(l.id, l.token, this.o.lockMs).then((ok) => { if (!ok) l.lost = true; }, () => { l.lost = true; });
      }
    }, Math.max(200, Math.floor(this.o.lockMs / 3))).unref();
  }

  /** Keeps a parked flow in memory, dropping the least recently parked beyond the limit. */
  private keep(id: string, exec: Execution): void {
    this.sticky.set(id, exec);
    while (this.sticky.size > this.stickyLimit) {
      const [oldest, e] = this.sticky.entries().next().value as [string, Execution];
      this.sticky.delete(oldest);
      e.ctx.evict();
      this.stats.evicted++;
    }
  }

  private async complete(meta: InstanceMeta, result: unknown, entries: JournalEntry[]): Promise<void> {
    const value = result === undefined ? null : JSON.parse(JSON.stringify(result));
    if (meta.replyTo) {
      // The flow's answer to whoever started it with replyTo (request-reply between flows and clients).
      await this.o.router.send({
        id: `${meta.id}:result`, to: meta.replyTo, from: `flow:${meta.flow}/${meta.id}`, sender: { kind: 'flow', name: meta.flow },
        headers: withTraceContext({}, traceOf(meta)), contentType: 'application/json', body: value, createdAt: new Date().toISOString(),
        ...(meta.correlationId ? { correlationId: meta.correlationId } : {}),
      }, { principal: { kind: 'flow', name: meta.flow }, door: 'flow' });
    }
    await this.finish(meta.id, 'completed', { result: value }, entries, meta.flow, meta);
  }

  /**
   * Records the end of an instance and journals the run's last entries in one round trip
   * (`finishInstance`; its lock is left to expire); a cancel that landed while the run went on wins.
   */
  private async finish(id: string, status: FlowStatus, fields: Partial<InstanceMeta>, entries: JournalEntry[] = [], flow?: string, about?: InstanceMeta): Promise<void> {
    const events = (): LifecycleEvent[] => {
      if (about && status === 'completed') return [this.event('completed', about.flow, id, id, { startedBy: about.startedBy })];
      // A retried instance may fail again: each attempt's failure is its own event.
      if (about && status === 'failed') return [this.event('failed', about.flow, id, `${id}\0${about.attempt ?? '0'}`, { attempt: Number(about.attempt ?? 0), error: fields.error })];
      return [];
    };
    const before = await this.store.finish(id, { ...fields, status }, entries, this.o.retentionMs, events);
    if (before === null || before === 'cancelled') return;
    if (flow) await this.store.pruneIndexes(flow, this.o.retentionMs);
    this.o.log.info({ flow, instance: id, status, error: fields.error?.message }, `flow instance ${status}`);
    if (flow) this.o.onOutcome?.(flow, status);
  }

  /** A lifecycle event of an instance, recorded by the script of its change; plain facts, never input or result. */
  private event(what: 'started' | 'waiting' | 'completed' | 'failed' | 'cancelled', flow: string, id: string, key: string, data: Record<string, unknown>): LifecycleEvent {
    return { type: `switchboard.flow.${what}`, subject: `flow:${flow}/${id}`, key, data: { flow, instanceId: id, ...data } };
  }

  private waitingEvent(flow: string, id: string, on: InstanceMeta['waitingOn']): () => LifecycleEvent[] {
    // One event per wait: the step it waits in (a replay that parks in the same step is a duplicate).
    return () => (on ? [this.event('waiting', flow, id, `${id}\0${on.step}`, { step: on.step, kind: on.kind, ...(on.target ? { target: on.target } : {}), ...(on.until ? { until: on.until } : {}) })] : []);
  }

  async view(name: string, id: string): Promise<FlowView> {
    const meta = await this.store.meta(id, true);
    if (!meta || meta.flow !== name) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    const journal = [...(await this.store.journal(id)).values()].sort((a, b) => a.n - b.n);
    return {
      instanceId: meta.id,
      flow: meta.flow,
      status: meta.status,
      ...(meta.waitingOn ? { waitingOn: meta.waitingOn } : {}),
      input: meta.input,
      ...(meta.result !== undefined ? { result: meta.result } : {}),
      ...(meta.error ? { error: meta.error } : {}),
      startedBy: meta.startedBy,
      createdAt: meta.createdAt,
      updatedAt: meta.updatedAt,
      ...(meta.cancelledBy ? { cancelledBy: meta.cancelledBy } : {}),
      tags: Object.fromEntries(journal.filter((e) => e.kind === 'tag' && e.target).map((e) => [e.target!, String(e.result)])),
      steps: journal.map((e: JournalEntry) => ({ n: e.n, kind: e.kind, ...(e.target ? { target: e.target } : {}), at: e.at, done: e.done, ...(e.error ? { error: e.error.message } : {}) })),
    };
  }

  async list(name: string | undefined, limit: number): Promise<{ instanceId: string; flow: string; status: FlowStatus; createdAt: string; updatedAt: string }[]> {
    const rows = await this.store.list(name, limit);
    const out = [];
    for (const r of rows) {
      const m = await this.store.meta(r.id);
      if (m) out.push({ instanceId: m.id, flow: m.flow, status: m.status, createdAt: m.createdAt, updatedAt: m.updatedAt });
    }
    return out;
  }

  /**
   * The rows of named instances (one meta read each, no index or keyspace read), in the order
   * asked; an instance that is gone or of another flow is left out. The console's live flows
   * page asks for the rows it shows.
   */
  async rows(refs: { flow: string; instanceId: string }[]): Promise<FlowRow[]> {
    const metas = await Promise.all(refs.map((r) => this.store.meta(r.instanceId)));
    return metas.flatMap((m, i) => (m && m.flow === refs[i]!.flow ? [{ instanceId: m.id, flow: m.flow, status: m.status, startedBy: m.startedBy, createdAt: m.createdAt, updatedAt: m.updatedAt }] : []));
  }

  /**
   * Instances matching `q`, newest first. Flow, tag and dates are index reads (a sorted set per
   * flow and per tag, scored by creation time); status, starter and visibility are checked on
   * the instances read, in pages, at most 20 pages of `limit × 4`, so a search never scans
   * everything: `more` says the look stopped with rows left unread.
   */
  async search(q: FlowSearch): Promise<{ instances: FlowRow[]; more: boolean }> {
    const out: FlowRow[] = [];
    const page = Math.max(q.limit * 4, 50);
    for (let offset = 0, pages = 0; pages < 20; pages++, offset += page) {
      const rows = await this.store.range({
        ...(q.flow ? { flow: q.flow } : {}), ...(q.tag ? { tag: q.tag } : {}), ...(q.from !== undefined ? { from: q.from } : {}), ...(q.to !== undefined ? { to: q.to } : {}),
        offset, limit: page, keepFrom: Date.now() - this.o.retentionMs * 2,
      });
      for (const r of rows) {
        const m = await this.store.meta(r.id);
        if (!m || m.flow !== r.flow) continue;
        const row: FlowRow = { instanceId: m.id, flow: m.flow, status: m.status, startedBy: m.startedBy, createdAt: m.createdAt, updatedAt: m.updatedAt };
        if ((q.status && row.status !== q.status) || (q.startedBy && row.startedBy !== q.startedBy) || (q.visible && !q.visible(row))) continue;
        out.push(row);
        if (out.length >= q.limit) return { instances: out, more: true };
      }
      if (rows.length < page) return { instances: out, more: false };
    }
    return { instances: out, more: true };
  }

  /**
   * Retries a failed instance from its last step: a step that failed, or a request, receive or
   * ask that timed out, runs again (a request is sent again with a new id, since the first one
   * was deduplicated away); everything before it replays.
   */
  async retry(name: string, id: string, by: string): Promise<FlowView> {
    const meta = await this.store.meta(id);
    if (!meta || meta.flow !== name) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    if (meta.status !== 'failed') throw new Conflict(`instance '${id}' is ${meta.status}; only a failed instance can be retried`);
    const journal = await this.store.journal(id);
    const last = Math.max(-1, ...journal.keys());
    const entry = journal.get(last);
    if (entry?.error && ['step', 'request', 'receive', 'ask'].includes(entry.kind)) await this.store.deleteStep(id, last);
    await this.store.update(id, { status: 'running', attempt: String(Number(meta.attempt ?? 0) + 1) }, ['error']);
    await this.store.persist(id);
    this.o.log.info({ flow: name, instance: id, by }, 'flow instance retried');
    await this.wake(id);
    return this.view(name, id);
  }

  async cancel(name: string, id: string, by: string): Promise<FlowView> {
    const meta = await this.store.meta(id);
    if (!meta || meta.flow !== name) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    if (FINISHED.includes(meta.status)) throw new Conflict(`instance '${id}' has already ${meta.status}`);
    // Checked again in the script: a run that ended meanwhile keeps its end.
    const before = await this.store.cancel(id, by, () => [this.event('cancelled', name, id, id, { by })]);
    if (before === null) throw new NotFound(`no instance '${id}' of flow '${name}'`);
    if (FINISHED.includes(before)) throw new Conflict(`instance '${id}' has already ${before}`);
    await this.store.expire(id, name, this.o.retentionMs);
    // A flow parked here runs no further; elsewhere, its next run sees the status and drops it.
    this.sticky.get(id)?.ctx.evict();
    this.sticky.delete(id);
    this.o.log.info({ flow: name, instance: id, by }, 'flow instance cancelled');
    this.o.onOutcome?.(name, 'cancelled');
    return this.view(name, id);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.eager?.close();
    await this.leftovers;
    await Promise.all(this.workers.map((w) => w.close()));
    clearInterval(this.lockRefresher);
    this.lockRefresher = undefined;
    for (const e of this.sticky.values()) e.ctx.evict();
    this.sticky.clear();
    await Promise.all(this.queues.map((q) => q.close()));
    await this.storeRedis.quit().catch(() => this.storeRedis.disconnect());
  }
}

/** The lock of one run in progress, and whether a refresh found it lost. */
interface HeldLock {
  readonly id: string;
  readonly token: string;
  lost: boolean;
}

function describe(err: unknown): { code?: string; message: string } {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  return { ...(typeof e?.code === 'string' ? { code: e.code } : {}), message: typeof e?.message === 'string' ? e.message : String(err) };
}
