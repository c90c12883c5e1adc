import { Redis } from 'ioredis';

/**
 * ioredis (5.x) never ends a client told to `disconnect()` while it waits to reconnect: the
 * socket is already gone, so no close event comes, no 'end' is emitted and the commands it holds
 * (a BullMQ worker's BZPOPMIN) stay pending. BullMQ's `Worker.close()` waits for that 'end', so a
 * gateway stopped in the ~200 ms after its Redis restarted never finished stopping (ioredis#1247
 * and PR #2169, bullmq#4656, all open).
 *
 * Here such a close is finished the way ioredis finishes a manual one: status 'end', and what the
 * client held is failed. Applied once, on load, to every client in the process, including the
 * ones BullMQ duplicates.
 */
interface Internals {
  status: string;
  manuallyClosing: boolean;
  setStatus(status: 'end'): void;
  flushQueue(err: Error): void;
  /** Sent before the connection dropped, kept to be sent again on reconnect. */
  prevCommandQueue: { length: number; shift(): { command: { reject(err: Error): void } } | undefined } | null;
}

const MARK = Symbol.for('switchboard.ioredis-end-on-disconnect');
const proto = Redis.prototype as unknown as Record<symbol, boolean> & { disconnect(reconnect?: boolean): void };

if (!proto[MARK]) {
  proto[MARK] = true;
  const disconnect = proto.disconnect;
  proto.disconnect = function (this: Internals, reconnect = false) {
    const waitingToReconnect = this.status === 'reconnecting' && !reconnect;
    disconnect.call(this, reconnect);
    if (!waitingToReconnect || this.status !== 'reconnecting') return;
    // Internals an ioredis upgrade may rename: then nothing is done here, and the test of this module fails.
    if (typeof this.setStatus !== 'function' || typeof this.flushQueue !== 'function') return;
    const closed = new Error('Connection is closed.');
    this.manuallyClosing = false;
    this.setStatus('end');
    this.flushQueue(closed);
    for (let held = this.prevCommandQueue?.shift(); held; held = this.prevCommandQueue?.shift()) held.command.reject(closed);
    this.prevCommandQueue = null;
  };
}
