import { SwitchboardError } from '../core/errors.ts';
import type { Logger } from 'pino';
import type { Router } from '../core/router.ts';
import { systemCaller, systemMessage } from '../core/system-message.ts';
import { Lease, leaseKey } from '../store/lease.ts';
import { storedTraceContext, withTraceContext, type TraceContext } from '../tracing/trace-context.ts';
import type { TaskStore } from './task-store.ts';
import { taskAddress } from './task-rules.ts';

export interface DecisionDeliveryOptions {
  store: TaskStore;
  router: Router;
  log: Logger;
  /**
   * How often undelivered decisions are sent again.
   * @defaultValue 10000
   */
  sweepEveryMs?: number;
}

/**
 * Sends a decision to whoever waits for it (the flow that asked, through the task's replyTo).
 * A decision is recorded first and delivered after, so a crash or an unreachable destination
 * in between leaves it marked undelivered; the sweeper sends those again. The decision message's
 * id is fixed per task (`task:<id>:decision`), which makes a repeat harmless at the receiver.
 * The sweeper is a singleton duty: one process of a fleet sweeps, the holder of the lease
 * `<prefix>:lease:decision-sweeper`; another takes over within seconds when it dies.
 */
export class DecisionDelivery {
  private sweeper?: NodeJS.Timeout;
  private readonly lease: Lease;

  constructor(private readonly o: DecisionDeliveryOptions) {
    this.lease = new Lease({ redis: o.store.redis, key: leaseKey(o.store.prefix, 'decision-sweeper'), log: o.log });
  }

  /**
   * Sends a decided task's decision, then marks it delivered; idempotent by message id.
   * `request`: the span of the HTTP request that made the decision, which the decision's span
   * links to (a decision the sweeper sends later has none to link).
   */
  async deliver(id: string, request?: TraceContext): Promise<void> {
    const task = await this.o.store.get(id);
    if (!task?.decision) return;
    if (task.replyTo) {
      await this.o.router.send(systemMessage({
        id: `task:${id}:decision`, to: task.replyTo, from: taskAddress(task),
        // On behalf of the person who decided, not the gateway: the flow sees who answered.
        sender: { kind: 'user', name: task.decision.by.replace(/^user:/, '') },
        // The decision continues the trace the task was asked in, however much later it comes.
        headers: withTraceContext({ 'switchboard-task': id }, storedTraceContext(task)),
        body: task.decision, createdAt: task.decision.at,
        ...(task.correlationId ? { correlationId: task.correlationId } : {}),
        // Why a link and not a parent: the decision's span stays a child of the task's trace, so
        // the business transaction (start → ask → decision → what the flow does next) remains one
        // trace, which is what an operator opens in Jaeger or Tempo (DESIGN §11). The click that
        // decided it is its own trace (the browser's, or a new one) and a request may come hours
        // after the ask; making it the parent would move everything after the decision into that
        // request's trace and cut the business trace in two. Trace UIs show a link on the span
        // (Jaeger "References", Tempo "Links") and jump to the other trace; the request's span
        // links back to the task's trace, so it can be followed from either side.
      }), { ...systemCaller('inbox', 'inbox'), ...(request ? { traceLinks: [request] } : {}) });
    }
    await this.o.store.notified(id);
  }

  /**
   * A destination that refuses the decision for good (403: the flow does not take it, e.g. a
   * task someone planted; 404: it is gone) will refuse it every time: the decision stays on the
   * task and in its history, and is not sent again. Anything else is retried by the sweep.
   */
  async failed(id: string, err: unknown): Promise<void> {
    const status = err instanceof SwitchboardError ? err.status : 0;
    if (status === 403 || status === 404) {
      this.o.log.error({ task: id, err: (err as Error).message }, 'decision refused by its destination; it will not be sent again');
      await this.o.store.notified(id);
      return;
    }
    this.o.log.warn({ task: id, err: (err as Error).message }, 'decision not delivered yet');
  }

  /** Sends every decision not yet delivered; one failure does not hold up the others. */
  async sweep(): Promise<void> {
    for (const id of await this.o.store.unnotified()) {
      await this.deliver(id).catch((err) => this.failed(id, err));
    }
  }

  /** While this process holds the sweeper's lease: sweeps at once, then every `sweepEveryMs`. */
  start(everyMs = this.o.sweepEveryMs ?? 10_000): void {
    this.lease.start({
      acquired: () => {
        void this.sweep().catch(() => {});
        this.sweeper = setInterval(() => void this.sweep().catch(() => {}), everyMs);
        this.sweeper.unref();
      },
      lost: () => {
        if (this.sweeper) clearInterval(this.sweeper);
        this.sweeper = undefined;
      },
    });
  }

  stop(): void {
    void this.lease.stop();
  }
}
