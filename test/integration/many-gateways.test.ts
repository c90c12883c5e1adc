/**
 * Issue 15.4, many gateways: 3 `switchboard start` processes on one Redis share a route
 * (queue:mg.in → queue:mg.out), a flow with a timer (ctx.sleep, then ctx.send) and the singleton
 * duties held by leases (the decision sweeper, the tmp crash sweep; one bridge per peer works the
 * same way). While MG_MESSAGES messages (default 3,000) and MG_FLOWS flows (default 300) go in
 * through whichever gateway is up, the holder of the decision-sweeper lease is killed with kill -9
 * at a random point, MG_KILLS times (default 1), and a fresh process takes its place.
 * - every message reaches queue:mg.out exactly once, every flow's effect reaches
 *   queue:mg.flow-out exactly once;
 * - another process holds the lease within seconds; the takeover time is reported.
 * `npm run test:soak` runs the full size: 10,000 messages, 1,000 flows, 3 kills.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { leaseKey } from '../../src/store/lease.ts';
import { assertExactlyOnce } from '../support/counting-sink.ts';
import { GatewayFleet, prefixFor, sleep } from '../support/fleet.ts';
import { api, enc, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const MESSAGES = Number(process.env.MG_MESSAGES ?? 3000);
const FLOWS = Number(process.env.MG_FLOWS ?? 300);
const KILLS = Number(process.env.MG_KILLS ?? 1);
const PREFIX = prefixFor('mg');
const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'mg-flow',
  input: z.object({ n: z.number() }),
  async run(ctx, input) {
    await ctx.sleep('1s');
    await ctx.send('queue:mg.flow-out', { n: input.n });
    return { n: input.n };
  },
});
`;

let redis: TestRedis;
let client: Redis;
let flowsDir: string;
const fleet = new GatewayFleet(() => redis.url);
let live: GatewayProcess[] = [];
let bearer: Record<string, string> = {};

const extra = () => ({
  routes: [{ from: 'queue:mg.in', to: 'queue:mg.out' }],
  flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
  queues: { maxAttempts: 5, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' },
  permissions: [
    { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
    { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
  ],
});

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-mg-flows-'));
  writeFileSync(join(flowsDir, 'mg-flow.ts'), FLOW);
  live = await Promise.all([0, 1, 2].map(() => fleet.spawn(PREFIX, extra())));
  // A token: verified with a hash, not a password hash per request, so the load is the gateway's.
  const t = await api(live[0]!.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'many-gateways' } });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  bearer = { authorization: `Bearer ${t.body.token}` };
});

after(async () => {
  await fleet.stopAll();
  client?.disconnect();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

/** POSTs through the live gateways in turn until one answers 202 (a killed one refuses the connection). */
async function post(path: string, body: unknown, i: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const gw = live[(i + attempt) % live.length]!;
    const r = await api(gw.url, 'POST', path, { headers: bearer, body }).catch(() => undefined);
    if (r?.status === 202) return;
    if (attempt > 600) throw new Error(`${path} ${JSON.stringify(body)}: no gateway took it (last: ${r?.status} ${JSON.stringify(r?.body)})`);
    await sleep(50);
  }
}

const holderPid = async (duty: string) => Number((await client.get(leaseKey(PREFIX, duty)))?.split(':')[1] ?? 0);

/** Receives and acks `address` through any live gateway until empty; counts by `key(message)`. */
async function drainBy(address: string, counts: Map<string, number>, key: (m: { id: string; body: any }) => string): Promise<number> {
  let n = 0;
  for (;;) {
    const gw = live[0]!;
    const got = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { headers: bearer, body: { max: 500, leaseSeconds: 300 } });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    const messages = got.body.messages as { id: string; lease: string; body: any }[];
    if (messages.length === 0) return n;
    const ack = await api(gw.url, 'POST', `/api/queues/${enc(address)}/ack`, { headers: bearer, body: { leases: messages.map((m) => m.lease) } });
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    for (const m of messages) counts.set(key(m), (counts.get(key(m)) ?? 0) + 1);
    n += messages.length;
  }
}

test(`3 gateways, kill -9 of the lease holder ${KILLS}× at random points: ${MESSAGES} messages and ${FLOWS} flows each exactly once`, { timeout: 900_000 }, async (t) => {
  const started = Date.now();
  await waitFor(async () => (await holderPid('decision-sweeper')) > 0, 15_000, 'a decision-sweeper lease holder');
  const msgIds = Array.from({ length: MESSAGES }, (_, i) => `mg-${i}`);
  const flowNs = Array.from({ length: FLOWS }, (_, i) => i);
  // Work interleaved: a flow start after every MESSAGES/FLOWS messages.
  const work: (() => Promise<void>)[] = [];
  const every = Math.max(1, Math.floor(MESSAGES / Math.max(1, FLOWS)));
  let f = 0;
  msgIds.forEach((id, i) => {
    work.push(() => post('/api/messages', { to: 'queue:mg.in', id, body: { id } }, i));
    if (i % every === 0 && f < FLOWS) { const n = f++; work.push(() => post('/api/flows/mg-flow', { id: `start-${n}`, input: { n } }, n)); }
  });
  while (f < FLOWS) { const n = f++; work.push(() => post('/api/flows/mg-flow', { id: `start-${n}`, input: { n } }, n)); }

  const killAt = Array.from({ length: KILLS }, () => Math.floor(work.length * (0.15 + Math.random() * 0.7))).sort((a, b) => a - b);
  const takeovers: number[] = [];
  let next = 0;
  const killer = (async () => {
    for (const at of killAt) {
      await waitFor(async () => next >= at, 600_000, `work item ${at}`);
      const pid = await holderPid('decision-sweeper');
      const victim = live.find((p) => p.pid === pid) ?? live[0]!;
      live = live.filter((p) => p !== victim);
      await victim.kill('SIGKILL');
      const killedAt = Date.now();
      await waitFor(async () => { const h = await holderPid('decision-sweeper'); return h > 0 && h !== victim.pid; }, 30_000, 'another process to take the lease');
      takeovers.push(Date.now() - killedAt);
      t.diagnostic(`killed pid ${victim.pid} (lease holder) at work item ${at}; lease taken over after ${takeovers.at(-1)} ms`);
      live.push(await fleet.spawn(PREFIX, extra()));
    }
  })();
  await Promise.all(Array.from({ length: 12 }, async () => {
    while (next < work.length) await work[next++]!();
  }));
  await killer;
  const sentMs = Date.now() - started;

  const out = new Map<string, number>();
  const flowOut = new Map<string, number>();
  await waitFor(async () => {
    await drainBy('queue:mg.out', out, (m) => m.id);
    await drainBy('queue:mg.flow-out', flowOut, (m) => String(m.body.n));
    return out.size >= MESSAGES && flowOut.size >= FLOWS;
  }, 300_000, 'every message and every flow effect');
  await sleep(3000); // a late duplicate would show up now
  await drainBy('queue:mg.out', out, (m) => m.id);
  await drainBy('queue:mg.flow-out', flowOut, (m) => String(m.body.n));
  assertExactlyOnce(msgIds, out, ' (queue:mg.out)');
  assertExactlyOnce(flowNs.map(String), flowOut, ' (flow effects)');
  t.diagnostic(`${MESSAGES} messages + ${FLOWS} flows through 3 gateways: sent in ${(sentMs / 1000).toFixed(1)} s, all delivered after ${((Date.now() - started) / 1000).toFixed(1)} s; lease takeovers ${takeovers.join(', ')} ms`);
  assert.ok(takeovers.every((ms) => ms < 15_000), `takeover within seconds: ${takeovers.join(', ')} ms`);
});
