import type { Logger } from 'pino';

/**
 * What the start has opened, to be closed last-first: on a failed start and on stop alike, each
 * step is undone after everything that was started on top of it (doors before flows, flows
 * before the router, the router before Redis). A failing undo is logged and the rest still run.
 */
export class Cleanup {
  private readonly undos: (() => Promise<unknown>)[] = [];

  constructor(private readonly log: Logger) {}

  /** Registers how to undo what was just started. */
  push(undo: () => Promise<unknown>): void {
    this.undos.push(undo);
  }

  /** Undoes everything registered, newest first; each undo runs once. */
  async run(): Promise<void> {
    for (const undo of this.undos.splice(0).reverse()) {
      await undo().catch((err) => this.log.error({ err: (err as Error).message }, 'error while stopping'));
    }
  }
}
