import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/store/embedded-redis.ts';

export interface TestRabbit {
  /** amqp://guest:guest@127.0.0.1:<port> */
  url: string;
  port: number;
  /** SIGTERM (or SIGKILL with kill9) of the whole process group; start() again reuses the data. */
  stop(kill9?: boolean): Promise<void>;
  start(): Promise<void>;
  /** Runs rabbitmqctl against this node (its HOME holds the Erlang cookie); resolves with stdout. */
  ctl(args: string[]): Promise<string>;
  /** Ready, unacknowledged and consumer counts of each queue on the node (rabbitmqctl list_queues). */
  queues(): Promise<Record<string, RabbitQueue>>;
  dispose(): Promise<void>;
}

export interface RabbitQueue {
  ready: number;
  unacked: number;
  consumers: number;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => res(false));
  });
}

/**
 * A private RabbitMQ node with the AMQP 1.0 plugin on free loopback ports, its own folder, started
 * with setsid so the whole process group (beam, epmd) is stopped by its PID.
 */
export async function startTestRabbit(): Promise<TestRabbit> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-rabbit-'));
  const port = await freePort();
  const dist = await freePort();
  writeFileSync(join(dir, 'enabled_plugins'), '[rabbitmq_amqp1_0].\n');
  writeFileSync(join(dir, 'rabbitmq.conf'), `loopback_users = none\nlisteners.tcp.default = 127.0.0.1:${port}\n`);
  let child: ChildProcess | undefined;
  const env = {
    ...process.env,
    RABBITMQ_NODENAME: `sbtest${port}@localhost`,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(dist),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
    HOME: dir,
  };
  async function start(): Promise<void> {
    const c = spawn('setsid', ['/usr/lib/rabbitmq/bin/rabbitmq-server'], { env, stdio: 'ignore', detached: false });
    child = c;
    const deadline = Date.now() + 60_000;
    while (!(await portOpen(port))) {
      if (c.exitCode !== null) throw new Error(`rabbitmq-server exited with ${c.exitCode}`);
      if (Date.now() > deadline) throw new Error('rabbitmq-server did not open its port within 60 s');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  async function stop(kill9 = false): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    try {
      process.kill(-c.pid!, kill9 ? 'SIGKILL' : 'SIGTERM');
    } catch {
      c.kill(kill9 ? 'SIGKILL' : 'SIGTERM');
    }
    const t = setTimeout(() => { try { process.kill(-c.pid!, 'SIGKILL'); } catch { /* gone */ } }, 20_000);
    await exited;
    clearTimeout(t);
    // The port is free again once beam is gone (it can outlive the wrapper for a moment).
    const deadline = Date.now() + 20_000;
    while ((await portOpen(port)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  }
  function ctl(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile('/usr/lib/rabbitmq/bin/rabbitmqctl', args, { env, timeout: 120_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`rabbitmqctl ${args.join(' ')}: ${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
  }
  async function queues(): Promise<Record<string, RabbitQueue>> {
    const out: Record<string, RabbitQueue> = {};
    for (const line of (await ctl(['list_queues', '-q', '--no-table-headers', 'name', 'messages_ready', 'messages_unacknowledged', 'consumers'])).split('\n')) {
      const [name, ready, unacked, consumers] = line.trim().split(/\s+/);
      if (name && /^\d+$/.test(ready ?? '') && /^\d+$/.test(unacked ?? '')) out[name] = { ready: Number(ready), unacked: Number(unacked), consumers: Number(consumers) };
    }
    return out;
  }
  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    port,
    stop,
    start,
    ctl,
    queues,
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
