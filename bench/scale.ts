/**
 * `node --import tsx bench/scale.ts [--messages 3000] [--flows 300] [--shards 1,12]`: is the work
 * spread over a Redis Cluster's masters (issue 15.3)? A private 3-master cluster; for each shard
 * count, one gateway on it with six routes (queue:sc.in.0…5 → webhook:sink, so every message
 * also goes through the webhook outbox; one address is one queue, in one slot, by design) and a flow that files a task for a person and calls the webhook.
 * Messages and flow starts go in over the HTTP API (an API token); the run ends when the webhook
 * receiver has every call. Per master: the commands it ran (INFO commandstats, reset before each
 * run) and its share; `max/min` near 1 means an even spread, a high one a hot node.
 * Writes bench/results/scale-<time>.json.
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
import { api, testConfig, waitFor } from '../test/support/gateway.ts';
import { startTestCluster } from '../test/support/redis-cluster.ts';

const { values } = parseArgs({ options: { messages: { type: 'string', default: '3000' }, flows: { type: 'string', default: '300' }, shards: { type: 'string', default: '1,12' } } });
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
let posts = 0;
const sink = createServer((req, res) => { req.resume(); req.on('end', () => { posts++; res.end(); }); });
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
try {
  for (const shards of SHARDS) {
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
    posts = 0;
    const started = Date.now();
    const work: (() => Promise<unknown>)[] = [
      ...Array.from({ length: MESSAGES }, (_, i) => () => api(gw.url, 'POST', '/api/messages', { headers, body: { to: `queue:sc.in.${i % 6}`, id: `m${i}`, body: { i } } })),
      ...Array.from({ length: FLOWS }, (_, n) => () => api(gw.url, 'POST', '/api/flows/scale-flow', { headers, body: { id: `f${n}`, input: { n } } })),
    ];
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => { while (next < work.length) await work[next++]!(); }));
    await waitFor(async () => posts >= MESSAGES + FLOWS, 600_000, 'every webhook call');
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
} finally {
  await new Promise<void>((r) => sink.close(() => r()));
  await cluster.stop();
  rmSync(flowsDir, { recursive: true, force: true });
}
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `scale-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ bench: 'scale', at: new Date().toISOString(), runs }, null, 2));
console.log(`wrote ${file}`);
