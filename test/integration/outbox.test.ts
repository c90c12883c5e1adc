/**
 * The one durable outbox (DESIGN §8, §9) that e-mail, webhooks and peers share: dedup by address
 * and id, retries with backoff, an Undeliverable dead-letters at once, dead letters counted and
 * listed in full (no cap), replay by id that refuses unknown ids as a whole, and a close that
 * loses nothing. Real redis-server (AOF, fsync always) started for this file and stopped after.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { NotFound } from '../../src/core/errors.ts';
import type { Message } from '../../src/core/message.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { Outbox, Undeliverable, outboxDedupId, outboxJobId, type OutboxOptions } from '../../src/core/outbox.ts';
import { openRedis } from '../../src/store/redis.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PREFIX = 'sbtest';
let server: TestRedis | undefined;
let redis: Redis | undefined;
const open = new Set<Outbox<object>>();
const log = pino({ level: 'silent' });

before(async () => {
  server = await startTestRedis();
  redis = await openRedis(server.url);
});

after(async () => {
  for (const o of open) await o.close().catch(() => {});
  await redis?.quit();
  await server?.dispose();
});

let n = 0;
function outbox<E extends object = Record<never, never>>(o: Partial<OutboxOptions<E>> & Pick<OutboxOptions<E>, 'deliver'>): Outbox<E> {
  const box = new Outbox<E>({ name: `test-${++n}`, redis: redis!, prefix: PREFIX, dedupTtlMs: 60_000, backoffMs: 20, maxAttempts: 3, label: 'test', metrics: new Metrics(async () => ({})), log, ...o });
  open.add(box as Outbox<object>);
  return box;
}

async function closeOutbox(box: Outbox<object>): Promise<void> {
  await box.close();
  open.delete(box);
}

function message(id: string, to = 'webhook:crm', body: unknown = { id }): Message {
  return { id, to, sender: { kind: 'user', name: 'ops' }, headers: {}, contentType: 'application/json', body, createdAt: new Date().toISOString() };
}

async function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('job ids are fresh per add and BullMQ-safe; the dedup id depends on address, original sender and message id only', () => {
  const ids = new Set(Array.from({ length: 1000 }, outboxJobId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^o[A-Za-z0-9_-]+$/);
  const ops = { kind: 'user', name: 'ops' } as const;
  assert.equal(outboxDedupId(message('a', 'email:x@example.com')), outboxDedupId({ to: 'email:x@example.com', sender: ops, id: 'a' }));
  assert.notEqual(outboxDedupId({ to: 'email:x@example.com', sender: ops, id: 'a' }), outboxDedupId({ to: 'email:y@example.com', sender: ops, id: 'a' }));
  assert.notEqual(outboxDedupId({ to: 'email:x@example.com', sender: ops, id: 'a' }), outboxDedupId({ to: 'email:x@example.com', sender: { kind: 'user', name: 'bob' }, id: 'a' }), 'another sender, another message');
  assert.notEqual(outboxDedupId({ to: 'webhook:ab', sender: ops, id: 'c' }), outboxDedupId({ to: 'webhook:a', sender: ops, id: 'bc' }), 'no ambiguity across the boundary');
});

test('the same id to the same address is accepted once and delivered once; another address is another message', async () => {
  const got: string[] = [];
  const box = outbox({ deliver: async (m) => { got.push(`${m.to} ${m.id}`); } });
  assert.deepEqual(await box.send(message('same')), { id: 'same', duplicate: false });
  assert.deepEqual(await box.send(message('same', 'webhook:crm', 'another body')), { id: 'same', duplicate: true });
  assert.deepEqual(await box.send(message('same', 'webhook:erp')), { id: 'same', duplicate: false });
  await waitFor(() => got.length === 2, 10_000, 'two deliveries');
  await new Promise((r) => setTimeout(r, 300));
  // Still a duplicate after the first one was delivered and removed: the key outlives the job.
  assert.deepEqual(await box.send(message('same')), { id: 'same', duplicate: true });
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(got.sort(), ['webhook:crm same', 'webhook:erp same']);
});

test('a failing delivery is retried with backoff and then succeeds; nothing is dead-lettered', async () => {
  const calls: number[] = [];
  // Pauses long enough (300 ms, then 600 ms) that scheduling noise on a busy machine cannot turn
  // the order around.
  const box = outbox({
    maxAttempts: 5,
    backoffMs: 300,
    deliver: async () => {
      calls.push(Date.now());
      if (calls.length < 3) throw new Error('SMTP relay down');
    },
  });
  await box.send(message('retry-1'));
  await waitFor(() => calls.length === 3, 10_000, 'the third attempt');
  await waitFor(async () => (await box.depth()) === 0, 10_000, 'an empty outbox');
  assert.ok(calls[1]! - calls[0]! >= 300, `the first pause is at least the backoff: ${calls[1]! - calls[0]!} ms`);
  assert.ok(calls[2]! - calls[1]! >= 600, `exponential: the second pause is at least twice the backoff: ${calls[2]! - calls[1]!} ms`);
  assert.equal((await box.deadLetters('webhook:crm', 10)).depth, 0);
  assert.match((await box.health()).detail!, /outbox: 0 waiting, 0 dead-lettered/);
});

test('a custom backoff strategy and the extra data stored at send time reach deliver', async () => {
  const attempts: number[] = [];
  const seen: unknown[] = [];
  const box = outbox<{ signature: string }>({
    maxAttempts: 10,
    backoffStrategy: (attempt) => { attempts.push(attempt); return 10; },
    deliver: async (_m, extra) => {
      seen.push(extra);
      if (seen.length < 3) throw new Error('peer offline');
    },
  });
  await box.send(message('custom-1'), { signature: 'sig-1' });
  await waitFor(() => seen.length === 3, 10_000, 'three attempts');
  assert.deepEqual(attempts, [1, 2]);
  assert.deepEqual(seen, [{ signature: 'sig-1' }, { signature: 'sig-1' }, { signature: 'sig-1' }]);
});

test('Undeliverable dead-letters at once, with its reason, and calls onDeadLetter once', async () => {
  let calls = 0;
  const notices: [string, string][] = [];
  const box = outbox({
    maxAttempts: 5,
    deliver: async () => { calls++; throw new Undeliverable('POST answered 422: the receiver refuses this message'); },
    onDeadLetter: (m, reason) => { notices.push([m.id, reason]); },
  });
  await box.send(message('perm-1', 'webhook:crm', { amount: 5 }));
  const dl = await waitFor(async () => { const d = await box.deadLetters('webhook:crm', 10); return d.depth === 1 ? d : undefined; }, 10_000, 'the dead letter');
  assert.equal(calls, 1, 'no retry after Undeliverable');
  assert.equal(dl.address, 'dlq:webhook:crm');
  const dead = dl.messages[0] as Message & { deadLetter: { reason: string; attempts: number; at?: string } };
  assert.equal(dead.id, 'perm-1');
  assert.deepEqual(dead.body, { amount: 5 });
  assert.match(dead.deadLetter.reason, /answered 422/);
  assert.equal(dead.deadLetter.attempts, 1);
  assert.ok(dead.deadLetter.at && !Number.isNaN(Date.parse(dead.deadLetter.at)));
  await waitFor(() => notices.length === 1, 5_000, 'the dead-letter hook');
  assert.deepEqual(notices, [['perm-1', 'POST answered 422: the receiver refuses this message']]);
});

test('a delivery that keeps failing is dead-lettered after maxAttempts', async () => {
  let calls = 0;
  const box = outbox({ maxAttempts: 3, deliver: async () => { calls++; throw new Error('503'); } });
  await box.send(message('tired-1'));
  const dl = await waitFor(async () => { const d = await box.deadLetters('webhook:crm', 10); return d.depth === 1 ? d : undefined; }, 10_000, 'the dead letter');
  assert.equal(calls, 3);
  assert.equal((dl.messages[0] as unknown as { deadLetter: { attempts: number } }).deadLetter.attempts, 3);
});

test('1,200 dead letters are counted as 1,200 and all of them can be listed; replay by id; an unknown id is NotFound and replays nothing', async () => {
  const N = 1200;
  const healed = new Set<string>();
  const delivered: string[] = [];
  const box = outbox({
    concurrency: 50,
    deliver: async (m) => {
      if (!healed.has(m.id)) throw new Undeliverable('refused');
      delivered.push(m.id);
    },
  });
  const address = 'webhook:crm';
  const ids = Array.from({ length: N }, (_, i) => `dl-${i}`);
  for (let i = 0; i < N; i += 100) await Promise.all(ids.slice(i, i + 100).map((id) => box.send(message(id, address))));
  // Dead letters of another address in the same outbox are neither counted nor listed here.
  for (const id of ['other-1', 'other-2']) await box.send(message(id, 'webhook:erp'));

  await waitFor(async () => (await box.health()).detail === `outbox: 0 waiting, ${N + 2} dead-lettered`, 60_000, 'every message dead-lettered');
  const first = await box.deadLetters(address, 20);
  assert.equal(first.depth, N, 'the true count, past any page');
  assert.equal(first.messages.length, 20);
  const all = await box.deadLetters(address, 10_000);
  assert.equal(all.depth, N);
  assert.deepEqual(all.messages.map((m) => m.id).sort(), [...ids].sort(), 'every dead letter listed once');
  assert.equal((await box.deadLetters('webhook:erp', 10)).depth, 2);

  // One unknown id among known ones: a NotFound naming it, and nothing moves.
  const err = await box.replayDeadLetters(address, ['dl-7', 'no-such-id']).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof NotFound, `expected NotFound, got ${String(err)}`);
  assert.equal(err.status, 404);
  assert.match(err.message, /'no-such-id'/);
  assert.doesNotMatch(err.message, /dl-7/);
  assert.equal((await box.deadLetters(address, 1)).depth, N, 'nothing replayed');
  // An id dead-lettered at another address is unknown here too.
  await assert.rejects(box.replayDeadLetters(address, ['other-1']), (e: unknown) => e instanceof NotFound && /'other-1'/.test((e as Error).message));

  healed.add('dl-7');
  healed.add('dl-1199');
  assert.equal((await box.replayDeadLetters(address, ['dl-7', 'dl-1199'])).replayed, 2);
  await waitFor(() => delivered.length === 2, 10_000, 'the two replayed deliveries');
  assert.deepEqual(delivered.sort(), ['dl-1199', 'dl-7']);
  const left = await box.deadLetters(address, 10_000);
  assert.equal(left.depth, N - 2);
  assert.ok(!left.messages.some((m) => m.id === 'dl-7' || m.id === 'dl-1199'));
  assert.equal((await box.deadLetters('webhook:erp', 10)).depth, 2, 'the other address untouched');
});

test('replay without ids puts back every dead letter of the address with a full set of attempts', async () => {
  let failing = true;
  const calls = new Map<string, number>();
  const box = outbox({ maxAttempts: 2, deliver: async (m) => { calls.set(m.id, (calls.get(m.id) ?? 0) + 1); if (failing) throw new Error('down'); } });
  for (const id of ['all-1', 'all-2', 'all-3']) await box.send(message(id));
  await waitFor(async () => (await box.deadLetters('webhook:crm', 10)).depth === 3, 10_000, 'three dead letters');
  assert.equal((await box.replayDeadLetters('webhook:crm')).replayed, 3);
  await waitFor(async () => (await box.deadLetters('webhook:crm', 10)).depth === 3, 10_000, 'dead-lettered again');
  assert.deepEqual([...calls.values()], [4, 4, 4], 'two attempts, then two more after the replay');
  failing = false;
  assert.equal((await box.replayDeadLetters('webhook:crm')).replayed, 3);
  await waitFor(async () => (await box.deadLetters('webhook:crm', 10)).depth === 0 && (await box.depth()) === 0, 10_000, 'all delivered');
  assert.equal((await box.replayDeadLetters('webhook:crm')).replayed, 0, 'an empty dead-letter queue replays nothing');
});

test('close waits for the delivery in flight, takes no new one, and a new outbox delivers what is left', async () => {
  const name = `close-${Date.now()}`;
  let release!: () => void;
  const inFlight = new Promise<void>((r) => { release = r; });
  const firstCalls: string[] = [];
  const first = outbox({ name, concurrency: 1, deliver: async (m) => { firstCalls.push(m.id); if (m.id === 'slow') await inFlight; } });
  await first.send(message('slow'));
  await waitFor(() => firstCalls.length === 1, 10_000, 'the slow delivery to start');
  await first.send(message('queued')); // waits behind 'slow' (concurrency 1)
  let closed = false;
  const closing = first.close().then(() => { closed = true; });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(closed, false, 'close waits for the delivery in flight');
  release();
  await closing;
  open.delete(first as Outbox<object>);
  assert.deepEqual(firstCalls, ['slow'], 'a closing outbox takes no new message');

  const secondCalls: string[] = [];
  const second = outbox({ name, deliver: async (m) => { secondCalls.push(m.id); } });
  await waitFor(() => secondCalls.length === 1, 10_000, 'the message left in Redis');
  assert.deepEqual(secondCalls, ['queued']);
  await waitFor(async () => (await second.depth()) === 0, 10_000, 'an empty outbox');
  await closeOutbox(second as Outbox<object>);
});

test('a peer job stored before there was one outbox class ({message, remote, signature}) is still delivered with its envelope', async () => {
  const name = `legacy-${Date.now()}`;
  const producer = new Queue(`{${name}}`, { connection: redis!, prefix: PREFIX });
  await producer.add('out', { message: message('legacy-1', 'peer:bank-b/trades'), remote: 'trades', signature: 'sig' }, { jobId: outboxJobId(), attempts: 3 });
  await producer.close();
  const got: [Message, unknown][] = [];
  outbox<{ remote: string; signature: string }>({ name, deliver: async (m, extra) => { got.push([m, extra]); } });
  await waitFor(() => got.length === 1, 10_000, 'the legacy job');
  assert.equal(got[0]![0].id, 'legacy-1');
  assert.equal(got[0]![0].to, 'peer:bank-b/trades');
  assert.deepEqual(got[0]![1], { remote: 'trades', signature: 'sig' });
});

test('a job holds the stored message itself (data.to, data.id), with the transport\'s extra beside it', async () => {
  const name = `shape-${Date.now()}`;
  const box = outbox<{ remote: string }>({ name, deliver: async () => { throw new Undeliverable('no'); } });
  await box.send(message('shape-1', 'peer:bank-b/x', Buffer.from('bytes')), { remote: 'x' });
  await waitFor(async () => (await box.deadLetters('peer:bank-b/x', 1)).depth === 1, 10_000, 'the dead letter');
  const probe = new Queue(`{${name}}`, { connection: redis!, prefix: PREFIX });
  const [job] = await probe.getFailed();
  await probe.close();
  assert.equal(job!.data.to, 'peer:bank-b/x');
  assert.equal(job!.data.id, 'shape-1');
  assert.deepEqual(job!.data.extra, { remote: 'x' });
  const [dead] = (await box.deadLetters('peer:bank-b/x', 1)).messages;
  assert.ok(Buffer.isBuffer(dead!.body), 'a binary body comes back as bytes');
  assert.equal(Object.hasOwn(dead!, 'extra'), false, 'the extra is not part of the message');
});

test('a dead letter replayed before the dead-letter events pass read it has its event recorded first, once; if that store fails nothing is replayed', async () => {
  const recorded: { type: string; data: Record<string, unknown> }[] = [];
  let refuse = false;
  let deliverOk = false;
  const box = outbox({
    deliver: async () => { if (!deliverOk) throw new Undeliverable('refused'); },
    // Passes far apart: the replay below comes before any pass could read the dead letter.
    deadLetterEvents: { record: async (e) => { if (refuse) throw new Error('events outbox unreachable'); recorded.push({ type: e.type, data: e.data as Record<string, unknown> }); } },
  });
  await box.send(message('early-1', 'webhook:early'));
  await waitFor(async () => (await box.deadLetters('webhook:early', 10)).depth === 1, 10_000, 'the dead letter');
  const before = recorded.length;

  refuse = true;
  await assert.rejects(box.replayDeadLetters('webhook:early'), /unreachable/);
  assert.equal((await box.deadLetters('webhook:early', 10)).depth, 1, 'still a dead letter: nothing moved');
  refuse = false;

  deliverOk = true;
  assert.equal((await box.replayDeadLetters('webhook:early')).replayed, 1);
  await waitFor(async () => (await box.depth()) === 0 && (await box.deadLetters('webhook:early', 10)).depth === 0, 10_000, 'delivered after the replay');
  const mine = recorded.slice(before).filter((e) => e.data.messageId === 'early-1');
  assert.equal(mine.length, 1, JSON.stringify(recorded));
  assert.equal(mine[0]!.type, 'switchboard.message.dead-lettered');
  assert.equal(mine[0]!.data.address, 'webhook:early');
});
