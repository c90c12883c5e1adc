import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/store/embedded-redis.ts';

export interface TestRedis extends EmbeddedRedis {
  dir: string;
  /** Starts redis-server again on the same port with the same data (after stop or kill). */
  restart(): Promise<void>;
  /** Stops the server and deletes its folder. */
  dispose(): Promise<void>;
}

/**
 * A private redis-server for one test file: loopback, free port, own temp folder, AOF with
 * fsync on every write (so a kill -9 of Redis loses nothing that was acknowledged), stopped by PID.
 */
export async function startTestRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-redis-'));
  let current = await startEmbeddedRedis(dir, { appendfsync: 'always' });
  const port = current.port;
  const handle: TestRedis = {
    dir,
    url: current.url,
    port,
    get pid() {
      return current.pid;
    },
    get adopted() {
      return current.adopted;
    },
    onUnexpectedExit: (fn) => current.onUnexpectedExit(fn),
    stop: () => current.stop(),
    kill: () => current.kill(),
    async restart() {
      current = await startEmbeddedRedis(dir, { appendfsync: 'always', port });
    },
    async dispose() {
      await current.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return handle;
}
