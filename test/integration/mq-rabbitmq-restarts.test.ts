/**
 * A route from RabbitMQ rides out graceful broker restarts, one after another (issue 14 point 10):
 * RabbitMQ 3.10 shutting down detaches the consumer link, ends the session and closes the
 * connection; the gateway must come back with exactly one consumer on the queue every time, and
 * its senders on the same connection must work again (a session the broker ended is dropped).
 *
 * Messages keep going API → mq:legacy/restarts.in → route → queue:restarts.sink throughout (two
 * senders retrying a 503 with the same id, as any client of an at-least-once API does). After each
 * restart: /readyz ready again, `rabbitmqctl list_queues` shows exactly 1 consumer on
 * restarts.in. At the end every id is at the sink exactly once, nothing left on RabbitMQ, and the
 * process printed no MaxListenersExceededWarning (one shared credit wait per sender).
 *
 * `npm test` runs 5 restarts (about a minute); `npm run test:soak` runs 30 (SB_RABBIT_RESTARTS=30).
 * Polls only, no timing assertions.
 */
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, waitFor } from '../support/gateway.ts';
import { assertExactlyOnce, drain, queueState } from '../support/counting-sink.ts';
import { GatewayFleet, prefixFor, sleep } from '../support/fleet.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const RESTARTS = Number(process.env.SB_RABBIT_RESTARTS ?? 5);
const QUEUE = 'restarts.in';
const SOURCE = `mq:legacy/${QUEUE}`;
const SINK = 'queue:restarts.sink';

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
const fleet = new GatewayFleet(() => redis!.url);
const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);

before(async () => {
  process.on('warning', onWarning);
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
});

after(async () => {
  process.off('warning', onWarning);
  await fleet.stopAll(20_000);
  await rabbit?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
});

async function consumersOn(queue: string): Promise<number | undefined> {
  return (await rabbit!.queues().catch(() => ({} as Record<string, { consumers: number }>)))[queue]?.consumers;
}

test(`${RESTARTS} graceful RabbitMQ restarts in a row with a route running: one consumer again after each, every message at the sink exactly once`, { timeout: 120_000 + RESTARTS * 60_000 }, async (t: TestContext) => {
  const g: Gateway = await fleet.start(prefixFor('restarts'), {
    brokers: { legacy: { url: rabbit!.url, addressFormat: 'rabbitmq', maxAttempts: 3, sendTimeout: '3s' } },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:legacy/**', verbs: ['send'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    routes: [{ from: SOURCE, to: SINK, concurrency: 10 }],
    log: { level: 'error' },
  });
  const base = g.url;
  await waitFor(async () => (await api(base, 'GET', '/readyz')).status === 200, 60_000, 'the gateway to be connected to RabbitMQ');
  await waitFor(async () => (await consumersOn(QUEUE)) === 1, 60_000, `a consumer on ${QUEUE}`);

  const ids: string[] = [];
  let stop = false;
  let refusals = 0;
  const senders = Promise.all([0, 1].map(async (lane) => {
    for (let i = 0; !stop; i++) {
      const id = `rs-${lane}-${String(i).padStart(5, '0')}`;
      ids.push(id);
      for (;;) {
        let status: number | string;
        try {
          status = (await api(base, 'POST', '/api/messages', { user: 'ops', body: { to: SOURCE, id, body: { id } } })).status;
        } catch {
          status = 'network';
        }
        if (status === 202) break;
        if (typeof status === 'number' && status < 500) throw new Error(`send ${id}: ${status}`);
        refusals++;
        await sleep(200);
      }
      await sleep(20);
    }
  }));

  const took: number[] = [];
  try {
    for (let n = 1; n <= RESTARTS; n++) {
      await sleep(1000); // some traffic before each restart
      const t0 = Date.now();
      await rabbit!.stop(false);
      await rabbit!.start();
      await waitFor(async () => (await api(base, 'GET', '/readyz')).status === 200, 120_000, `/readyz after restart ${n}`);
      const consumers = await waitFor(async () => consumersOn(QUEUE), 60_000, `${QUEUE} to have a consumer after restart ${n}`).catch(async (err: Error) => {
        throw new Error(`${err.message}: RabbitMQ ${JSON.stringify(await rabbit!.queues())}; /readyz ${JSON.stringify((await api(base, 'GET', '/readyz')).body)}`);
      });
      took.push(Date.now() - t0);
      assert.equal(consumers, 1, `restart ${n}: exactly one consumer on ${QUEUE}, got ${consumers}`);
    }
  } finally {
    stop = true;
    await senders;
  }
  t.diagnostic(`${RESTARTS} restarts, each until a consumer was back: ${took.map((ms) => (ms / 1000).toFixed(1)).join(', ')} s; ${ids.length} messages sent, ${refusals} sends retried (broker down)`);

  const counts = new Map<string, number>();
  await waitFor(async () => {
    await drain(base, SINK, counts);
    return counts.size >= ids.length;
  }, 120_000, `all ${ids.length} messages at the sink`).catch((err: Error) => { throw new Error(`${err.message}: ${counts.size} arrived`); });
  await waitFor(async () => { const q = (await rabbit!.queues())[QUEUE]; return q && q.ready === 0 && q.unacked === 0; }, 60_000, `${QUEUE} on RabbitMQ to be empty`);
  await sleep(1000);
  await drain(base, SINK, counts);
  assertExactlyOnce(ids, counts);
  assert.deepEqual(await queueState(base, SINK), { depth: 0, inFlight: 0 });
  const listenerWarnings = warnings.filter((w) => w.name === 'MaxListenersExceededWarning');
  assert.deepEqual(listenerWarnings.map((w) => w.message), [], 'no MaxListenersExceededWarning');
});
