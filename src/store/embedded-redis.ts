import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { SwitchboardError } from '../core/errors.ts';

export class RedisNotInstalled extends SwitchboardError {
  constructor() {
    super('redis_missing', 'redis-server is not installed and no redis.url is configured: install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) or set redis.url / REDIS_URL to an existing Redis', 500);
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
  url: string;
  pid: number;
  port: number;
  /** SIGTERM (Redis flushes the AOF), SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** SIGKILL, for crash tests. */
  kill(): Promise<void>;
}

/**
 * A private redis-server owned by this gateway: loopback only, a free port, AOF on (fsync every
 * second) with data under `dir`, so queued messages survive a restart of the gateway.
 */
export async function startEmbeddedRedis(dir: string, options: { appendfsync?: 'always' | 'everysec'; port?: number } = {}): Promise<EmbeddedRedis> {
  const bin = redisServerBinary();
  if (!bin) throw new RedisNotInstalled();
  const dataDir = resolve(dir);
  mkdirSync(dataDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const child: ChildProcess = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--appendonly', 'yes', '--appendfsync', options.appendfsync ?? 'everysec', '--save', '', '--protected-mode', 'yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000); });
  child.stderr?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000); });
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new SwitchboardError('redis_start_failed', `redis-server did not become ready within 15 s: ${output.trim().split('\n').slice(-3).join(' | ')}`, 500)), 15_000);
    const onData = (d: Buffer) => {
      if (d.toString().includes('Ready to accept connections')) { clearTimeout(timer); res(); }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); rej(new SwitchboardError('redis_start_failed', `redis-server exited with code ${code}: ${output.trim().split('\n').slice(-3).join(' | ')}`, 500)); });
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    port,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
