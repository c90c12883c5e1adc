/**
 * Issue 15.3: the flow run queue sharded. A gateway with one shard leaves timers in `{flow-runs}`;
 * the same keyspace restarted with 4 shards still runs them (a worker on `{flow-runs}` while it
 * holds jobs) and puts new runs in the queues of the instances' shards.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { shardOf, shardTag } from '../../src/store/redis.ts';
import { api, testConfig, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const NAP = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'nap',
  input: z.object({ s: z.string() }),
  async run(ctx, input) {
    await ctx.sleep(input.s);
    return 'rested';
  },
});
`;

let redis: TestRedis;
let flowsDir: string;
let gw: Gateway | undefined;
const PREFIX = `shr${Math.random().toString(36).slice(2, 7)}`;

async function gateway(shards: number): Promise<Gateway> {
  const raw = await testConfig(redis.url, {
    redis: { url: redis.url, prefix: PREFIX, shards },
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
    permissions: [{ group: 'ops', allow: [{ address: 'flow:**', verbs: ['start', 'browse'] }] }],
  });
  return startGateway({ config: parseConfig(stringify(raw), 'sharding.yaml', {}), log: createLogger('warn') });
}

async function status(id: string): Promise<string> {
  return (await api(gw!.url, 'GET', `/api/flows/nap/${id}`, { user: 'ops' })).body.status as string;
}

before(async () => {
  redis = await startTestRedis();
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-shard-flows-'));
  writeFileSync(join(flowsDir, 'nap.ts'), NAP);
});

after(async () => {
  await gw?.stop();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

test('timers left in {flow-runs} still fire after the switch to 4 shards; new runs go to the shard queues', { timeout: 120_000 }, async () => {
  gw = await gateway(1);
  const old = await api(gw.url, 'POST', '/api/flows/nap', { user: 'ops', body: { input: { s: '4s' } } });
  assert.equal(old.status, 202, JSON.stringify(old.body));
  const unsharded = new Queue('{flow-runs}', { connection: { url: redis.url }, prefix: PREFIX });
  try {
    await waitFor(async () => (await unsharded.getDelayedCount()) === 1, 20_000, 'the timer in {flow-runs}');
    await gw.stop();
    const sharded = await gateway(4);
    gw = sharded;
    const ids: string[] = [];
    for (let n = 0; n < 8; n++) {
      const r = await api(sharded.url, 'POST', '/api/flows/nap', { user: 'ops', body: { input: { s: '10m' } } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      ids.push(r.body.instanceId as string);
    }
    await waitFor(async () => (await status(old.body.instanceId as string)) === 'completed', 30_000, 'the instance with its timer in {flow-runs} to complete');
    const where = new Set<number>();
    for (let i = 0; i < 4; i++) {
      const q = new Queue(`{${shardTag('flow-runs', i)}}`, { connection: { url: redis.url }, prefix: PREFIX });
      try {
        await waitFor(async () => {
          const mine = ids.filter((id) => shardOf(id, 4) === i);
          const delayed = (await q.getDelayed()).map((j) => (j.data as { id: string }).id);
          return mine.every((id) => delayed.includes(id)) && delayed.every((id) => mine.includes(id));
        }, 20_000, `the timers of shard ${i} in its queue`);
        if (ids.some((id) => shardOf(id, 4) === i)) where.add(i);
      } finally {
        await q.close();
      }
    }
    assert.ok(where.size > 1, `runs in more than one shard queue: ${[...where].join(', ')}`);
    assert.equal(await unsharded.getDelayedCount(), 0, 'no new run in {flow-runs}');
  } finally {
    await unsharded.close();
  }
});
