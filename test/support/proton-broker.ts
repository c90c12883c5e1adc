import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/store/embedded-redis.ts';

/**
 * Qpid Proton's C example broker, compiled by `scripts/services.sh install proton-broker` into
 * .cache/proton-broker/broker: a small AMQP 1.0 broker nobody here wrote. Its nature, measured:
 * SASL ANONYMOUS only; queues made on first use and kept in memory only (a restart forgets
 * them); it settles a message when it sends it (a consumer cannot give it back); it honours
 * credit; no dead-letter queue; no temporary queues (a dynamic receiver given credit crashes it)
 * and no anonymous relay.
 */
export const PROTON_BROKER = join(import.meta.dirname, '..', '..', '.cache', 'proton-broker', 'broker');

export interface TestProtonBroker {
  /** amqp://127.0.0.1:<port> (SASL ANONYMOUS) */
  url: string;
  port: number;
  /** The broker's PID while it runs. */
  readonly pid: number | undefined;
  /** SIGTERM (or SIGKILL with kill9) by PID; start() again listens on the same port, empty. */
  stop(kill9?: boolean): Promise<void>;
  start(): Promise<void>;
  /** What the broker printed (it logs link and connection errors). */
  output(): string;
  dispose(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => res(false));
  });
}

/** Builds the broker with the project's services script when the binary is missing. */
function ensureBuilt(): void {
  if (existsSync(PROTON_BROKER)) return;
  const r = spawnSync('bash', [join(import.meta.dirname, '..', '..', 'scripts', 'services.sh'), 'install', 'proton-broker'], { stdio: 'inherit' });
  if (r.status !== 0 || !existsSync(PROTON_BROKER)) throw new Error(`Qpid Proton's example broker is not built (${PROTON_BROKER}); run: bash scripts/services.sh install proton-broker`);
}

/** A private Proton example broker on a free loopback port, in its own folder, stopped by PID. */
export async function startTestProtonBroker(): Promise<TestProtonBroker> {
  ensureBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'sb-proton-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let out = '';
  async function start(): Promise<void> {
    // It looks for ssl-certs/ in its working folder, finds none and says so: TLS off, as wanted.
    const c = spawn(PROTON_BROKER, ['127.0.0.1', String(port)], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    c.stdout!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
    c.stderr!.on('data', (d: Buffer) => { out = (out + d.toString()).slice(-20000); });
    const deadline = Date.now() + 20_000;
    while (!(await portOpen(port))) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`the Proton broker exited (${c.exitCode ?? c.signalCode}): ${out}`);
      if (Date.now() > deadline) throw new Error(`the Proton broker did not open port ${port} within 20 s: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async function stop(kill9 = false): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(kill9 ? 'SIGKILL' : 'SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  await start();
  return {
    url: `amqp://127.0.0.1:${port}`,
    port,
    get pid() {
      return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    stop,
    start,
    output: () => out,
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
