import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { hashPassword } from '../../src/auth/password.ts';
import { parseConfig } from '../../src/config/load.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';

/** Users of every test gateway: name → password. */
export const USERS = {
  ops: 'ops-pw',        // group ops: send, consume, browse on queue:**; admins: admin on **
  clerk: 'clerk-pw',    // group clerks: send to queue:in.*, browse queue:out.*
  nobody: 'nobody-pw',  // in no group: may do nothing
} as const;

let hashes: Promise<Record<string, string>> | undefined;
function userHashes(): Promise<Record<string, string>> {
  hashes ??= (async () => Object.fromEntries(await Promise.all(Object.entries(USERS).map(async ([u, p]) => [u, await hashPassword(p)]))))();
  return hashes;
}

/** A config object (as a YAML file would hold) for a test gateway on `redisUrl`. */
export async function testConfig(redisUrl: string, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const h = await userHashes();
  return {
    http: { port: 0, host: '127.0.0.1' },
    redis: { url: redisUrl, prefix: `t${Math.random().toString(36).slice(2, 8)}` },
    queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s' },
    log: { level: 'warn' },
    directory: {
      type: 'file',
      users: [
        { name: 'ops', passwordHash: h.ops, groups: ['ops', 'admins'] },
        { name: 'clerk', passwordHash: h.clerk, groups: ['clerks'] },
        { name: 'nobody', passwordHash: h.nobody, groups: [] },
      ],
    },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] },
      { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    ...extra,
  };
}

/** Starts an in-process gateway through the real config parser. */
export async function startTestGateway(redisUrl: string, extra: Record<string, unknown> = {}): Promise<Gateway> {
  const raw = await testConfig(redisUrl, extra);
  const config = parseConfig(stringify(raw), 'test-config.yaml', {});
  return startGateway({ config, log: createLogger(config.log.level) });
}

export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** Calls the HTTP API as `user` (undefined: no credentials). */
export async function api<T = any>(base: string, method: string, path: string, opts: { user?: keyof typeof USERS | { name: string; password: string }; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {}): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.user) {
    const [n, p] = typeof opts.user === 'string' ? [opts.user, USERS[opts.user]] : [opts.user.name, opts.user.password];
    headers.authorization = `Basic ${Buffer.from(`${n}:${p}`).toString('base64')}`;
  }
  let body: string | undefined = opts.rawBody;
  if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined) headers['content-type'] ??= 'application/json';
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, headers: res.headers, body: parsed as T };
}

export const enc = encodeURIComponent;

/** A gateway in its own process (`switchboard start`), for kill -9 tests. */
export interface GatewayProcess {
  url: string;
  pid: number;
  configFile: string;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  output(): string;
}

export async function spawnGateway(redisUrl: string, extra: Record<string, unknown> = {}, prefix?: string, opts: { nodeOptions?: string } = {}): Promise<GatewayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-gw-'));
  const port = await freePort();
  const raw = await testConfig(redisUrl, extra);
  (raw.http as Record<string, unknown>).port = port;
  if (prefix) (raw.redis as Record<string, unknown>).prefix = prefix;
  (raw.log as Record<string, unknown>).level = 'info';
  const configFile = join(dir, 'switchboard.yaml');
  writeFileSync(configFile, stringify(raw));
  const child: ChildProcess = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs'), 'start', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.nodeOptions ? { env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${opts.nodeOptions}`.trim() } } : {}) });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  child.stderr!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}: ${out}`);
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway not ready after 30 s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: child.pid!,
    configFile,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
    output: () => out,
  };
}

/** Polls `fn` until it returns a truthy value or the timeout passes. */
export async function waitFor<T>(fn: () => Promise<T>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
