import { createHmac, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { parseDuration } from '../core/duration.ts';
import type { SendResult } from '../core/endpoint.ts';
import { ValidationError } from '../core/errors.ts';
import { decodeMessage, encodeMessage, type Message, type StoredMessage } from '../core/message.ts';
import type { Decision, FlowContext, MessageMatch, SendOptions, TaskSpec } from './define.ts';
import { FlowTimeout, NonDeterministicChange, Suspend } from './errors.ts';
import { readTraceContext, storedTraceContext, withTraceContext, type TraceContext } from '../tracing/trace-context.ts';
import { NO_TRACING, inSpan, passThrough, type SpanOptions, type TraceSpan, type Tracing } from '../tracing/tracing.ts';
import type { InstanceMeta, InstanceStore, JournalEntry } from './store.ts';

/** What one run tells the context it lends itself to (a sticky context lives through many runs). */
export interface RunControl {
  /** True once this run's lock refresh failed: another process may own the instance now. */
  lockLost(): boolean;
}

export interface ContextDeps {
  store: InstanceStore;
  send(message: Message): Promise<SendResult>;
  /** Schedules a run of this instance at `at` (epoch ms); `key` makes repeats one timer. */
  wakeAt(id: string, at: number, key: string): Promise<void>;
  /**
   * Spans of the steps this context runs (not of those it replays).
   * @defaultValue NO_TRACING
   */
  tracing?: Tracing;
  log: Logger;
}

/** The trace context an instance was started in (stored with it), if any. */
export function traceOf(meta: Pick<InstanceMeta, 'traceparent' | 'tracestate'>): TraceContext | undefined {
  return storedTraceContext(meta);
}

/** Deep partial equality: every field of `want` must be in `have` with an equal value. */
export function matches(have: unknown, want: unknown): boolean {
  if (want === null || typeof want !== 'object') return have === want;
  if (have === null || typeof have !== 'object') return false;
  if (Array.isArray(want)) return Array.isArray(have) && want.length === have.length && want.every((w, i) => matches(have[i], w));
  return Object.entries(want as Record<string, unknown>).every(([k, v]) => matches((have as Record<string, unknown>)[k], v));
}

/**
 * Entries a replay redoes to the same effect when they were never written: a send goes out again
 * with the same message id (deduplicated downstream), a finished sleep finds its deadline passed.
 */
const REDOABLE = new Set<JournalEntry['kind']>(['send', 'sleep']);

const TAG_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

const toJson = (v: unknown): unknown => (v === undefined ? null : JSON.parse(JSON.stringify(v)));

/** `user:bob` → {kind: 'user', name: 'bob'}. */
export function principalFromId(id: string): { kind: Message['sender']['kind']; name: string } {
  const colon = id.indexOf(':');
  return { kind: id.slice(0, colon) as Message['sender']['kind'], name: id.slice(colon + 1) };
}

/**
 * Who may answer a request sent to `to`: the broker it went to, the peer it went to, the flow it
 * started; anyone the permission rules let send to this instance for any other address.
 */
export function expectedResponder(to: string): ((s: Message['sender']) => boolean) | undefined {
  const m = /^(mq|peer):([^/]+)\//.exec(to) ?? /^(flow):([^/]+)/.exec(to);
  if (!m) return undefined;
  const kind = m[1] === 'mq' ? 'broker' : m[1] === 'peer' ? 'peer' : 'flow';
  // A peer's sender is its network identity; `peer:<alias>/…` names its alias.
  return (s) => s.kind === kind && (s.alias ?? s.name) === m[2];
}

/**
 * Whether a message is the answer a pending request or ask waits for: the step's own token, from
 * the party it asked; for an ask, a decision the inbox made on exactly the task the ask created
 * (the `switchboard-task` header survives only from the gateway's own doors).
 */
export function answers(entry: JournalEntry, m: Pick<StoredMessage, 'correlationId' | 'sender' | 'headers'>): boolean {
  if (entry.correlation === undefined || m.correlationId !== entry.correlation) return false;
  if (entry.kind === 'ask') return entry.task === undefined || (m.headers['switchboard-task'] === entry.task && m.sender.kind === 'user');
  const responder = entry.target ? expectedResponder(entry.target) : undefined;
  return responder ? responder(m.sender) : true;
}

/**
 * The replaying ctx of one instance. Step n returns what the journal recorded for n; past the
 * journal it does the work, journals it, and goes on. Where it must wait it records what it waits
 * for and then either unwinds the run (Suspend), leaving nothing in memory, or — when the runtime
 * keeps the instance in memory (`sticky`) — parks: the flow function stays suspended in this
 * wait, and the next run of this instance in this process resumes it here instead of replaying
 * from the first step. Replay remains the way back after a crash, an eviction, or a run elsewhere.
 */
export class ReplayContext implements FlowContext {
  private n = 0;
  /**
   * Entries not yet written. A send's entry waits here for the next round trip (before the next
   * side effect, or the run's end): a crash in between re-sends with the same message id, which
   * is deduplicated downstream, exactly as a crash between a send and its journal write was.
   */
  private readonly pending: JournalEntry[] = [];
  /** Whether a wait parks in memory instead of unwinding (set by the runtime per instance). */
  sticky = false;
  private parked?: { resume: () => void; evict: (s: Suspend) => void };
  private onPark?: () => void;
  /** Timer keys this context scheduled already: a wake continued in memory does not add them again. */
  private readonly timers = new Set<string>();
  /**
   * True while the instance's status is known as of after the last side effect: a run's begin
   * reads it (beginRun), so the first effect of a run needs no look of its own.
   */
  private statusKnown: boolean;
  /** Set when the run must stop; every later ctx call throws it again. */
  stopped?: Suspend;
  /** The failure that stopped the run, for the instance's status. */
  failure?: Error;
  /** What the instance waits for when the run stopped with 'waiting'. */
  waitingOn?: InstanceMeta['waitingOn'];

  constructor(
    private readonly meta: InstanceMeta,
    private readonly journal: Map<number, JournalEntry>,
    private readonly deps: ContextDeps,
    /**
     * The runtime's control of the current run. A bare `isCancelled` function instead gives the
     * plain mode (no batching): every entry is written at once and the status is asked on its own
     * before each effect — what an in-memory stand-in of the store in a unit test expects.
     */
    private run: RunControl | (() => Promise<boolean>),
  ) {
    this.statusKnown = typeof run !== 'function';
  }

  /** Batching mode: a send's entry goes with the next round trip, the status with the journal write. */
  private get batching(): boolean {
    return typeof this.run !== 'function';
  }

  /** Resolves once the flow parks in a wait (sticky only); the runtime races it with the run's end. */
  whenParked(): Promise<'parked'> {
    return new Promise((resolve) => {
      this.onPark = () => resolve('parked');
    });
  }

  /** True while the flow function is suspended in a wait, in memory. */
  get isParked(): boolean {
    return this.parked !== undefined;
  }

  /** Continues a parked flow in a new run: the wait looks at the inbox and the clock again. */
  resume(run: RunControl): void {
    const p = this.parked;
    if (!p) throw new Error('ReplayContext.resume: the flow is not parked');
    this.run = run;
    this.statusKnown = true;
    this.parked = undefined;
    this.waitingOn = undefined;
    p.resume();
  }

  /** Drops a parked flow from memory: its wait throws Suspend('evicted') and the function unwinds. */
  evict(): void {
    const p = this.parked;
    this.parked = undefined;
    this.stopped ??= new Suspend('evicted');
    p?.evict(this.stopped);
  }

  /** Journal entries not written yet, taken by the runtime to write with the run's last round trip. */
  takePending(): JournalEntry[] {
    const entries = this.pending.splice(0);
    for (const e of entries) this.journal.set(e.n, e);
    return entries;
  }

  get id(): string {
    return this.meta.id;
  }

  get flow(): string {
    return this.meta.flow;
  }

  /** Who started this instance, as authenticated at the door (journaled in the instance's meta). */
  get startedBy(): { kind: Message['sender']['kind']; name: string } {
    return principalFromId(this.meta.startedBy);
  }

  private get address(): string {
    return `flow:${this.meta.flow}/${this.meta.id}`;
  }

  private stop(reason: Suspend['reason'], failure?: Error): never {
    this.stopped ??= new Suspend(reason);
    if (failure) this.failure ??= failure;
    throw this.stopped;
  }

  /** The next step number and what the journal holds for it, checking the code still asks for the same. */
  private next(kind: JournalEntry['kind'], target?: string): { n: number; rec?: JournalEntry } {
    if (this.stopped) throw this.stopped;
    const n = this.n++;
    const rec = this.journal.get(n);
    if (rec && (rec.kind !== kind || (rec.target ?? '') !== (target ?? ''))) {
      const what = (k: string, t?: string) => (t ? `${k} ${t}` : k);
      this.stop('failed', new NonDeterministicChange(n, what(rec.kind, rec.target), what(kind, target)));
    }
    return { n, rec };
  }

  /**
   * Before any new side effect: journal what a replay could not do again the same way (a step's
   * result, now()/uuid() values) and honour a cancel, in one round trip; a run that lost its lock
   * stops here. A send's entry may wait longer, for the next write: sent again after a crash, it
   * has the same id and is deduplicated downstream. Right after the run's begin (which read the
   * status) the look is skipped, and so is a round trip with nothing to do.
   */
  private async beforeEffect(): Promise<void> {
    if (typeof this.run === 'function') {
      await this.flush();
      let cancelled: boolean;
      try {
        cancelled = await this.run();
      } catch (err) {
        if (err instanceof Suspend) this.stop(err.reason);
        throw err;
      }
      if (cancelled) this.stop('cancelled');
      return;
    }
    if (this.run.lockLost()) this.stop('lock-lost');
    const known = this.statusKnown;
    // The effect that follows makes what is known stale.
    this.statusKnown = false;
    const mustWrite = this.pending.some((e) => !REDOABLE.has(e.kind));
    const entries = mustWrite ? this.pending.splice(0) : [];
    if (known) {
      if (entries.length > 0) await this.deps.store.writeSteps(this.id, entries);
    } else if ((await this.deps.store.journalAndStatus(this.id, entries)) === 'cancelled') {
      for (const e of entries) this.journal.set(e.n, e);
      this.stop('cancelled');
    }
    for (const e of entries) this.journal.set(e.n, e);
  }

  async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const entries = this.pending.splice(0);
    await this.deps.store.writeSteps(this.id, entries);
    for (const e of entries) this.journal.set(e.n, e);
  }

  /**
   * The id of what step n sends: `<instanceId>:<n>`, stable across replays so a repeat is
   * deduplicated downstream; after an admin retry `<instanceId>:<n>:r<attempt>`, so a request
   * sent again is not taken for the first one.
   */
  private stepId(n: number): string {
    const attempt = Number(this.meta.attempt ?? 0);
    return attempt > 0 ? `${this.id}:${n}:r${attempt}` : `${this.id}:${n}`;
  }

  /**
   * The correlation token of step n: its step id and a nonce only this instance can compute
   * (an HMAC of the step id under the instance's secret), so a reply cannot be forged by someone
   * who merely knows or guesses the instance id. Reproducible on replay without journaling first.
   * Instances made before tokens had nonces keep what their journal recorded.
   */
  private token(n: number): string {
    const id = this.stepId(n);
    if (!this.meta.secret) return id;
    return `${id}:${createHmac('sha256', this.meta.secret).update(id).digest('hex').slice(0, 32)}`;
  }

  /**
   * A step that does new work is a span, a child of the instance's span: on a replay, here or on
   * another process, steps already journaled make no span again.
   */
  private inStep<T>(n: number, kind: JournalEntry['kind'], target: string | undefined, work: (span: TraceSpan) => Promise<T>): Promise<T> {
    const parent = traceOf(this.meta);
    const tracing = this.deps.tracing ?? NO_TRACING;
    // Tracing off (the default): no span name, attributes or span of its own for every step.
    if (!tracing.enabled) return work(passThrough(parent));
    // Built by assignment: a literal opening with a conditional spread took V8 ~1.7 µs a step.
    const options: SpanOptions = { attributes: { 'switchboard.flow': this.flow, 'switchboard.flow.instance': this.id, 'switchboard.flow.step': n, 'switchboard.flow.step.kind': kind, 'switchboard.flow.step.target': target } };
    if (parent) options.parent = parent;
    return inSpan(tracing, `flow ${this.flow} ${kind}${target ? ` ${target}` : ''}`, options, work);
  }

  private message(n: number, to: string, body: unknown, o: SendOptions = {}, trace?: TraceContext): Message {
    return {
      id: this.stepId(n),
      to,
      from: this.address,
      sender: { kind: 'flow', name: this.flow },
      headers: withTraceContext({ ...(o.headers ?? {}) }, trace),
      contentType: 'application/json',
      body: body ?? null,
      createdAt: new Date().toISOString(),
      ...(o.subject !== undefined ? { subject: o.subject } : {}),
      ...(o.correlationId !== undefined ? { correlationId: o.correlationId } : {}),
      ...(o.replyTo !== undefined ? { replyTo: o.replyTo } : {}),
    };
  }

  async send(to: string, body: unknown, options?: SendOptions): Promise<{ id: string }> {
    const { n, rec } = this.next('send', to);
    if (rec) return rec.result as { id: string };
    await this.beforeEffect();
    const m = await this.inStep(n, 'send', to, async (span) => {
      const out = this.message(n, to, body, options, span.context);
      await this.deps.send(out);
      return out;
    });
    this.pending.push({ n, kind: 'send', target: to, at: new Date().toISOString(), done: true, result: { id: m.id } });
    if (!this.batching) await this.flush();
    return { id: m.id };
  }

  /** Sends (once) and then waits for the answer bound to this step: its token, its source, its task. */
  private async sendAndWait(kind: 'request' | 'ask', to: string, body: unknown, options: SendOptions & { timeout?: string | number }): Promise<Message> {
    const { n, rec } = this.next(kind, to);
    if (rec?.done) return this.settled(rec);
    let deadline = rec?.deadline;
    if (!rec) {
      await this.beforeEffect();
      deadline = options.timeout !== undefined ? Date.now() + parseDuration(options.timeout) : undefined;
      const correlation = this.token(n);
      const sent = await this.inStep(n, kind, to, (span) => this.deps.send(this.message(n, to, body, { ...options, correlationId: correlation, replyTo: this.address }, span.context)));
      const entry: JournalEntry = {
        n, kind, target: to, at: new Date().toISOString(), done: false, correlation,
        ...(sent.taskId !== undefined ? { task: sent.taskId } : {}), ...(deadline !== undefined ? { deadline } : {}),
      };
      // Written at once, not left pending: a fast reply is checked against this entry.
      this.pending.push(entry);
      await this.flush();
    }
    // Journals written before tokens had nonces recorded none: their step id was the token.
    const entry = { ...this.journal.get(n)!, correlation: this.journal.get(n)!.correlation ?? this.stepId(n) };
    return this.wait(n, kind, to, deadline, (m) => answers(entry, m), kind === 'ask' ? 'decision' : 'reply');
  }

  private settled(rec: JournalEntry): Message {
    if (rec.error) throw new FlowTimeout(rec.n, rec.kind === 'ask' ? 'decision' : rec.kind === 'request' ? 'reply' : 'message');
    return decodeMessage(rec.result as StoredMessage);
  }

  private async wait(n: number, kind: JournalEntry['kind'], target: string | undefined, deadline: number | undefined, accept: (m: StoredMessage) => boolean, what: string): Promise<Message> {
    const base = this.journal.get(n)!;
    for (;;) {
      for (const { raw, message } of await this.deps.store.inbox(this.id)) {
        if (!accept(message)) continue;
        const entry: JournalEntry = { ...base, done: true, result: message, consumed: message.id, at: new Date().toISOString() };
        await this.flush();
        await this.deps.store.consume(this.id, entry, raw);
        this.journal.set(n, entry);
        this.traceAnswer(n, kind, message);
        return decodeMessage(message);
      }
      if (deadline !== undefined && Date.now() >= deadline) {
        const entry: JournalEntry = { ...base, done: true, error: { name: 'FlowTimeout', code: 'flow_timeout', message: `no ${what} before the timeout` } };
        this.pending.push(entry);
        await this.flush();
        throw new FlowTimeout(n, what);
      }
      if (deadline !== undefined) await this.timer(n, deadline);
      this.waitingOn = { step: n, kind, ...(target ? { target } : {}), ...(deadline !== undefined ? { until: new Date(deadline).toISOString() } : {}) };
      await this.park();
    }
  }

  /**
   * The instance takes an answer: a span that continues the answer's own trace (the decision,
   * the broker's reply, the message received), so the trace shows what the flow went on with.
   */
  private traceAnswer(n: number, kind: JournalEntry['kind'], message: StoredMessage): void {
    const parent = readTraceContext(message.headers) ?? traceOf(this.meta);
    (this.deps.tracing ?? NO_TRACING).startSpan(`flow ${this.flow} ${kind} answered`, {
      kind: 'consumer',
      ...(parent ? { parent } : {}),
      attributes: { 'switchboard.flow': this.flow, 'switchboard.flow.instance': this.id, 'switchboard.flow.step': n, 'messaging.message.id': message.id },
    }).end();
  }

  /**
   * Schedules the wake-up of a wait's deadline: on every replay of the wait (one timer per step,
   * see FlowRuntime.wake), but once per context when it continues in memory.
   */
  private async timer(n: number, deadline: number): Promise<void> {
    const key = `${n}-${this.meta.attempt ?? 0}`;
    if (this.timers.has(key)) return;
    await this.deps.wakeAt(this.id, deadline, key);
    this.timers.add(key);
  }

  /** Stops here until the next run: unwinds (Suspend) or, sticky, parks the function in memory. */
  private async park(): Promise<void> {
    if (!this.sticky) this.stop('waiting');
    await new Promise<void>((resume, evict) => {
      this.parked = { resume, evict };
      this.onPark?.();
    });
  }

  request(to: string, body: unknown, options: SendOptions & { timeout?: string | number } = {}): Promise<Message> {
    return this.sendAndWait('request', to, body, options);
  }

  async ask(to: string, task: TaskSpec, options: { timeout?: string | number } = {}): Promise<Decision> {
    if (!/^(person|group):/.test(to)) throw new ValidationError(`ctx.ask: '${to}' is not a person: or group: address`);
    if (!task || typeof task.title !== 'string' || !Array.isArray(task.actions) || task.actions.length === 0) {
      throw new ValidationError('ctx.ask: a task needs a title and at least one action');
    }
    const reply = await this.sendAndWait('ask', to, toJson(this.withControls(task)), { ...options, headers: { 'switchboard-task': 'ask' } });
    return reply.body as Decision;
  }

  /** Turns the flow-facing four-eyes options into the controls the inbox enforces. */
  private withControls(task: TaskSpec): TaskSpec {
    const { fourEyes, notBy, approvals, ...rest } = task;
    if (notBy !== undefined && (!Array.isArray(notBy) || !notBy.every((p) => typeof p === 'string' && /^[a-z]+:.+/.test(p)))) {
      throw new ValidationError("ctx.ask: 'notBy' must be a list of principals like 'user:carol'");
    }
    if (approvals !== undefined && (!Number.isInteger(approvals) || approvals < 1 || approvals > 20)) throw new ValidationError("ctx.ask: 'approvals' must be a whole number from 1 to 20");
    const starter = this.meta.startedBy;
    const excluded = [...new Set([...(fourEyes ? [starter] : []), ...(notBy ?? [])])];
    if (excluded.length === 0 && (approvals ?? 1) === 1) return rest;
    return {
      ...rest,
      controls: {
        ...(excluded.length > 0 ? { excluded } : {}),
        ...(fourEyes ? { excludedReason: { [starter]: 'you started this request' } } : {}),
        ...(approvals !== undefined && approvals > 1 ? { approvals } : {}),
      },
    };
  }

  async receive(options: { timeout?: string | number; match?: MessageMatch } = {}): Promise<Message> {
    const { n, rec } = this.next('receive');
    if (rec?.done) return this.settled(rec);
    let deadline = rec?.deadline;
    if (!rec) {
      await this.flush();
      deadline = options.timeout !== undefined ? Date.now() + parseDuration(options.timeout) : undefined;
      this.pending.push({ n, kind: 'receive', at: new Date().toISOString(), done: false, ...(deadline !== undefined ? { deadline } : {}) });
      await this.flush();
    }
    const mine = `${this.id}:`;
    // Replies to this instance's own requests and asks are theirs, unless the match asks for one.
    const accept = (m: StoredMessage) => (options.match?.correlationId !== undefined || !m.correlationId?.startsWith(mine)) && (!options.match || matches(m, options.match));
    return this.wait(n, 'receive', undefined, deadline, accept, 'message');
  }

  async sleep(duration: string | number): Promise<void> {
    const { n, rec } = this.next('sleep');
    if (rec?.done) return;
    let deadline = rec?.deadline;
    if (!rec) {
      deadline = Date.now() + parseDuration(duration);
      this.pending.push({ n, kind: 'sleep', at: new Date().toISOString(), done: false, deadline });
      await this.flush();
    }
    for (;;) {
      if (Date.now() >= deadline!) {
        // Left pending: the next round trip journals it (a crash before that sleeps no longer).
        this.pending.push({ ...this.journal.get(n)!, done: true });
        if (!this.batching) await this.flush();
        return;
      }
      await this.timer(n, deadline!);
      this.waitingOn = { step: n, kind: 'sleep', until: new Date(deadline!).toISOString() };
      await this.park();
    }
  }

  async step<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    const { n, rec } = this.next('step', name);
    if (rec) {
      if (rec.error) throw Object.assign(new Error(rec.error.message), { name: rec.error.name, code: rec.error.code });
      return rec.result as T;
    }
    await this.beforeEffect();
    // The entry goes with the next round trip (before the next side effect, a wait, or the run's
    // end), as a send's does: a crash before it runs the step again, as a crash just after the
    // step always could.
    let entry: JournalEntry;
    try {
      const result = toJson(await this.inStep(n, 'step', name, async () => fn())) as T;
      entry = { n, kind: 'step', target: name, at: new Date().toISOString(), done: true, result };
      this.pending.push(entry);
      if (!this.batching) await this.flush();
      return result;
    } catch (err) {
      if (err instanceof Suspend) throw err;
      const e = err as Error & { code?: string };
      entry = { n, kind: 'step', target: name, at: new Date().toISOString(), done: true, error: { name: e.name ?? 'Error', message: e.message ?? String(err), ...(e.code ? { code: String(e.code) } : {}) } };
      this.pending.push(entry);
      if (!this.batching) await this.flush();
      throw err;
    }
  }

  now(): Date {
    const { n, rec } = this.next('now');
    if (rec) return new Date(rec.result as string);
    const at = new Date();
    this.pending.push({ n, kind: 'now', at: at.toISOString(), done: true, result: at.toISOString() });
    return at;
  }

  uuid(): string {
    const { n, rec } = this.next('uuid');
    if (rec) return rec.result as string;
    const id = randomUUID();
    this.pending.push({ n, kind: 'uuid', at: new Date().toISOString(), done: true, result: id });
    return id;
  }

  /**
   * Not `async`: a bad name or value throws at the call, and a flow may call it without `await`
   * (as DESIGN §3 does). The step number is taken at the call, so replay sees the same order
   * either way; the index is written, then the entry joins the next journal write. A failed index
   * write rejects for a caller that awaits and is logged for one that does not: its entry is then
   * not journaled, so the next replay writes the index again (ZADD is idempotent).
   */
  tag(name: string, value: string | number): Promise<void> {
    if (typeof name !== 'string' || !TAG_NAME.test(name)) throw new ValidationError(`ctx.tag: '${String(name)}' is not a tag name (1-64 letters, digits, _, - or .)`);
    if ((typeof value !== 'string' && typeof value !== 'number') || String(value).length === 0 || String(value).length > 200) {
      throw new ValidationError(`ctx.tag('${name}'): the value must be a string or number of 1 to 200 characters`);
    }
    const { n, rec } = this.next('tag', name);
    if (rec) return Promise.resolve();
    const written = this.deps.store.addTag(this.flow, this.id, name, String(value), this.meta.createdAt).then(() => {
      this.pending.push({ n, kind: 'tag', target: name, at: new Date().toISOString(), done: true, result: String(value) });
    });
    written.catch((err: Error) => this.deps.log.warn({ flow: this.flow, instance: this.id, tag: name, err: err.message }, 'ctx.tag: index not written; the next replay writes it'));
    return written;
  }

  log(message: string, fields: Record<string, unknown> = {}): void {
    // Past the last journaled step the flow runs ahead; before it, it is replaying what was logged.
    if (this.n >= this.journal.size) this.deps.log.info({ ...fields, flow: this.flow, instance: this.id }, message);
  }
}

export { encodeMessage };
