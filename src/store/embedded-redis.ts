import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { SwitchboardError } from '../core/errors.ts';

export class RedisNotInstalled extends SwitchboardError {
  constructor() {
    super('redis_missing', 'redis-server is not installed and no redis.url, redis.cluster or redis.sentinel is configured: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) or set redis.url (or SWITCHBOARD_REDIS_URL) to an existing Redis', 500);
  }
}

/** Another live gateway runs the embedded Redis of this data folder: two would corrupt one AOF. */
export class DataDirInUse extends SwitchboardError {
  constructor(readonly dataDir: string, readonly owner: number) {
    super('redis_data_in_use', `the Redis data folder ${dataDir} is in use by another Switchboard process (pid ${owner}): stop it first, or give this gateway its own redis.dataDir`, 500);
  }
}

export function redisServerBinary(): string | undefined {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/opt/homebrew/bin/redis-server']) if (existsSync(p)) return p;
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() || undefined : undefined;
}

const handedOut = new Set<number>();

/**
 * A free loopback port, never one this process handed out before: a port freed by a stopped
 * server and handed to the next one would meet clients' pooled keep-alive sockets to the old one.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await anyFreePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  return anyFreePort();
}

function anyFreePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

export interface EmbeddedRedis {
  /** redis://:<password>@127.0.0.1:<port> */
  url: string;
  pid: number;
  port: number;
  /** True when this handle took over a redis-server left running by an earlier gateway. */
  adopted: boolean;
  /** SIGTERM (Redis flushes the AOF), SIGKILL after 10 s; releases the data folder. */
  stop(): Promise<void>;
  /** SIGKILL, for crash tests. */
  kill(): Promise<void>;
  /** Calls `fn` once if the server ends without stop() or kill() (killed from outside, crashed). */
  onUnexpectedExit(fn: () => void): void;
}

export interface EmbeddedRedisOptions {
  /** @defaultValue 'everysec' (up to a second of writes lost in a power cut; 'always' loses none) */
  appendfsync?: 'always' | 'everysec';
  /** Port for a newly started server; an adopted one keeps its own. @defaultValue a free port */
  port?: number;
}

/** Who runs the Redis of a data folder: the gateway process, and the redis-server it started. */
interface LockRecord {
  owner: number;
  pid?: number;
  port?: number;
}

const LOCK_FILE = 'switchboard-redis.lock.json';
const PASSWORD_FILE = 'switchboard-redis.password';
const CONF_FILE = 'switchboard-redis.conf';
const LOG_FILE = 'redis.log';

/**
 * The private redis-server of one data folder: loopback only, AOF on, `noeviction`, a random
 * password kept 0600 in the folder (reused on restart). Exactly one per data folder, ever: a lock
 * file names the gateway and the redis-server; a server orphaned by a gateway killed with -9 is
 * adopted (after checking it is a redis-server serving this folder) or stopped, never doubled.
 *
 * The server runs in its own session (`detached`), so a signal to the gateway's process group
 * (Ctrl-C, `kill -- -PGID`) reaches only the gateway, which drains and then stops Redis itself.
 */
export async function startEmbeddedRedis(dir: string, options: EmbeddedRedisOptions = {}): Promise<EmbeddedRedis> {
  const bin = redisServerBinary();
  if (!bin) throw new RedisNotInstalled();
  const dataDir = resolve(dir);
  mkdirSync(dataDir, { recursive: true });
  const password = readOrCreatePassword(dataDir);
  const lockPath = join(dataDir, LOCK_FILE);
  const previous = readLock(lockPath);
  if (previous && previous.owner !== process.pid && processState(previous.owner) === 'running') {
    throw new DataDirInUse(dataDir, previous.owner);
  }
  if (previous?.pid && previous.port && processState(previous.pid) === 'running') {
    if (await servesFolder(previous.pid, previous.port, dataDir, password)) {
      writeLock(lockPath, { owner: process.pid, pid: previous.pid, port: previous.port });
      return handle({ pid: previous.pid, port: previous.port, password, lockPath, adopted: true });
    }
    // A redis-server for this folder that we cannot use (another password, not answering): stop it.
    if (isRedisServer(previous.pid) && processCwd(previous.pid) === dataDir) await terminate(previous.pid, () => processState(previous.pid!) !== 'running');
  }
  writeLock(lockPath, { owner: process.pid });

  const port = options.port ?? (await freePort());
  // The password goes in a 0600 file, not on the command line where `ps` would show it.
  const conf = join(dataDir, CONF_FILE);
  writeFileSync(conf, `requirepass ${password}\n`, { mode: 0o600 });
  chmodSync(conf, 0o600);
  const logFile = join(dataDir, LOG_FILE);
  const logStart = existsSync(logFile) ? statSync(logFile).size : 0;
  const child = spawn(bin, [conf, '--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--appendonly', 'yes', '--appendfsync', options.appendfsync ?? 'everysec', '--save', '', '--protected-mode', 'yes', '--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--logfile', logFile], { detached: true, stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // Recorded before it is ready: a gateway killed during the start leaves a server the next one can find.
  writeLock(lockPath, { owner: process.pid, pid: child.pid!, port });
  const tail = () => logTail(logFile, logStart);
  const deadline = Date.now() + 15_000;
  for (let up = false; !up; ) {
    if (child.exitCode !== null || child.signalCode !== null) {
      writeLock(lockPath, { owner: process.pid });
      throw new SwitchboardError('redis_start_failed', `redis-server exited with code ${child.exitCode ?? child.signalCode}: ${tail()}`, 500);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new SwitchboardError('redis_start_failed', `redis-server did not become ready within 15 s: ${tail()}`, 500);
    }
    up = await probe(port, password, async (c) => (await c.ping()) === 'PONG').catch(() => false);
    if (!up) await new Promise((r) => setTimeout(r, 50));
  }
  return handle({ pid: child.pid!, port, password, lockPath, adopted: false, exited });
}

function handle(h: { pid: number; port: number; password: string; lockPath: string; adopted: boolean; exited?: Promise<void> }): EmbeddedRedis {
  let ending = false;
  const gone = () => processState(h.pid) !== 'running';
  // Our own child reports its exit; an adopted server is not our child, so it is watched with ps.
  const exited = h.exited ?? new Promise<void>((r) => {
    const timer = setInterval(() => { if (gone()) { clearInterval(timer); r(); } }, 1000);
    timer.unref();
  });
  const release = () => {
    const lock = readLock(h.lockPath);
    if (lock?.owner === process.pid && lock.pid === h.pid) rmSync(h.lockPath, { force: true });
  };
  return {
    url: `redis://:${encodeURIComponent(h.password)}@127.0.0.1:${h.port}`,
    pid: h.pid,
    port: h.port,
    adopted: h.adopted,
    async stop() {
      ending = true;
      await terminate(h.pid, gone, h.exited);
      release();
    },
    async kill() {
      ending = true;
      if (!gone()) process.kill(h.pid, 'SIGKILL');
      await (h.exited ?? waitUntil(gone, 5000));
    },
    onUnexpectedExit(fn) {
      void exited.then(() => { if (!ending) fn(); });
    },
  };
}

/** SIGTERM, then SIGKILL after 10 s; resolves when the process is gone (a zombie counts as gone). */
async function terminate(pid: number, gone: () => boolean, exited?: Promise<void>): Promise<void> {
  if (gone()) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const done = exited ?? waitUntil(gone, 15_000);
  const timer = setTimeout(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ } }, 10_000);
  await done;
  clearTimeout(timer);
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !cond() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
}

function readOrCreatePassword(dataDir: string): string {
  const path = join(dataDir, PASSWORD_FILE);
  try {
    writeFileSync(path, randomBytes(24).toString('hex'), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  chmodSync(path, 0o600);
  const password = readFileSync(path, 'utf8').trim();
  if (!/^[A-Za-z0-9]{16,}$/.test(password)) throw new SwitchboardError('redis_start_failed', `${path}: expected the embedded Redis password (16+ letters and digits); delete the file to have a new one made`, 500);
  return password;
}

function readLock(path: string): LockRecord | undefined {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as LockRecord;
    return typeof v.owner === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}

function writeLock(path: string, record: LockRecord): void {
  writeFileSync(path, `${JSON.stringify(record)}\n`, { mode: 0o600 });
}

/** 'running', or 'gone' for no such process and for a zombie nobody reaped (kill -0 succeeds on those). */
function processState(pid: number): 'running' | 'gone' {
  const r = spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' });
  const stat = r.status === 0 ? r.stdout.trim() : '';
  return stat === '' || stat.startsWith('Z') ? 'gone' : 'running';
}

function isRedisServer(pid: number): boolean {
  const r = spawnSync('ps', ['-o', 'comm=', '-p', String(pid)], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim().startsWith('redis-server');
}

/** Linux: redis-server chdirs into its --dir. Elsewhere undefined (the CONFIG GET check decides). */
function processCwd(pid: number): string | undefined {
  const r = spawnSync('readlink', [`/proc/${pid}/cwd`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Is `pid` a redis-server listening on `port` with our password and this data folder? */
async function servesFolder(pid: number, port: number, dataDir: string, password: string): Promise<boolean> {
  if (!isRedisServer(pid)) return false;
  return probe(port, password, async (c) => {
    const info = await c.info('server');
    const [, dir] = (await c.config('GET', 'dir')) as [string, string];
    return new RegExp(`^process_id:${pid}\\r?$`, 'm').test(info) && resolve(dir) === dataDir;
  }).catch(() => false);
}

/** One short-lived connection, no retries: for readiness and ownership checks. */
async function probe<T>(port: number, password: string, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, enableReadyCheck: false, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  c.on('error', () => {});
  try {
    await c.connect();
    return await fn(c);
  } finally {
    c.disconnect();
  }
}

function logTail(file: string, from: number): string {
  try {
    const size = statSync(file).size;
    const start = Math.max(from, size - 4000);
    const buf = Buffer.alloc(size - start);
    const fd = openSync(file, 'r');
    readSync(fd, buf, 0, buf.length, start);
    closeSync(fd);
    return buf.toString('utf8').trim().split('\n').slice(-3).join(' | ') || `(nothing in ${file})`;
  } catch {
    return `(no log at ${file})`;
  }
}
