import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

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
