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
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, spawnGateway, startTestGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const SOURCE = 'mq:legacy/in';
const SINK = 'queue:sink';
const QUEUES = { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s' };
const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:legacy/**', verbs: ['send'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
const gateways: Gateway[] = [];
const processes: GatewayProcess[] = [];

before(async () => {
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
});

after(async () => {
  for (const p of processes) await p.kill('SIGKILL').catch(() => {});
  for (const g of gateways.reverse()) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([g.stop().catch(() => {}), new Promise((r) => { timer = setTimeout(r, 20_000); })]);
    clearTimeout(timer);
  }
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

// ───────────────────────────── rabbitmqctl ─────────────────────────────

/** The harness's folder for this node (found by its port in rabbitmq.conf): HOME has the Erlang cookie. */
function rabbitHome(): string {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith('sb-rabbit-')) continue;
    try {
      if (readFileSync(join(tmpdir(), name, 'rabbitmq.conf'), 'utf8').includes(`:${rabbit!.port}\n`)) return join(tmpdir(), name);
    } catch { /* another run's folder going away */ }
  }
  throw new Error(`no RabbitMQ folder for port ${rabbit!.port}`);
}

/** Ready, unacknowledged and consumer counts of each queue on the node. */
function rabbitQueues(): Promise<Record<string, { ready: number; unacked: number; consumers: number }>> {
  const env = { ...process.env, HOME: rabbitHome(), RABBITMQ_NODENAME: `sbtest${rabbit!.port}@localhost` };
  return new Promise((resolve, reject) => {
    execFile('/usr/lib/rabbitmq/bin/rabbitmqctl', ['list_queues', '-q', '--no-table-headers', 'name', 'messages_ready', 'messages_unacknowledged', 'consumers'], { env, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`rabbitmqctl list_queues: ${err.message}\n${stderr}`));
      const out: Record<string, { ready: number; unacked: number; consumers: number }> = {};
      for (const line of stdout.split('\n')) {
        const [name, ready, unacked, consumers] = line.trim().split(/\s+/);
        if (name && /^\d+$/.test(ready ?? '') && /^\d+$/.test(unacked ?? '')) out[name] = { ready: Number(ready), unacked: Number(unacked), consumers: Number(consumers) };
      }
      resolve(out);
    });
  });
}

// ───────────────────────────── HTTP helpers ─────────────────────────────

interface QueueState { depth: number; inFlight: number }

async function state(base: string, address: string): Promise<QueueState> {
  const r = await api(base, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  assert.equal(r.status, 200, `browse ${address}: ${JSON.stringify(r.body)}`);
  return { depth: r.body.depth, inFlight: r.body.inFlight };
}

/** Sends every id over the HTTP API (8 requests in flight, under the per-user login limit); each must get 202. */
async function sendAll(base: string, to: string, ids: string[], parallel = 8): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { to, id, headers: { 'x-seq': id }, body: { id, pad: 'x'.repeat(200) } } });
      assert.equal(r.status, 202, `send ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, false, `send ${id} was reported as a duplicate`);
    }
  }));
}

/** Receives and acks `address` until a receive comes back empty; counts the acknowledged ids. */
async function drain(base: string, address: string, counts: Map<string, number>): Promise<number> {
  let n = 0;
  for (;;) {
    const got = await api(base, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max: 200, leaseSeconds: 300 } });
    assert.equal(got.status, 200, `receive: ${JSON.stringify(got.body)}`);
    const messages = got.body.messages as { id: string; lease: string; sender: unknown; headers: Record<string, string> }[];
    if (messages.length === 0) return n;
    const ack = await api(base, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: messages.map((m) => m.lease) } });
    assert.equal(ack.status, 200, `ack: ${JSON.stringify(ack.body)}`);
    assert.deepEqual(ack.body.expired, [], 'a 300 s lease expired during the drain');
    for (const m of messages) {
      counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
      assert.deepEqual(m.sender, { kind: 'broker', name: 'legacy' });
      assert.equal(m.headers['x-seq'], m.id);
    }
    n += messages.length;
  }
}

function assertExactlyOnce(ids: string[], counts: Map<string, number>, context = ''): void {
  const expected = new Set(ids);
  const missing = ids.filter((id) => !counts.has(id));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  assert.ok(
    missing.length === 0 && duplicated.length === 0 && extra.length === 0,
    `expected each of ${ids.length} ids exactly once; received ${counts.size} distinct ids — ` +
      `missing ${missing.length}: ${missing.slice(0, 20).join(', ')}; duplicated ${duplicated.length}: ${duplicated.slice(0, 20).join(', ')}; ` +
      `unknown ${extra.length}: ${extra.slice(0, 20).join(', ')}${context}`,
  );
}

async function metric(base: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf('}');
    if (want.every((w) => line.slice(name.length + 1, close).split(',').includes(w))) return Number(line.slice(close + 1).trim());
  }
  return 0;
}

function warnings(p: GatewayProcess): string {
  return p.output().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-10).join('\n').slice(0, 4000);
}

// ───────────────────────────── the test ─────────────────────────────

test('kill -9 of the gateway mid-stream from RabbitMQ (mq:legacy/in → route, concurrency 50 → queue:sink): a new process finishes, every one of 2,000 ids exactly once', { timeout: 600_000 }, async (t: TestContext) => {
  const N = 2000;
  const prefix = `mqcrash${Math.random().toString(36).slice(2, 8)}`;
  const ids = Array.from({ length: N }, (_, i) => `mqc-${String(i).padStart(5, '0')}`);
  const routeConfig = config({ routes: [{ from: SOURCE, to: SINK, concurrency: 50 }] });

  // A gateway without routes on the same prefix: the HTTP door that puts the load on RabbitMQ,
  // and an observer of queue:sink that keeps answering while the routing processes die.
  const observer = await startTestGateway(redis!.url, { ...config(), redis: { url: redis!.url, prefix }, log: { level: 'error' } });
  gateways.push(observer);
  await waitFor(async () => (await api(observer.url, 'GET', '/readyz')).status === 200, 60_000, 'the observer to be connected to RabbitMQ');
  await sendAll(observer.url, SOURCE, ids);
  const loaded = (await rabbitQueues()).in;
  assert.deepEqual(loaded && { ready: loaded.ready, unacked: loaded.unacked }, { ready: N, unacked: 0 }, 'all messages wait on RabbitMQ before the route starts');

  const first = await spawnGateway(redis!.url, routeConfig, prefix);
  processes.push(first);
  // Kill once some, but not all, are at the sink.
  const deadline = Date.now() + 120_000;
  let atKillDepth = 0;
  for (;;) {
    const { depth } = await observer.router.browse(SINK, 1);
    if (depth >= N) throw new Error(`the route moved all ${N} messages before the kill: raise N`);
    if (depth >= N / 5) { atKillDepth = depth; break; }
    if (Date.now() > deadline) throw new Error(`the route did not start moving within 120 s (sink depth ${depth})\n${warnings(first)}`);
    await sleep(5);
  }
  const code = await first.kill('SIGKILL');
  const atKill = await state(observer.url, SINK);
  t.diagnostic(`killed gateway pid ${first.pid} (exit ${code}) with the sink at ≥${atKillDepth}; right after: ${JSON.stringify(atKill)}`);
  assert.ok(atKill.depth < N, `the kill was not mid-stream: ${JSON.stringify(atKill)}`);
  // RabbitMQ notices the dead connection and puts the unsettled deliveries back.
  const afterKill = await waitFor(async () => { const q = (await rabbitQueues()).in; return q && q.unacked === 0 && q.consumers === 0 ? q : undefined; }, 60_000, 'RabbitMQ to requeue what the killed gateway held');
  t.diagnostic(`on RabbitMQ after the kill: ${JSON.stringify(afterKill)}; at the sink ${atKill.depth} (sum ${afterKill!.ready + atKill.depth}: above ${N} = taken and stored but not settled)`);

  const second = await spawnGateway(redis!.url, routeConfig, prefix);
  processes.push(second);
  await waitFor(async () => {
    const q = (await rabbitQueues()).in;
    return q && q.ready === 0 && q.unacked === 0;
  }, 300_000, 'queue "in" on RabbitMQ to be empty after the restart').catch(async (err: Error) => {
    throw new Error(`${err.message}: RabbitMQ ${JSON.stringify((await rabbitQueues()).in)}, sink ${JSON.stringify(await state(second.url, SINK))}; ` +
      `broker connection ${JSON.stringify((await api(second.url, 'GET', '/readyz')).body?.checks?.['endpoint:mq'])}\n--- second gateway warnings:\n${warnings(second)}`);
  });
  await sleep(2000); // anything still on its way would show up as an excess
  t.diagnostic(`redeliveries the restarted gateway caught as duplicates at the sink: ${await metric(second.url, 'switchboard_duplicates_total', { endpoint: 'queue' })}`);

  const counts = new Map<string, number>();
  const received = await drain(second.url, SINK, counts);
  assertExactlyOnce(ids, counts, `; state at kill ${JSON.stringify(atKill)}`);
  assert.equal(received, N);
  assert.deepEqual(await state(second.url, SINK), { depth: 0, inFlight: 0 });
  const dlq = await api(second.url, 'GET', `/api/dlq/${enc(SINK)}`, { user: 'ops' });
  assert.equal(dlq.body.depth, 0, 'dead letters at the sink');
  const q = (await rabbitQueues()).in;
  assert.deepEqual(q && { ready: q.ready, unacked: q.unacked }, { ready: 0, unacked: 0 });
  await second.kill('SIGTERM');
});
