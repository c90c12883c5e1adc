import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashPassword } from '../auth/password.ts';
import { loadConfig } from '../config/load.ts';
import { SwitchboardError } from '../core/errors.ts';
import { startGateway } from '../gateway.ts';
import { RedisNotInstalled, redisServerBinary } from '../store/embedded-redis.ts';

const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function checkConfigCommand(file?: string): void {
  const { file: path, config } = loadConfig(file);
  process.stdout.write(`${path}: OK (${config.routes.length} route(s), ${config.permissions.length} permission entr${config.permissions.length === 1 ? 'y' : 'ies'}, ${config.directory.type === 'file' ? `${config.directory.users.length} user(s)` : `ldap ${config.directory.url}`})\n`);
}

export async function hashPasswordCommand(): Promise<void> {
  const input = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
  if (input.length === 0) throw new SwitchboardError('usage', 'no password on stdin (e.g. `printf %s "$PW" | switchboard hash-password`)', 2);
  process.stdout.write(`${await hashPassword(input)}\n`);
}

/**
 * From a checkout running as root, a missing redis-server is installed with the project's own
 * services script (what `npm install && npm start` on a fresh machine needs); anywhere else the
 * user gets one line saying what to install.
 */
function installRedisIfPossible(): boolean {
  const script = join(projectRoot, 'scripts', 'services.sh');
  if (process.getuid?.() !== 0 || !existsSync(script)) return false;
  process.stderr.write('redis-server is missing: installing it with scripts/services.sh (apt-get)…\n');
  const r = spawnSync('bash', [script, 'install', 'redis'], { stdio: 'inherit' });
  return r.status === 0 && redisServerBinary() !== undefined;
}

export async function startCommand(file?: string): Promise<void> {
  const { config, file: path } = loadConfig(file);
  // Only the private redis-server needs the binary: a url, cluster or sentinel is someone else's Redis.
  const privateRedis = !config.redis.url && !config.redis.cluster && !config.redis.sentinel;
  if (privateRedis && !redisServerBinary() && !installRedisIfPossible()) throw new RedisNotInstalled();
  const gateway = await startGateway({ config });
  gateway.log.info({ config: path }, `Switchboard is running at ${gateway.url}`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gateway.log.info({ signal }, 'stopping: no new work; in-flight messages finish or go back to their queue');
    gateway.stop().then(
      () => process.exit(0),
      (err) => {
        gateway.log.error({ err: (err as Error).message }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

