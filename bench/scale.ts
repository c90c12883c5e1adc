/**
 * `node --import tsx bench/scale.ts [--messages 3000] [--flows 300] [--shards 1,12]`: is the work
 * spread over a Redis Cluster's masters (issue 15.3)? A private 3-master cluster; for each shard
 * count, one gateway on it with six routes (queue:sc.in.0…5 → webhook:sink, so every message
 * also goes through the webhook outbox; one address is one queue, in one slot, by design) and a flow that files a task for a person and calls the webhook.
 * Messages and flow starts go in over the HTTP API (an API token); the run ends when the webhook
 * receiver has every call. Per master: the commands it ran (INFO commandstats, reset before each
 * run) and its share; `max/min` near 1 means an even spread, a high one a hot node.
 *
 * Then the scale table (issue 15.8), `--procs 1,2,3` gateway processes (`switchboard start`, each
 * its own Node process) on one private redis-server and on the same 3-master cluster (12 shards),
 * all with the same six routes and flow, the HTTP senders spread round-robin over the processes:
 * route throughput (`--route-messages` messages → webhook:sink, until the receiver has every
 * call) and flow throughput (`--flow-runs` flow starts, until every flow's webhook call arrived),
 * each as msgs/s and as a ratio to 1 process on the same Redis in the same run, with the Redis CPU
 * (INFO cpu, summed over the masters) and the gateways' Node CPU (/proc/<pid>/stat, summed) per
 * message in ms. This machine has 2 cores: more processes cannot add cores, so the ratio shows the
 * coordination cost and CPU per message must stay flat. `--parts spread,procs` picks the parts.
 * The failover test's lost/duplicated counts are not measured here: they come from
 * test/integration/redis-failover.test.ts (see README, Benchmarks).
 *
 * Writes bench/results/scale-<time>.json (and the table as scale-<time>.txt).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { startGateway } from '../src/gateway.ts';
import { createLogger } from '../src/log.ts';
import { freePort } from '../src/store/embedded-redis.ts';
import { startEmbeddedRedis } from '../src/store/embedded-redis.ts';
import { openRedis } from '../src/store/redis.ts';
import { api, spawnGateway, testConfig, waitFor, type GatewayProcess } from '../test/support/gateway.ts';
import { processCpuSeconds, redisCpu, parseInfo } from './support/measure.ts';
import { startTestCluster } from '../test/support/redis-cluster.ts';

const { values } = parseArgs({ strict: false, options: { messages: { type: 'string', default: '3000' }, flows: { type: 'string', default: '300' }, shards: { type: 'string', default: '1,12' }, procs: { type: 'string', default: '1,2,3' }, 'route-messages': { type: 'string', default: '2000' }, 'flow-runs': { type: 'string', default: '300' }, parts: { type: 'string', default: 'spread,procs' } } }) as { values: Record<string, string> };
const PROCS = values.procs!.split(',').map(Number);
const ROUTE_MESSAGES = Number(values['route-messages']);
const FLOW_RUNS = Number(values['flow-runs']);
const PARTS = new Set(values.parts!.split(','));
const MESSAGES = Number(values.messages);
const FLOWS = Number(values.flows);
const SHARDS = values.shards!.split(',').map(Number);

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'scale-flow',
  input: z.object({ n: z.number() }),
  async run(ctx, input) {
    await ctx.send('person:bench-user', { n: input.n }, { subject: 'scale ' + input.n });
    await ctx.send('webhook:sink', { flow: input.n });
    return {};
  },
});
`;

const cluster = await startTestCluster({ masters: 3 });
const flowsDir = mkdtempSync(join(tmpdir(), 'sb-scale-flows-'));
writeFileSync(join(flowsDir, 'scale-flow.ts'), FLOW);
/** Webhook calls the sink got, by message id (x-switchboard-id): a repeat cannot hide a missing one. */
const calls = new Map<string, number>();
const sink = createServer((req, res) => {
  const id = String(req.headers['x-switchboard-id']);
  req.resume();
  req.on('end', () => { calls.set(id, (calls.get(id) ?? 0) + 1); res.end(); });
});
const repeats = () => [...calls.values()].reduce((n, c) => n + c - 1, 0);
/** A send or start the gateway did not accept (202) never reaches the sink: stop with its answer instead of waiting for it. */
async function accepted(call: Promise<{ status: number; body: unknown }>, what: string): Promise<void> {
  const r = await call;
  if (r.status !== 202) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
}
const sinkPort = await freePort();
await new Promise<void>((r) => sink.listen(sinkPort, '127.0.0.1', () => r()));

function commandstats(port: number): number {
  const text = cluster.cli(port, 'info', 'commandstats');
  return [...text.matchAll(/calls=(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
}

/** The lowest slot a master serves (from CLUSTER SLOTS). */
function lowestSlot(port: number): number {
  const lines = cluster.cli(port, 'cluster', 'slots').split('\n').map((l) => l.trim());
  let low = 16384;
  for (let i = 0; i + 3 < lines.length; i++) {
    if (/^\d+$/.test(lines[i]!) && /^\d+$/.test(lines[i + 1]!) && lines[i + 2] === '127.0.0.1' && Number(lines[i + 3]) === port) low = Math.min(low, Number(lines[i]));
  }
  return low;
}

const runs: Record<string, unknown>[] = [];
const scaleRows: ScaleRow[] = [];
interface ScaleRow { redis: 'single' | 'cluster'; procs: number; routePerSecond: number; routeRatio: number; routeRedisCpuMs: number; routeNodeCpuMs: number; flowPerSecond: number; flowRatio: number; flowRedisCpuMs: number; flowNodeCpuMs: number }
const single = PARTS.has('procs') ? await startEmbeddedRedis(mkdtempSync(join(tmpdir(), 'sb-scale-single-'))) : undefined;
try {
  for (const shards of PARTS.has('spread') ? SHARDS : []) {
    const raw = await testConfig('unused', {
      redis: { cluster: { nodes: cluster.urls }, prefix: `sc${shards}`, shards },
      routes: Array.from({ length: 6 }, (_, i) => ({ from: `queue:sc.in.${i}`, to: 'webhook:sink' })),
      flows: { dir: flowsDir },
      webhooks: { sink: { url: `http://127.0.0.1:${sinkPort}/`, secret: 'scale-secret-1234567890' } },
      permissions: [
        { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start'] }] },
        { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
      ],
      log: { level: 'error' },
    });
    const gw = await startGateway({ config: parseConfig(stringify(raw), 'scale.yaml', {}), log: createLogger('error') });
    const token = (await api(gw.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'scale' } })).body.token as string;
    const headers = { authorization: `Bearer ${token}` };
    const masters = cluster.masters();
    for (const p of masters) cluster.cli(p, 'config', 'resetstat');
    calls.clear();
    const started = Date.now();
    const work: (() => Promise<unknown>)[] = [
      ...Array.from({ length: MESSAGES }, (_, i) => () => accepted(api(gw.url, 'POST', '/api/messages', { headers, body: { to: `queue:sc.in.${i % 6}`, id: `m${i}`, body: { i } } }), `message m${i}`)),
      ...Array.from({ length: FLOWS }, (_, n) => () => accepted(api(gw.url, 'POST', '/api/flows/scale-flow', { headers, body: { id: `f${n}`, input: { n } } }), `flow start f${n}`)),
    ];
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => { while (next < work.length) await work[next++]!(); }));
    await waitFor(async () => calls.size >= MESSAGES + FLOWS, 600_000, 'every webhook call (distinct ids)');
    if (repeats() > 0) console.log(`note: ${repeats()} webhook call(s) repeated (at-least-once towards a webhook; counted once)`);
    const seconds = (Date.now() - started) / 1000;
    // Masters in slot order (the first serves the lowest slots), so runs compare node by node.
    masters.sort((a, b) => lowestSlot(a) - lowestSlot(b));
    const ops = Object.fromEntries(masters.map((p) => [`127.0.0.1:${p}`, commandstats(p)]));
    const counts = Object.values(ops);
    const total = counts.reduce((a, b) => a + b, 0);
    const run = { shards, messages: MESSAGES, flows: FLOWS, seconds, perNodeOps: ops, shares: counts.map((c) => Number((c / total).toFixed(3))), maxOverMin: Number((Math.max(...counts) / Math.max(1, Math.min(...counts))).toFixed(2)) };
    runs.push(run);
    console.log(`shards ${shards}: ${MESSAGES} messages + ${FLOWS} flows in ${seconds.toFixed(1)} s; commands per master ${counts.join(' / ')} (shares ${run.shares.join(' / ')}, max/min ${run.maxOverMin})`);
    await gw.stop();
  }
  if (single) {
    const admin = await openRedis(single.url);
    const topologies = [
      { name: 'single' as const, redis: (prefix: string) => ({ url: single.url, prefix }), cpu: () => redisCpu(admin) },
      { name: 'cluster' as const, redis: (prefix: string) => ({ cluster: { nodes: cluster.urls }, prefix, shards: 12 }), cpu: async () => cluster.masters().reduce((a, p) => { const c = parseInfo(cluster.cli(p, 'info', 'cpu').replace(/\r?\n/g, '\r\n')); return a + Number(c.used_cpu_user ?? 0) + Number(c.used_cpu_sys ?? 0); }, 0) },
    ];
    try {
      for (const topo of topologies) {
        for (const n of PROCS) {
          const prefix = `sp${topo.name[0]}${n}${Math.random().toString(36).slice(2, 6)}`;
          const extra = {
            redis: topo.redis(prefix),
            routes: Array.from({ length: 6 }, (_, i) => ({ from: `queue:sc.in.${i}`, to: 'webhook:sink' })),
            flows: { dir: flowsDir },
            webhooks: { sink: { url: `http://127.0.0.1:${sinkPort}/`, secret: 'scale-secret-1234567890' } },
            permissions: [
              { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start'] }] },
              { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
            ],
          };
          const gws: GatewayProcess[] = [];
          try {
            for (let i = 0; i < n; i++) gws.push(await spawnGateway('unused', extra, prefix));
            const token = (await api(gws[0]!.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'scale' } })).body.token as string;
            const headers = { authorization: `Bearer ${token}` };
            const phase = async (count: number, one: (i: number, url: string) => Promise<unknown>) => {
              calls.clear();
              const r0 = await topo.cpu();
              const n0 = gws.reduce((a, g) => a + (processCpuSeconds(g.pid) ?? 0), 0);
              const t0 = Date.now();
              let next = 0;
              await Promise.all(Array.from({ length: 16 }, async () => { while (next < count) { const i = next++; await one(i, gws[i % n]!.url); } }));
              await waitFor(async () => calls.size >= count, 600_000, 'every webhook call (distinct ids)');
              if (repeats() > 0) console.log(`note: ${repeats()} webhook call(s) repeated (at-least-once towards a webhook; counted once)`);
              const seconds = (Date.now() - t0) / 1000;
              const redisMs = ((await topo.cpu()) - r0) * 1000 / count;
              const nodeMs = (gws.reduce((a, g) => a + (processCpuSeconds(g.pid) ?? 0), 0) - n0) * 1000 / count;
              return { perSecond: count / seconds, redisMs, nodeMs };
            };
            const route = await phase(ROUTE_MESSAGES, (i, url) => accepted(api(url, 'POST', '/api/messages', { headers, body: { to: `queue:sc.in.${i % 6}`, id: `m${i}`, body: { i } } }), `message m${i}`));
            const flow = await phase(FLOW_RUNS, (i, url) => accepted(api(url, 'POST', '/api/flows/scale-flow', { headers, body: { id: `f${i}`, input: { n: i } } }), `flow start f${i}`));
            const base = scaleRows.find((r) => r.redis === topo.name && r.procs === PROCS[0]);
            const row: ScaleRow = {
              redis: topo.name, procs: n,
              routePerSecond: Math.round(route.perSecond), routeRatio: Number((base ? route.perSecond / base.routePerSecond : 1).toFixed(2)), routeRedisCpuMs: Number(route.redisMs.toFixed(3)), routeNodeCpuMs: Number(route.nodeMs.toFixed(3)),
              flowPerSecond: Math.round(flow.perSecond), flowRatio: Number((base ? flow.perSecond / base.flowPerSecond : 1).toFixed(2)), flowRedisCpuMs: Number(flow.redisMs.toFixed(3)), flowNodeCpuMs: Number(flow.nodeMs.toFixed(3)),
            };
            scaleRows.push(row);
            console.log(`${topo.name} × ${n}: route ${row.routePerSecond}/s (${row.routeRatio}×, Redis ${row.routeRedisCpuMs} ms + Node ${row.routeNodeCpuMs} ms CPU/msg), flow ${row.flowPerSecond}/s (${row.flowRatio}×, Redis ${row.flowRedisCpuMs} ms + Node ${row.flowNodeCpuMs} ms CPU/flow)`);
          } finally {
            for (const g of gws) await g.kill('SIGTERM').catch(() => undefined);
          }
        }
      }
    } finally {
      admin.disconnect();
    }
  }
} finally {
  await single?.stop().catch(() => single.kill());
  await new Promise<void>((r) => sink.close(() => r()));
  await cluster.stop();
  rmSync(flowsDir, { recursive: true, force: true });
}
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `scale-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
const table = scaleTable(scaleRows);
if (table) console.log(`\n${table}\n\nfailover (not measured here): lost/duplicated acknowledged messages come from test/integration/redis-failover.test.ts; last measured numbers in README, Benchmarks`);
writeFileSync(file, JSON.stringify({ bench: 'scale', at: new Date().toISOString(), settings: { messages: MESSAGES, flows: FLOWS, shards: SHARDS, procs: PROCS, routeMessages: ROUTE_MESSAGES, flowRuns: FLOW_RUNS, parts: [...PARTS] }, runs, scale: scaleRows }, null, 2));
if (table) writeFileSync(file.replace(/\.json$/, '.txt'), `${table}\n`);
console.log(`wrote ${file}`);

function scaleTable(rows: ScaleRow[]): string {
  if (!rows.length) return '';
  const head = ['redis', 'procs', 'route msg/s', 'ratio', 'Redis CPU ms/msg', 'Node CPU ms/msg', 'flows/s', 'ratio', 'Redis CPU ms/flow', 'Node CPU ms/flow'];
  const body = rows.map((r) => [r.redis, String(r.procs), String(r.routePerSecond), r.routeRatio.toFixed(2), r.routeRedisCpuMs.toFixed(2), r.routeNodeCpuMs.toFixed(2), String(r.flowPerSecond), r.flowRatio.toFixed(2), r.flowRedisCpuMs.toFixed(2), r.flowNodeCpuMs.toFixed(2)]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ');
  return [line(head), line(w.map((x) => '─'.repeat(x))), ...body.map(line)].join('\n');
}
