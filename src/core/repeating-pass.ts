import type { Logger } from 'pino';

/**
 * A background pass run every `everyMs` that never overlaps itself: a tick while the previous pass
 * still runs is skipped, so a slow Redis cannot pile passes up. A failed pass is logged and the
 * next tick tries again; `stop` waits for the pass in flight.
 */
export class RepeatingPass {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(private readonly pass: () => Promise<void>, private readonly everyMs: number, private readonly log: Logger, private readonly failed: string) {}

  get started(): boolean {
    return this.timer !== undefined;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.pass().catch((err: Error) => this.log.warn({ err: err.message }, this.failed)).finally(() => { this.running = undefined; });
    }, this.everyMs);
    this.timer.unref();
  }

  /** Stops ticking; the pass in flight, if any, finishes (awaited). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
