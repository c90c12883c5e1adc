/**
 * `switchboard.message.replayed` survives a kill -9 of the gateway replaying (issue 18.1: events
 * "never lost, deduplicated by event id"; src/core/replay-intents.ts).
 *
 * Gateway A is killed -9 right after its replay of three dead letters moved the third (before the
 * event was recorded); gateway C right after the first of three moved. Neither got its event
 * out. Gateway B, started afterwards, finds both replay intents once their grace passed and
 * decides from Redis: one event for A's replay (3 replayed), one for C's (1 replayed; C's other
 * two dead letters are still dead letters and are not replayed from the intent). A replay on B
 * itself is one event too. The kill is a preload that patches BullMQ's Job.retry
 * (test/support/kill-after-retries.mjs), so the gateways run their own unmodified code.
 *
 * Real redis-server; gateways are child processes killed by PID; no timing assertions.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { drain, dlqDepth } from '../support/counting-sink.ts';
import { api, enc, spawnGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const SINK = 'queue:rc.sink';
const PREFIX = `rc${Math.random().toString(36).slice(2, 7)}`;
const KILL_HOOK = `--import ${join(import.meta.dirname, '..', 'support', 'kill-after-retries.mjs')}`;

let redis: TestRedis | undefined;
const gateways: GatewayProcess[] = [];

before(async () => {
  redis = await startTestRedis();
});

after(async () => {
  for (const g of gateways) await g.kill('SIGKILL').catch(() => {});
  await redis?.dispose();
});

const extra = {
  queues: { maxAttempts: 3, backoff: '100ms', lockTimeout: '3s', stalledCheck: '1s' },
  events: [{ types: ['switchboard.message.replayed'], to: SINK }],
  permissions: [
    { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] },
    { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
  ],
};

/** A gateway that kill -9s itself after its `killAfter`-th dead letter moved (0: never). */
async function gateway(killAfter: number): Promise<GatewayProcess> {
  process.env.SB_TEST_KILL_AFTER_RETRIES = String(killAfter);
  try {
    const g = await spawnGateway(redis!.url, extra, PREFIX, killAfter > 0 ? { nodeOptions: KILL_HOOK } : {});
    gateways.push(g);
    return g;
  } finally {
    delete process.env.SB_TEST_KILL_AFTER_RETRIES;
  }
}

/** Dead-letters `ids` in `address`: sent with an expiry just ahead, asked for once it passed. */
async function deadLetters(gw: GatewayProcess, address: string, ids: string[]): Promise<void> {
  for (const id of ids) {
    const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, expiresAt: new Date(Date.now() + 300).toISOString(), body: { id } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }
  await new Promise((r) => setTimeout(r, 500));
  const got = await api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 10, leaseSeconds: 30 } });
  assert.deepEqual(got.body.messages, []);
  assert.equal(await dlqDepth(gw.url, address), ids.length);
}

/** Replays every dead letter of `address` on a gateway that dies doing it. */
async function replayAndDie(gw: GatewayProcess, address: string): Promise<void> {
  await assert.rejects(api(gw.url, 'POST', `/api/dlq/${enc(address)}/replay`, { user: 'ops', body: {} }), 'the gateway died answering');
  assert.equal(await gw.kill(), null, 'killed by its signal');
}

test('a replay whose gateway is killed -9 before its event is recorded still gets exactly one event', { timeout: 120_000 }, async () => {
  const a = await gateway(3);
  await deadLetters(a, 'queue:rc.all', ['all-1', 'all-2', 'all-3']);
  await replayAndDie(a, 'queue:rc.all');

  const c = await gateway(1);
  await deadLetters(c, 'queue:rc.part', ['part-1', 'part-2', 'part-3']);
  await replayAndDie(c, 'queue:rc.part');

  const b = await gateway(0);
  assert.equal(await dlqDepth(b.url, 'queue:rc.all'), 0, 'A moved all three before it died');
  assert.equal(await dlqDepth(b.url, 'queue:rc.part'), 2, 'C moved one before it died');
  // A replay on B itself: one event, recorded by B after its replay.
  await deadLetters(b, 'queue:rc.here', ['here-1']);
  const here = await api(b.url, 'POST', `/api/dlq/${enc('queue:rc.here')}/replay`, { user: 'ops', body: { ids: ['here-1'] } });
  assert.equal(here.status, 200, JSON.stringify(here.body));
  assert.deepEqual(here.body, { replayed: 1 });

  const counts = new Map<string, number>();
  const events: { subject: string; data: Record<string, unknown> }[] = [];
  await waitFor(async () => {
    for (const m of await drain(b.url, SINK, counts)) events.push({ subject: m.body.subject, data: m.body.data });
    return events.length >= 3;
  }, 60_000, `three replayed events (got ${JSON.stringify(events)}): ${b.output().slice(-2000)}`);
  // Past another grace and poll: nothing more comes, each event id came once.
  await new Promise((r) => setTimeout(r, 4000));
  for (const m of await drain(b.url, SINK, counts)) events.push({ subject: m.body.subject, data: m.body.data });
  assert.deepEqual([...counts.values()], [1, 1, 1], `each event id once: ${JSON.stringify([...counts])}`);
  const by = Object.fromEntries(events.map((e) => [e.subject, e.data]));
  assert.deepEqual(by['queue:rc.all'], { address: 'queue:rc.all', replayed: 3 });
  assert.deepEqual(by['queue:rc.part'], { address: 'queue:rc.part', replayed: 1 });
  assert.deepEqual(by['queue:rc.here'], { address: 'queue:rc.here', replayed: 1, messageIds: ['here-1'] });
  // C's two other dead letters were not replayed from the intent: still dead letters.
  assert.equal(await dlqDepth(b.url, 'queue:rc.part'), 2);
  const r = new Redis(redis!.url);
  try {
    assert.equal(await r.zcard(`${PREFIX}:{replay-intents}`), 0, 'no intent left');
  } finally {
    r.disconnect();
  }
});
