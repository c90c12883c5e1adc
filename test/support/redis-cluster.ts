import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, redisServerBinary } from '../../src/store/embedded-redis.ts';
import { waitFor } from './gateway.ts';

// Private Redis Clusters and Sentinel set-ups for tests and benches (the recipes in
// /work/shared/services/README.md): loopback, free ports, own temp folder, every process stopped
// by its PID.

export interface RedisNode {
  port: number;
  child: ChildProcess;
  url: string;
  /** kill -9 (failover tests); resolves once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  alive(): boolean;
}

export interface TestCluster {
  nodes: RedisNode[];
  /** `redis://127.0.0.1:<port>` of every node, for redis.cluster.nodes. */
  urls: string[];
  password?: string;
  /** redis-cli against one node: its stdout. */
  cli(port: number, ...args: string[]): string;
  /** Ports of the current masters (from CLUSTER NODES as seen by a live node). */
  masters(): number[];
  /** The node that is master of `slot` now (from CLUSTER NODES as seen by the first node). */
  masterOf(slot: number): RedisNode | undefined;
  stop(): Promise<void>;
}

function startNode(bin: string, dir: string, port: number, args: string[]): RedisNode {
  const folder = join(dir, String(port));
  mkdirSync(folder, { recursive: true });
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', folder, '--save', '', '--maxmemory-policy', 'noeviction', ...args], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    port,
    child,
    url: `redis://127.0.0.1:${port}`,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

function cliFor(password?: string) {
  return (port: number, ...args: string[]) => spawnSync('redis-cli', ['-p', String(port), ...(password ? ['-a', password, '--no-auth-warning'] : []), ...args], { encoding: 'utf8' }).stdout;
}

/**
 * A Redis Cluster of `masters` masters, each with `replicas` replicas, AOF (`appendfsync` as
 * given; `always` where a test counts what survives a kill), cluster-node-timeout 2000 ms.
 */
export async function startTestCluster(o: { masters?: number; replicas?: number; password?: string; appendfsync?: 'always' | 'everysec' } = {}): Promise<TestCluster> {
  const bin = redisServerBinary();
  if (!bin) throw new Error('redis-server is not installed');
  const masters = o.masters ?? 3;
  const replicas = o.replicas ?? 0;
  const dir = mkdtempSync(join(tmpdir(), 'sb-cluster-'));
  const auth = o.password ? ['--requirepass', o.password, '--masterauth', o.password] : [];
  const nodes: RedisNode[] = [];
  const nodeArgs = ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--appendonly', 'yes', '--appendfsync', o.appendfsync ?? 'everysec', ...auth];
  for (let i = 0; i < masters * (1 + replicas); i++) nodes.push(startNode(bin, dir, await freePort(), nodeArgs));
  const cli = cliFor(o.password);
  // A free port can be taken by another process before the node binds it; the node then exits at
  // once, and is started again on another port.
  for (let i = 0; i < nodes.length; i++) {
    for (let attempt = 1; ; attempt++) {
      const n = nodes[i]!;
      await waitFor(async () => !n.alive() || cli(n.port, 'ping').trim() === 'PONG', 15_000, `cluster node ${n.port}`);
      if (n.alive()) break;
      if (attempt === 3) throw new Error(`a cluster node exited at start three times (last on port ${n.port})`);
      nodes[i] = startNode(bin, dir, await freePort(), nodeArgs);
    }
  }
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes', ...(o.password ? ['-a', o.password, '--no-auth-warning'] : [])], { encoding: 'utf8' });
  if (!/All 16384 slots covered/.test(create.stdout)) throw new Error(`cluster create failed: ${create.stdout}${create.stderr}`);
  await waitFor(async () => nodes.every((n) => cli(n.port, 'cluster', 'info').includes('cluster_state:ok')), 30_000, 'cluster_state:ok on every node');
  if (replicas > 0) {
    // Replicas must have synced before a failover test kills their master.
    await waitFor(async () => nodes.filter((n) => /role:slave/.test(cli(n.port, 'info', 'replication'))).every((n) => /master_link_status:up/.test(cli(n.port, 'info', 'replication'))), 30_000, 'replicas in sync');
  }
  return {
    nodes,
    urls: nodes.map((n) => n.url),
    ...(o.password ? { password: o.password } : {}),
    cli,
    masters() {
      const live = nodes.find((n) => n.alive());
      if (!live) return [];
      return cli(live.port, 'cluster', 'nodes').split('\n').filter((l) => /\bmaster\b/.test(l) && !/\bfail\b/.test(l)).map((l) => Number(/:(\d+)@/.exec(l)?.[1])).filter((p) => p > 0);
    },
    masterOf(slot) {
      const owner = cli(nodes[0]!.port, 'cluster', 'nodes').split('\n').find((l) => /\bmaster\b/.test(l) && l.split(' ').slice(8).some((r) => {
        const [a, b] = r.split('-').map(Number);
        return slot >= a! && slot <= (b ?? a)!;
      }));
      return nodes.find((n) => owner?.includes(`:${n.port}@`));
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestSentinel {
  primary: RedisNode;
  /** The first replica (of `replicas`). */
  replica: RedisNode;
  replicas: RedisNode[];
  sentinel: RedisNode;
  /** The master name the sentinel monitors. */
  name: string;
  cli(port: number, ...args: string[]): string;
  /** Port of the primary as the sentinel names it now. */
  currentPrimary(): number;
  stop(): Promise<void>;
}

/** A primary, `replicas` replicas (default 1) and one redis-sentinel (quorum 1, down-after 2000 ms, failover-timeout 5000 ms). */
export async function startTestSentinel(o: { appendfsync?: 'always' | 'everysec'; replicas?: number } = {}): Promise<TestSentinel> {
  const bin = redisServerBinary();
  if (!bin) throw new Error('redis-server is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'sb-sentinel-'));
  const cli = cliFor();
  const persistence = ['--appendonly', 'yes', '--appendfsync', o.appendfsync ?? 'everysec'];
  const primary = startNode(bin, dir, await freePort(), persistence);
  await waitFor(async () => cli(primary.port, 'ping').trim() === 'PONG', 15_000, 'primary');
  const replicas: RedisNode[] = [];
  for (let i = 0; i < (o.replicas ?? 1); i++) {
    const replica = startNode(bin, dir, await freePort(), [...persistence, '--replicaof', '127.0.0.1', String(primary.port)]);
    await waitFor(async () => /master_link_status:up/.test(cli(replica.port, 'info', 'replication')), 15_000, 'replica in sync');
    replicas.push(replica);
  }
  const replica = replicas[0]!;
  const sport = await freePort();
  const name = 'sbmaster';
  const sdir = join(dir, 'sentinel');
  mkdirSync(sdir);
  const conf = join(sdir, 'sentinel.conf');
  writeFileSync(conf, [`port ${sport}`, 'bind 127.0.0.1', `dir ${sdir}`, `sentinel monitor ${name} 127.0.0.1 ${primary.port} 1`, `sentinel down-after-milliseconds ${name} 2000`, `sentinel failover-timeout ${name} 5000`, ''].join('\n'));
  const child = spawn(bin, [conf, '--sentinel'], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const sentinel: RedisNode = {
    port: sport, child, url: `redis://127.0.0.1:${sport}`,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
  await waitFor(async () => { const seen = cli(sport, 'sentinel', 'replicas', name); return replicas.every((r) => seen.includes(String(r.port))); }, 20_000, 'sentinel to see every replica');
  return {
    primary, replica, replicas, sentinel, name, cli,
    currentPrimary: () => Number(cli(sport, 'sentinel', 'get-master-addr-by-name', name).trim().split('\n')[1]),
    async stop() {
      await Promise.all([primary, ...replicas, sentinel].map((n) => { if (n.alive()) n.child.kill('SIGCONT'); return n.kill('SIGTERM'); }));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
