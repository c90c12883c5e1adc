/**
 * kill -9 of Switchboard mid-stream with a RabbitMQ source (issue 6: "kill -9 of Switchboard
 * mid-stream, same count"; DESIGN §2: at-least-once on every hop + dedup on every ingress).
 *
 * 2,000 messages are put on RabbitMQ first (queue "in", durable, through the HTTP API of a
 * route-less in-process gateway: API → mq:legacy/in). Then a gateway process (`switchboard start`)
 * with the route mq:legacy/in → queue:sink (concurrency 50) starts moving them and is killed with
 * SIGKILL part-way: whatever it took from RabbitMQ but had not settled goes back to the queue, and
 * whatever it had already put into queue:sink without settling comes again. A new process on the
 * same Redis prefix finishes; queue:sink's dedup must turn the redeliveries into nothing. Drained
 * with peek-lock receive/ack and counted by id: every id exactly once, nothing left on RabbitMQ.
 *
 * Real RabbitMQ 3.10 (AMQP 1.0 plugin), real redis-server; polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import { api, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, dlqDepth, drain, duplicatesCaught, queueState, sendAll } from '../support/counting-sink.ts';
import { GatewayFleet, logWarnings, prefixFor, sleep } from '../support/fleet.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

const SOURCE = 'mq:legacy/in';
const SINK = 'queue:sink';
const QUEUES = { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s' };
const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:legacy/**', verbs: ['send'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
const fleet = new GatewayFleet(() => redis!.url);

before(async () => {
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
});

after(async () => {
  await fleet.stopAll(20_000);
  await rabbit?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
});

function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    brokers: { legacy: { url: rabbit!.url, addressFormat: 'rabbitmq', maxAttempts: 3, sendTimeout: '5s' } },
    queues: QUEUES,
    permissions: PERMISSIONS,
    ...extra,
  };
}

/** Each message carries its id as a header too, to check headers survive RabbitMQ and the route. */
const withSeqHeader = (id: string) => ({ headers: { 'x-seq': id }, body: { id, pad: 'x'.repeat(200) } });

// ───────────────────────────── the test ─────────────────────────────

test('kill -9 of the gateway mid-stream from RabbitMQ (mq:legacy/in → route, concurrency 50 → queue:sink): a new process finishes, every one of 2,000 ids exactly once', { timeout: 600_000 }, async (t: TestContext) => {
  const N = 2000;
  const prefix = prefixFor('mqcrash');
  const ids = Array.from({ length: N }, (_, i) => `mqc-${String(i).padStart(5, '0')}`);
  const routeConfig = config({ routes: [{ from: SOURCE, to: SINK, concurrency: 50 }] });

  // A gateway without routes on the same prefix: the HTTP door that puts the load on RabbitMQ,
  // and an observer of queue:sink that keeps answering while the routing processes die.
  const observer = await fleet.start(prefix, { ...config(), log: { level: 'error' } });
  await waitFor(async () => (await api(observer.url, 'GET', '/readyz')).status === 200, 60_000, 'the observer to be connected to RabbitMQ');
  await sendAll(observer.url, SOURCE, ids, { message: withSeqHeader });
  const loaded = (await rabbit!.queues()).in;
  assert.deepEqual(loaded && { ready: loaded.ready, unacked: loaded.unacked }, { ready: N, unacked: 0 }, 'all messages wait on RabbitMQ before the route starts');

  const first = await fleet.spawn(prefix, routeConfig);
  // Kill once some, but not all, are at the sink.
  const deadline = Date.now() + 120_000;
  let atKillDepth = 0;
  for (;;) {
    const { depth } = await observer.router.browse(SINK, 1, SYSTEM_CALLER);
    if (depth >= N) throw new Error(`the route moved all ${N} messages before the kill: raise N`);
    if (depth >= N / 5) { atKillDepth = depth; break; }
    if (Date.now() > deadline) throw new Error(`the route did not start moving within 120 s (sink depth ${depth})\n${logWarnings(first)}`);
    await sleep(5);
  }
  const code = await first.kill('SIGKILL');
  const atKill = await queueState(observer.url, SINK);
  t.diagnostic(`killed gateway pid ${first.pid} (exit ${code}) with the sink at ≥${atKillDepth}; right after: ${JSON.stringify(atKill)}`);
  assert.ok(atKill.depth < N, `the kill was not mid-stream: ${JSON.stringify(atKill)}`);
  // RabbitMQ notices the dead connection and puts the unsettled deliveries back.
  const afterKill = await waitFor(async () => { const q = (await rabbit!.queues()).in; return q && q.unacked === 0 && q.consumers === 0 ? q : undefined; }, 60_000, 'RabbitMQ to requeue what the killed gateway held');
  t.diagnostic(`on RabbitMQ after the kill: ${JSON.stringify(afterKill)}; at the sink ${atKill.depth} (sum ${afterKill!.ready + atKill.depth}: above ${N} = taken and stored but not settled)`);

  const second = await fleet.spawn(prefix, routeConfig);
  await waitFor(async () => {
    const q = (await rabbit!.queues()).in;
    return q && q.ready === 0 && q.unacked === 0;
  }, 300_000, 'queue "in" on RabbitMQ to be empty after the restart').catch(async (err: Error) => {
    throw new Error(`${err.message}: RabbitMQ ${JSON.stringify((await rabbit!.queues()).in)}, sink ${JSON.stringify(await queueState(second.url, SINK))}; ` +
      `broker connection ${JSON.stringify((await api(second.url, 'GET', '/readyz')).body?.checks?.['endpoint:mq'])}\n--- second gateway warnings:\n${logWarnings(second)}`);
  });
  await sleep(2000); // anything still on its way would show up as an excess
  t.diagnostic(`redeliveries the restarted gateway caught as duplicates at the sink: ${await duplicatesCaught(second.url)}`);

  const counts = new Map<string, number>();
  const received = await drain(second.url, SINK, counts);
  assertExactlyOnce(ids, counts, `; state at kill ${JSON.stringify(atKill)}`);
  assert.equal(received.length, N);
  for (const m of received) {
    assert.deepEqual(m.sender, { kind: 'broker', name: 'legacy' });
    assert.equal(m.headers['x-seq'], m.id);
  }
  assert.deepEqual(await queueState(second.url, SINK), { depth: 0, inFlight: 0 });
  assert.equal(await dlqDepth(second.url, SINK), 0, 'dead letters at the sink');
  const q = (await rabbit!.queues()).in;
  assert.deepEqual(q && { ready: q.ready, unacked: q.unacked }, { ready: 0, unacked: 0 });
  await second.kill('SIGTERM');
});
