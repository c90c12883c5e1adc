import type { Logger } from 'pino';
import type { Router } from '../core/router.ts';
import { systemCaller, systemMessage } from '../core/system-message.ts';
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
 */
export class DecisionDelivery {
  private sweeper?: NodeJS.Timeout;

  constructor(private readonly o: DecisionDeliveryOptions) {}

  /** Sends a decided task's decision, then marks it delivered; idempotent by message id. */
  async deliver(id: string): Promise<void> {
    const task = await this.o.store.get(id);
    if (!task?.decision) return;
    if (task.replyTo) {
      await this.o.router.send(systemMessage({
        id: `task:${id}:decision`, to: task.replyTo, from: taskAddress(task),
        // On behalf of the person who decided, not the gateway: the flow sees who answered.
        sender: { kind: 'user', name: task.decision.by.replace(/^user:/, '') },
        headers: { 'switchboard-task': id }, body: task.decision, createdAt: task.decision.at,
        ...(task.correlationId ? { correlationId: task.correlationId } : {}),
      }), systemCaller('inbox', 'inbox'));
    }
    await this.o.store.notified(id);
  }

  /** Sends every decision not yet delivered; one failure does not hold up the others. */
  async sweep(): Promise<void> {
    for (const id of await this.o.store.unnotified()) {
      await this.deliver(id).catch((err) => this.o.log.warn({ task: id, err: (err as Error).message }, 'decision not delivered yet'));
    }
  }

  /** Sweeps now and then every `sweepEveryMs`, without keeping the process alive. */
  start(everyMs = this.o.sweepEveryMs ?? 10_000): void {
    void this.sweep().catch(() => {});
    this.sweeper = setInterval(() => void this.sweep().catch(() => {}), everyMs);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
