import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import pino from 'pino';
import { stringify } from 'yaml';
import { FloatTunnelClient } from '../../src/network/float-tunnel-client.ts';
import { NetworkMap } from '../../src/network/network-map.ts';

/** A float in its own process (`switchboard float`), for kill -9 tests; `start` again after a kill. */
export interface FloatProcess {
  readonly pid: number;
  configFile: string;
  start(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  output(): string;
  dispose(): Promise<void>;
}

/** Writes `config` (a float.yaml as an object) and starts the float; resolves once its tunnel listens. */
export async function spawnFloat(config: Record<string, unknown>): Promise<FloatProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-float-'));
  const configFile = join(dir, 'float.yaml');
  writeFileSync(configFile, stringify(config));
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let out = '';
  const handle: FloatProcess = {
    get pid() {
      return child?.pid ?? 0;
    },
    configFile,
    async start() {
      out = '';
      const c = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs'), 'float', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      c.stdout!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-40000); });
      c.stderr!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-40000); });
      exited = new Promise<void>((r) => c.once('exit', () => r()));
      const deadline = Date.now() + 30_000;
      while (!out.includes('float started')) {
        if (c.exitCode !== null) throw new Error(`float exited with ${c.exitCode}: ${out}`);
        if (Date.now() > deadline) {
          c.kill('SIGKILL');
          throw new Error(`float not started after 30 s: ${out}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
    output: () => out,
    async dispose() {
      await handle.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await handle.start();
  return handle;
}

/** Files (paths) for a tunnel client made outside a gateway: what a hostile or misconfigured client would present. */
export interface TunnelClientFiles {
  url: string;
  key: string;
  cert: string;
  ca: string;
  floatSubject: string;
  peerKey: string;
  peerCert: string;
}

/**
 * A gateway's tunnel client on its own (no gateway behind it: nothing may come through, and its
 * lease lives under a throwaway prefix of `redisUrl`). `close` also ends its Redis connection.
 */
export function standaloneTunnel(f: TunnelClientFiles, redisUrl: string): { client: FloatTunnelClient; close(): Promise<void> } {
  const redis = new Redis(redisUrl);
  const log = pino({ level: 'silent' });
  const client = new FloatTunnelClient({
    url: f.url, key: readFileSync(f.key, 'utf8'), cert: readFileSync(f.cert, 'utf8'), ca: readFileSync(f.ca, 'utf8'), floatSubject: f.floatSubject,
    peerKey: readFileSync(f.peerKey, 'utf8'), peerCert: readFileSync(f.peerCert, 'utf8'), credit: 5,
    map: new NetworkMap({ peers: [], log }), redis, prefix: `standalone${Math.random().toString(36).slice(2, 8)}`, log, onNotice: async () => {},
  });
  client.start({ take: async () => { throw new Error('a standalone tunnel takes nothing'); } });
  return { client, async close() { await client.close(); redis.disconnect(); } };
}
