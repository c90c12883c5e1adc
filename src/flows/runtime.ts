import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Conflict, NotFound, ValidationError } from '../core/errors.ts';
import { encodeMessage, principalId, type Message } from '../core/message.ts';
import type { Router } from '../core/router.ts';
import { ReplayContext, answers } from './context.ts';
import type { FlowDefinition } from './define.ts';
import { ReplyRefused, Suspend } from './errors.ts';
import { DeliverCode, InstanceStore, type FlowStatus, type InstanceMeta, type JournalEntry } from './store.ts';

export interface FlowRuntimeOptions {
  redis: Redis;
  prefix: string;
  router: Router;
  flows: Map<string, FlowDefinition>;
  /** Instances replayed at once by this process. */
  concurrency: number;
  /** Lock on an instance while a process replays it; expires if that process dies. */
  lockMs: number;
  /** How often a crashed run is looked for (BullMQ stalled check). */
  stalledCheckMs: number;
  /** How long a completed, failed or cancelled instance stays visible. */
  retentionMs: number;
  log: Logger;
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
  steps: { n: number; kind: string; target?: string; at: string; done: boolean; error?: string }[];
}

const FINISHED: FlowStatus[] = ['completed', 'failed', 'cancelled'];

/**
 * Runs flow instances by journal replay. A run is a BullMQ job "replay instance X" on one
 * internal queue: starting, a message arriving, a timer firing all add such a job; the job takes
 * the instance's lock, replays the flow to where it must wait, and ends. Nothing of a waiting
 * instance stays in memory, and a run lost with its process is retried once its lock expires.
 */
export class FlowRuntime {
  readonly store: InstanceStore;
  private readonly queue: Queue<{ id: string }>;
  private worker?: Worker<{ id: string }>;

  constructor(private readonly o: FlowRuntimeOptions) {
    this.store = new InstanceStore(o.redis, o.prefix);
    this.queue = new Queue<{ id: string }>('{flow-runs}', { connection: o.redis, prefix: o.prefix });
    this.queue.on('error', (err) => o.log.error({ err: err.message }, 'flow run queue error'));
  }

  get definitions(): Map<string, FlowDefinition> {
    return this.o.flows;
  }

  start(): void {
    this.worker = new Worker<{ id: string }>('{flow-runs}', (job, token) => this.process(job, token), {
      connection: this.o.redis,
      prefix: this.o.prefix,
      concurrency: this.o.concurrency,
      lockDuration: this.o.lockMs,
      stalledInterval: this.o.stalledCheckMs,
      // A run lost in a crash is simply run again: replay makes that safe, however often.
      maxStalledCount: 1000,
    });
    this.worker.on('error', (err) => this.o.log.error({ err: err.message }, 'flow worker error'));
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
    await this.queue.add('run', { id }, { delay, removeOnComplete: true, removeOnFail: 1000, attempts: 20, backoff: { type: 'exponential', delay: 500 }, ...(key ? { jobId: `t-${id}-${key}` } : {}) });
  }

  /**
   * Instance ids are random (128 bits): nobody can predict another starter's instance, nor block
   * it by taking its id first. A start id is idempotent per starter through `claimStart`.
   */
  static newInstanceId(): string {
    return randomBytes(16).toString('base64url');
  }

  /** The digest a starter's start id is bound under: flow, starter and start id. */
  static startDigest(flow: string, starter: string, messageId: string): string {
    return createHash('sha256').update(`${flow}\0${starter}\0${messageId}`).digest('base64url').slice(0, 22);
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
    // The same starter's same start id finds the instance it made before; a crash between the
    // binding and the create is mended by the sender's retry (create is idempotent).
    const fresh = FlowRuntime.newInstanceId();
    const id = (await this.store.claimStart(FlowRuntime.startDigest(name, principalId(message.sender), message.id), fresh, Math.max(this.o.retentionMs, 86_400_000))) ?? fresh;
    const now = new Date().toISOString();
    const created = await this.store.create({
      id,
      flow: name,
      status: 'running',
      input: parsed.data,
      createdAt: now,
      updatedAt: now,
      startedBy: principalId(message.sender),
      secret: randomBytes(16).toString('hex'),
      ...(message.replyTo ? { replyTo: message.replyTo } : {}),
      ...(message.correlationId ? { correlationId: message.correlationId } : {}),
    });
    // Woken even for a duplicate: a crash between create and wake is repaired by the sender's retry.
    await this.wake(id);
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

  private async checkAnswer(meta: InstanceMeta, message: Message): Promise<void> {
    const journal = await this.store.journal(meta.id);
    for (const entry of journal.values()) {
      if (entry.kind !== 'request' && entry.kind !== 'ask') continue;
      // Journals from before tokens had nonces recorded none: the step id was the token then.
      if (answers({ ...entry, correlation: entry.correlation ?? `${meta.id}:${entry.n}` }, encodeMessage(message))) return;
    }
    throw new ReplyRefused(`flow:${meta.flow}/${meta.id}`, message.id, principalId(message.sender));
  }

  /** One replay of one instance. 'busy' when another process holds it. */
  async run(id: string): Promise<'done' | 'busy'> {
    const token = randomUUID();
    if (!(await this.store.lock(id, token, this.o.lockMs))) return 'busy';
    let lockLost = false;
    const refresh = setInterval(() => {
      this.store.refreshLock(id, token, this.o.lockMs).then((ok) => { if (!ok) lockLost = true; }, () => { lockLost = true; });
    }, Math.max(200, Math.floor(this.o.lockMs / 3)));
    try {
      const meta = await this.store.meta(id);
      if (!meta || FINISHED.includes(meta.status)) return 'done';
      const def = this.o.flows.get(meta.flow);
      if (!def) {
        await this.finish(id, 'failed', { error: { code: 'flow_missing', message: `flow '${meta.flow}' is not deployed in this gateway` } });
        return 'done';
      }
      const journal = await this.store.journal(id);
      const ctx = new ReplayContext(meta, journal, {
        store: this.store,
        send: (m) => this.o.router.send(m, { principal: { kind: 'flow', name: meta.flow }, door: 'flow' }),
        wakeAt: (i, at, key) => this.wake(i, at, key),
        log: this.o.log,
      }, async () => {
        if (lockLost) throw new Suspend('lock-lost');
        return (await this.store.status(id)) === 'cancelled';
      });
      if (meta.status !== 'running') await this.store.update(id, { status: 'running' }, ['waitingOn']);
      let result: unknown;
      let thrown: unknown;
      try {
        result = await def.run(ctx, meta.input as never);
      } catch (err) {
        thrown = err;
      }
      // A flow that caught our Suspend still stops: the context remembers it.
      const stop = ctx.stopped ?? (thrown instanceof Suspend ? thrown : undefined);
      if (stop?.reason === 'waiting') {
        await ctx.flush();
        // A cancel that landed while this run went on stands: nothing is written over it.
        if ((await this.store.meta(id))?.status !== 'cancelled') await this.store.update(id, { status: 'waiting', waitingOn: ctx.waitingOn });
      } else if (stop?.reason === 'failed') {
        await this.finish(id, 'failed', { error: describe(ctx.failure) });
      } else if (stop) {
        // cancelled or lock lost: whoever cancelled or holds the lock has the say now.
      } else if (thrown !== undefined) {
        await ctx.flush();
        await this.finish(id, 'failed', { error: describe(thrown) });
      } else {
        await ctx.flush();
        await this.complete(meta, result);
      }
      return 'done';
    } finally {
      clearInterval(refresh);
      await this.store.unlock(id, token).catch(() => {});
    }
  }

  private async complete(meta: InstanceMeta, result: unknown): Promise<void> {
    const value = result === undefined ? null : JSON.parse(JSON.stringify(result));
    if (meta.replyTo) {
      // The flow's answer to whoever started it with replyTo (request-reply between flows and clients).
      await this.o.router.send({
        id: `${meta.id}:result`, to: meta.replyTo, from: `flow:${meta.flow}/${meta.id}`, sender: { kind: 'flow', name: meta.flow },
        headers: {}, contentType: 'application/json', body: value, createdAt: new Date().toISOString(),
        ...(meta.correlationId ? { correlationId: meta.correlationId } : {}),
      }, { principal: { kind: 'flow', name: meta.flow }, door: 'flow' });
    }
    await this.finish(meta.id, 'completed', { result: value });
  }

  private async finish(id: string, status: FlowStatus, fields: Partial<InstanceMeta>): Promise<void> {
    // A cancel that landed while the run went on wins: nothing is recorded over it.
    const current = await this.store.meta(id);
    if (current?.status === 'cancelled') return;
    await this.store.update(id, { ...fields, status }, ['waitingOn']);
    if (current) await this.store.expire(id, current.flow, this.o.retentionMs);
    this.o.log.info({ flow: current?.flow, instance: id, status, error: fields.error?.message }, `flow instance ${status}`);
  }

  async view(name: string, id: string): Promise<FlowView> {
    const meta = await this.store.meta(id);
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
    await this.store.update(id, { status: 'cancelled', cancelledBy: by }, ['waitingOn']);
    await this.store.expire(id, name, this.o.retentionMs);
    this.o.log.info({ flow: name, instance: id, by }, 'flow instance cancelled');
    return this.view(name, id);
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
  }
}

function describe(err: unknown): { code?: string; message: string } {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  return { ...(typeof e?.code === 'string' ? { code: e.code } : {}), message: typeof e?.message === 'string' ? e.message : String(err) };
}
