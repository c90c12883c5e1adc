import type { EventEmitter } from 'node:events';
import { Cluster, Redis } from 'ioredis';

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
 *
 * A cluster client has that fault, in its own way, and two more:
 * - Told to close while it waits to reconnect (every node gone, its node pool empty), it never
 *   ends either: the close waits for the pool to report itself drained, and an empty pool never
 *   does. The commands it holds (BZPOPMIN) stay pending. Such a close is finished the same way.
 * - A closed one does not stay ended. Its node pool reports itself drained once for every node
 *   that ends after the pool was emptied, and each report sets the client's status back to
 *   'close' (a live connection ends later than the idle ones, so nearly every close ends there).
 *   A command sent in 'close' waits for a reconnect that never comes, where in 'end' it fails at
 *   once; a BullMQ worker sends one more BZPOPMIN as it closes. An 'end' is therefore kept.
 * - A connect whose ready check fails (CLUSTER INFO says the cluster is down: a master failed and
 *   no replica is promoted yet) never settles: the client reconnects on its own, with a new
 *   connect, and the first one's promise is left pending. BullMQ awaits it to bring a worker's
 *   blocking connection back, and that worker's close then waits forever too. Here a connect
 *   also settles when the client becomes ready (resolved) or ends (rejected).
 * All of them left a gateway on a cluster, stopped soon after a master failed, waiting forever.
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

interface ClusterInternals {
  status: string;
  connectionPool: { getNodes(role?: 'all'): unknown[] };
  setStatus(status: string): void;
  flushQueue(err: Error): void;
}
type ClusterProto = Record<symbol, boolean> & {
  setStatus?(this: ClusterInternals, status: string): void;
  flushQueue?: unknown;
  disconnect(this: ClusterInternals, reconnect?: boolean): void;
  quit(this: ClusterInternals, ...args: unknown[]): Promise<unknown>;
  connect(this: ClusterInternals & EventEmitter): Promise<void>;
};
const clusterProto = Cluster.prototype as unknown as ClusterProto;

/**
 * True when a close of this cluster client can end only by our hand: no node is left to report
 * (waiting to reconnect, or already ended: a second close would leave it 'disconnecting').
 */
const nothingToDrain = (c: ClusterInternals) => c.status !== 'wait' && c.connectionPool?.getNodes('all').length === 0;
const finishClose = (c: ClusterInternals) => {
  if (c.status !== 'disconnecting') return;
  c.setStatus('end');
  c.flushQueue(new Error('Connection is closed.'));
};

if (!clusterProto[MARK] && typeof clusterProto.setStatus === 'function' && typeof clusterProto.flushQueue === 'function') {
  clusterProto[MARK] = true;
  const { setStatus, disconnect, quit, connect } = clusterProto;
  // 'close' follows 'end' only from a stale drain report: a reconnect goes through 'connecting'.
  clusterProto.setStatus = function (status) {
    if (this.status === 'end' && status === 'close') return;
    setStatus.call(this, status);
  };
  clusterProto.disconnect = function (reconnect = false) {
    const stuck = !reconnect && nothingToDrain(this);
    disconnect.call(this, reconnect);
    if (stuck) finishClose(this);
  };
  clusterProto.connect = function () {
    const attempt = connect.call(this);
    return new Promise<void>((resolve, reject) => {
      const settle = (done: () => void) => {
        this.off('ready', onReady);
        this.off('end', onEnd);
        done();
      };
      const onReady = () => settle(resolve);
      const onEnd = () => settle(() => reject(new Error('Connection is closed.')));
      this.once('ready', onReady);
      this.once('end', onEnd);
      attempt.then(() => settle(resolve), (err: unknown) => settle(() => reject(err)));
    });
  };
  clusterProto.quit = function (...args) {
    const stuck = nothingToDrain(this);
    const done = quit.apply(this, args);
    if (stuck) finishClose(this);
    return done;
  };
}
