import assert from 'node:assert/strict';
import { api, enc } from './gateway.ts';

// Counting by message id over the HTTP API, as the crash, shutdown, backpressure and MQ tests
// prove "every id exactly once": send ids in, drain the sink with peek-lock receive/ack, count.

export interface QueueState {
  depth: number;
  inFlight: number;
}

/** Depth and in-flight count of `address` (browse as ops). */
export async function queueState(base: string, address: string): Promise<QueueState> {
  const state = await queueStateIfUp(base, address);
  assert.ok(state, `browse ${address}: 503 (Redis unavailable)`);
  return state;
}

/** Like queueState(), but undefined while the gateway answers 503 (Redis reconnecting: DESIGN §6). */
export async function queueStateIfUp(base: string, address: string): Promise<QueueState | undefined> {
  const r = await api(base, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  if (r.status === 503) return undefined;
  assert.equal(r.status, 200, `browse ${address}: ${JSON.stringify(r.body)}`);
  return { depth: r.body.depth, inFlight: r.body.inFlight };
}

/** How many dead letters `address` has. */
export async function dlqDepth(base: string, address: string): Promise<number> {
  const r = await api(base, 'GET', `/api/dlq/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, `dlq ${address}: ${JSON.stringify(r.body)}`);
  return r.body.depth;
}

export interface SendAllOptions {
  /**
   * Requests in flight. Kept below the per-user login limit (10 by default), which counts a
   * request until it succeeds.
   * @defaultValue 8
   */
  parallel?: number;
  /**
   * The message for one id, without `to` and `id`.
   * @defaultValue `{ body: { id, pad: 200 × 'x' } }`
   */
  message?: (id: string) => Record<string, unknown>;
}

/** Sends every id to `to` over the HTTP API as ops; each must get 202 and not be a duplicate. */
export async function sendAll(base: string, to: string, ids: string[], options: SendAllOptions = {}): Promise<void> {
  const message = options.message ?? ((id: string) => ({ body: { id, pad: 'x'.repeat(200) } }));
  let next = 0;
  await Promise.all(Array.from({ length: options.parallel ?? 8 }, async () => {
    while (next < ids.length) {
      const id = ids[next++]!;
      const r = await api(base, 'POST', '/api/messages', { user: 'ops', body: { ...message(id), to, id } });
      assert.equal(r.status, 202, `send ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.duplicate, false, `send ${id} was reported as a duplicate`);
    }
  }));
}

export interface ReceiveOptions {
  /** @defaultValue 200 */
  max?: number;
  /** Long enough that no lease expires during the test. @defaultValue 300 */
  leaseSeconds?: number;
  /** How to call the API (e.g. a wrapper that adds the gateway's output to errors). @defaultValue api */
  request?: typeof api;
}

/**
 * One peek-lock receive + ack of `address` as ops; counts the acknowledged ids in `counts` and
 * returns the messages (empty when the queue had none).
 */
export async function receiveBatch(base: string, address: string, counts: Map<string, number>, options: ReceiveOptions = {}): Promise<any[]> {
  const { max = 200, leaseSeconds = 300, request = api } = options;
  const got = await request(base, 'POST', `/api/queues/${enc(address)}/receive`, { user: 'ops', body: { max, leaseSeconds } });
  assert.equal(got.status, 200, `receive: ${JSON.stringify(got.body)}`);
  const messages = got.body.messages as { id: string; lease: string }[];
  if (messages.length === 0) return [];
  const ack = await request(base, 'POST', `/api/queues/${enc(address)}/ack`, { user: 'ops', body: { leases: messages.map((m) => m.lease) } });
  assert.equal(ack.status, 200, `ack: ${JSON.stringify(ack.body)}`);
  assert.deepEqual(ack.body.expired, [], `a ${leaseSeconds} s lease expired before its ack`);
  for (const m of messages) counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  return messages;
}

/** Receives and acks `address` until a receive comes back empty; returns every message taken. */
export async function drain(base: string, address: string, counts: Map<string, number>, options: ReceiveOptions = {}): Promise<any[]> {
  const all: any[] = [];
  for (;;) {
    const batch = await receiveBatch(base, address, counts, options);
    if (batch.length === 0) return all;
    all.push(...batch);
  }
}

/** Fails, listing the missing, duplicated and unknown ids, unless each of `ids` was counted exactly once. */
export function assertExactlyOnce(ids: string[], counts: Map<string, number>, context = ''): void {
  const expected = new Set(ids);
  const missing = ids.filter((id) => !counts.has(id));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([id, n]) => `${id}×${n}`);
  const extra = [...counts.keys()].filter((id) => !expected.has(id));
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  assert.ok(
    missing.length === 0 && duplicated.length === 0 && extra.length === 0,
    `expected each of ${ids.length} ids exactly once; received ${total} messages with ${counts.size} distinct ids — ` +
      `missing ${missing.length}: ${missing.slice(0, 20).join(', ')}; duplicated ${duplicated.length}: ${duplicated.slice(0, 20).join(', ')}; ` +
      `unknown ${extra.length}: ${extra.slice(0, 20).join(', ')}${context}`,
  );
}

/** The value of one Prometheus sample from /metrics whose labels include `labels` (0 when absent). */
export async function metric(base: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf('}');
    const got = line.slice(name.length + 1, close).split(',');
    if (want.every((w) => got.includes(w))) return Number(line.slice(close + 1).trim());
  }
  return 0;
}

/** Duplicates the gateway caught at the queue ingress (from /metrics), for diagnostics. */
export async function duplicatesCaught(base: string): Promise<number> {
  return metric(base, 'switchboard_duplicates_total', { endpoint: 'queue' });
}
