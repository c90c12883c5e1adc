/**
 * RabbitMQ 3.10 (AMQP 1.0 plugin) stopped (SIGTERM) — and, separately, killed (kill -9) — for
 * about 20 s in the middle of 5,000 messages going API → mq:legacy/in → route → queue:sink
 * (DESIGN §9): /readyz and /metrics say the broker is down meanwhile and up after; every message
 * at the sink exactly once (counted by id with receive/ack), nothing left on RabbitMQ. Each case
 * has its own gateway (own broker connection), so a broker session lost in one cannot hide in,
 * or leak into, the other. A private RabbitMQ node and redis-server, stopped in after() by PID.
 *
 * Polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { api, enc, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, drain, duplicatesCaught, metric, queueState, receiveBatch } from '../support/counting-sink.ts';
import { sleep } from '../support/fleet.ts';
import { MqGateways, readyz } from '../support/mq-gateways.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
let flowsDir: string | undefined;
const gateways = new MqGateways(() => ({ redis: redis!, rabbit: rabbit!, flowsDir: flowsDir! }));

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-mq-outage-flows-'));
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
});

after(async () => {
  await gateways.fleet.stopAll(20_000);
  await rabbit?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

for (const { kill9, label } of [
  { kill9: false, label: 'stopped (SIGTERM)' },
  { kill9: true, label: 'killed (kill -9)' },
]) {
  test(`RabbitMQ ${label} for ~20 s in the middle of 5,000 messages API → mq:legacy/in → route → queue:sink: /readyz follows the broker; every message at the sink exactly once`, { timeout: 600_000 }, async (t: TestContext) => {
    const N = 5000;
    const OUTAGE_MS = 20_000;
    const tag = kill9 ? 'k' : 's';
    const SOURCE = `in.${tag}`;
    const SINK = `queue:sink.${tag}`;
    // Its own gateway: a route that dies with the broker must not be hidden by an earlier test's.
    const g = await gateways.start({ routes: [{ from: `mq:legacy/${SOURCE}`, to: SINK, concurrency: 20 }] });
    const base = g.url;
    const ids = Array.from({ length: N }, (_, i) => `out${tag}-${String(i).padStart(5, '0')}`);
    let sent = 0;
    const statuses = new Map<number | string, number>();
    const bump = (k: number | string) => statuses.set(k, (statuses.get(k) ?? 0) + 1);

    // 8 HTTP senders; a 503 (broker down) or a dropped connection is retried with the same id,
    // as any client of an at-least-once API does. Kept under the per-user login limit of 10.
    let next = 0;
    let stopSending = false;
    const senders = Promise.all(Array.from({ length: 8 }, async () => {
      while (next < ids.length && !stopSending) {
        const id = ids[next++]!;
        for (let attempt = 0; !stopSending; attempt++) {
          let status: number | string;
          try {
            const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: `mq:legacy/${SOURCE}`, id, body: { id, pad: 'p'.repeat(100) } } });
            status = r.status;
            if (r.status === 202) { sent++; break; }
            if (r.status < 500) throw new Error(`send ${id}: ${r.status} ${JSON.stringify(r.body)}`);
          } catch (err) {
            if ((err as Error).message.startsWith('send ')) throw err;
            status = 'network';
          }
          bump(status);
          assert.ok(attempt < 2000, `send ${id} still failing after ${attempt} attempts`);
          await sleep(200);
        }
      }
    }));
    try {
      await waitFor(async () => sent >= 1000, 120_000, '1,000 messages sent before the outage');
      const sinkAtStop = await queueState(base, SINK);
      const stoppedAt = Date.now();
      await rabbit!.stop(kill9);
      t.diagnostic(`RabbitMQ ${label} after ${sent} sends, sink ${JSON.stringify(sinkAtStop)}; the stop took ${Date.now() - stoppedAt} ms`);

      // /readyz: not ready, the broker down.
      const down = await waitFor(async () => {
        const r = await readyz(base);
        return r.status === 503 && r.body.checks?.['endpoint:mq']?.ok === false ? r : undefined;
      }, 30_000, '/readyz to show the broker down');
      assert.match(down!.body.checks['endpoint:mq'].detail, /legacy: (down|connecting)/);
      t.diagnostic(`/readyz while down: ${JSON.stringify(down!.body.checks['endpoint:mq'])}`);
      // /metrics: the broker connection gauge follows (collected every second).
      await waitFor(async () => (await metric(base, 'switchboard_connection_up', { kind: 'broker', name: 'legacy' })) === 0, 30_000, 'switchboard_connection_up{broker legacy} to be 0');
      const sentWhileDown = sent;
      await sleep(Math.max(0, OUTAGE_MS - (Date.now() - stoppedAt)));
      assert.equal((await readyz(base)).status, 503, 'still not ready at the end of the outage');
      t.diagnostic(`sends accepted during the outage: ${sent - sentWhileDown}; sink ${JSON.stringify(await queueState(base, SINK))}`);

      await rabbit!.start();
      const restartedAt = Date.now();
      await waitFor(async () => (await readyz(base)).status === 200, 120_000, '/readyz to be ready again after RabbitMQ is back');
      await waitFor(async () => (await metric(base, 'switchboard_connection_up', { kind: 'broker', name: 'legacy' })) === 1, 30_000, 'switchboard_connection_up{broker legacy} to be 1 again');
      t.diagnostic(`RabbitMQ down for ${restartedAt - stoppedAt} ms; /readyz ready ${Date.now() - restartedAt} ms after the restart`);
    } finally {
      await senders.catch((err: Error) => { stopSending = true; throw err; });
    }
    t.diagnostic(`all ${N} sends accepted; HTTP answers other than 202 on the way: ${JSON.stringify(Object.fromEntries(statuses))}`);

    // Drain the sink as the route fills it; give up (with the evidence) when it stops moving.
    const counts = new Map<string, number>();
    let received = 0;
    let lastProgress = Date.now();
    for (;;) {
      const got = (await receiveBatch(base, SINK, counts, { max: 500 })).length;
      received += got;
      if (counts.size >= N) break;
      if (got > 0) { lastProgress = Date.now(); continue; }
      if (Date.now() - lastProgress > 90_000) {
        const q = await rabbit!.ctl(['list_queues', '-q', 'name', 'messages_ready', 'messages_unacknowledged', 'consumers']);
        throw new Error(`the route mq:legacy/${SOURCE} → ${SINK} made no progress for 90 s after RabbitMQ came back: ${counts.size} of ${N} at the sink. ` +
          `RabbitMQ (name ready unacked consumers):\n${q}\n/readyz: ${JSON.stringify((await readyz(base)).body?.checks?.['endpoint:mq'])}\n--- gateway log:\n${gateways.recentLog(g)}`);
      }
      await sleep(500);
    }
    // Nothing late: the source queue on RabbitMQ is empty and a last look at the sink finds nothing.
    await waitFor(async () => { const q = (await rabbit!.queues())[SOURCE]; return q && q.ready === 0 && q.unacked === 0; }, 60_000, `queue ${SOURCE} on RabbitMQ to be empty`);
    await sleep(2000);
    received += (await drain(base, SINK, counts)).length;
    const dup = await duplicatesCaught(base);
    t.diagnostic(`received ${received} at the sink (${counts.size} distinct); duplicates caught at the sink's ingress: ${dup}`);
    assertExactlyOnce(ids, counts);
    assert.equal(received, N);
    assert.deepEqual(await queueState(base, SINK), { depth: 0, inFlight: 0 });
    const dlq = await api(base, 'GET', `/api/dlq/${enc(SINK)}`, { user: 'ops' });
    assert.equal(dlq.body.depth, 0);
  });
}
