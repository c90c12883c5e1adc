/**
 * Replay intents (src/core/replay-intents.ts): what a poll decides from Redis about a replay left
 * by a process that died, and that a replay moves only the dead letters it captured.
 *
 * Real redis-server and real BullMQ queues (QueueEndpoint). Dead letters are made the way a
 * consumer makes them: messages past their expiry when a receive asks for them.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { DedupStore } from '../../src/core/dedup.ts';
import type { CapturedDeadLetter } from '../../src/core/endpoint.ts';
import type { LifecycleEvent } from '../../src/core/lifecycle.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { ReplayIntents } from '../../src/core/replay-intents.ts';
import { Router } from '../../src/core/router.ts';
import { systemMessage } from '../../src/core/system-message.ts';
import { QueueEndpoint } from '../../src/endpoints/queue/queue-endpoint.ts';
import { bullQueueName } from '../../src/endpoints/queue/names.ts';
import { registerScheme } from '../../src/core/address.ts';
import { queueScheme } from '../../src/endpoints/queue/scheme.ts';
import { openRedis } from '../../src/store/redis.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

registerScheme(queueScheme);

const PREFIX = 'sbri';
const log = pino({ level: 'silent' });
let server: TestRedis | undefined;
let redis: Redis | undefined;
let queues: QueueEndpoint | undefined;
const recorded: LifecycleEvent[] = [];
let intents: ReplayIntents | undefined;

before(async () => {
  server = await startTestRedis();
  redis = await openRedis(server.url);
  queues = new QueueEndpoint({
    redis, prefix: PREFIX, maxAttempts: 3, backoffMs: 50, dedupTtlMs: 60_000, lockMs: 5000, stalledCheckMs: 1000, limits: [],
    metrics: new Metrics(async () => ({})), log,
  });
  intents = new ReplayIntents({ redis, prefix: PREFIX, record: async (e) => { recorded.push(e); }, graceMs: 300, pollMs: 100_000, log });
});

after(async () => {
  await intents?.close();
  await queues?.close();
  redis?.disconnect();
  await server?.dispose();
});

/** Dead-letters messages `ids` of `address`: sent with an expiry just ahead, then asked for once it passed. */
async function deadLetter(address: string, ids: string[]): Promise<void> {
  for (const id of ids) await queues!.send({ ...systemMessage({ id, to: address, body: { id } }), expiresAt: new Date(Date.now() + 40).toISOString() });
  await new Promise((r) => setTimeout(r, 120));
  assert.deepEqual(await queues!.receive(address, 100, 5000), []);
}

async function deadIds(address: string): Promise<string[]> {
  return (await queues!.deadLetters(address, 100)).messages.map((m) => m.id).sort();
}

class StopHere extends Error {}

/** The dead letters a replay of `address` would capture, without replaying any (the hook refuses). */
async function capture(address: string): Promise<CapturedDeadLetter[]> {
  let captured: CapturedDeadLetter[] = [];
  await assert.rejects(queues!.replayDeadLetters(address, undefined, async (c) => { captured = c; throw new StopHere(); }), StopHere);
  return captured;
}

async function intentKeys(): Promise<number> {
  return (await redis!.zcard(`${PREFIX}:{replay-intents}`)) + (await redis!.keys(`${PREFIX}:{replay-intents}:*`)).length;
}

test('an intent left by a dead process: replayed, replayed and consumed, replayed and dead again count; untouched and discarded do not', { timeout: 60_000 }, async () => {
  const address = 'queue:ri.rule';
  await deadLetter(address, ['a', 'b', 'c', 'd', 'e']);
  const captured = await capture(address);
  assert.deepEqual(captured.map((c) => c.messageId).sort(), ['a', 'b', 'c', 'd', 'e']);
  // A replay whose intent could not be stored moves nothing.
  assert.deepEqual(await deadIds(address), ['a', 'b', 'c', 'd', 'e']);

  const intent = await intents!.begin(address, false, captured);
  intent.stop(); // the process "dies": no more heartbeats
  const again = await intents!.begin(address, false, captured);
  again.stop();
  assert.notEqual(again.id, intent.id, 'two replays of the same dead letters are two intents (two operators at once)');
  await intents!.finish(again, []); // that one moved nothing: no event, dropped

  // What the dead process got done before it died, and what others did meanwhile:
  await queues!.replayDeadLetters(address, ['e']);
  assert.deepEqual(await queues!.receive(address, 10, 5000), []); // e: replayed, expired again, dead-lettered again (a new dead letter)
  await queues!.replayDeadLetters(address, ['a']); // a: replayed, waiting
  await queues!.replayDeadLetters(address, ['b']);
  await queues!.discardWaiting(address, 'b'); // b: replayed, then gone (as a delivered message is)
  await queues!.discardDeadLetters(address, ['c']); // c: never replayed, discarded
  // d: never replayed, still the same dead letter

  const decided = (await intents!.decide(intent)).map((j) => j.messageId).sort();
  assert.deepEqual(decided, ['a', 'b', 'e']);

  await new Promise((r) => setTimeout(r, 400)); // past the grace without heartbeats
  await intents!.poll();
  const events = recorded.filter((e) => e.subject === address);
  assert.equal(events.length, 1);
  assert.equal(events[0]!.type, 'switchboard.message.replayed');
  assert.equal(events[0]!.key, `${address}\0replay\0${intent.id}`);
  assert.equal(events[0]!.data.replayed, 3);
  assert.equal(await intentKeys(), 0, 'the intent is dropped once decided');
  await intents!.poll();
  assert.equal(recorded.filter((e) => e.subject === address).length, 1, 'decided once');

  // If the queue's event stream was trimmed past the capture, a dead letter that is gone counts
  // as replayed (the documented fallback): c now would.
  await redis!.xtrim(`${PREFIX}:${bullQueueName(address)}:events`, 'MAXLEN', 0);
  assert.deepEqual((await intents!.decide(intent)).map((j) => j.messageId).sort(), ['a', 'b', 'c', 'e']);
});

test('an intent of which nothing was replayed is dropped without an event', { timeout: 30_000 }, async () => {
  const address = 'queue:ri.none';
  await deadLetter(address, ['x', 'y']);
  const intent = await intents!.begin(address, true, await capture(address));
  intent.stop();
  await queues!.discardDeadLetters(address, ['y']);
  await new Promise((r) => setTimeout(r, 400));
  await intents!.poll();
  assert.equal(recorded.filter((e) => e.subject === address).length, 0);
  assert.equal(await intentKeys(), 0);
  assert.deepEqual(await deadIds(address), ['x']);
});

test('a heartbeat keeps a running replay\'s intent from the poll', { timeout: 30_000 }, async () => {
  const address = 'queue:ri.alive';
  await deadLetter(address, ['p']);
  const intent = await intents!.begin(address, false, await capture(address));
  await queues!.replayDeadLetters(address, ['p']);
  await new Promise((r) => setTimeout(r, 900)); // three graces: only the heartbeat keeps it
  await intents!.poll();
  assert.equal(recorded.filter((e) => e.subject === address).length, 0, 'not decided while its process replays');
  intent.stop();
  await intents!.finish(intent, intent.jobs.map((j) => j.jobId));
  assert.equal(recorded.filter((e) => e.subject === address).length, 1);
  assert.equal(await intentKeys(), 0);
});

test('replay through the router: only the dead letters captured move, one event, nothing left behind', { timeout: 30_000 }, async () => {
  const address = 'queue:ri.router';
  await deadLetter(address, ['r1', 'r2']);
  // A dead letter arriving while the replay runs (after its capture) stays a dead letter.
  await queues!.send({ ...systemMessage({ id: 'late', to: address, body: {} }), expiresAt: new Date(Date.now() + 40).toISOString() });
  await new Promise((r) => setTimeout(r, 120));
  const result = await queues!.replayDeadLetters(address, undefined, async () => {
    assert.deepEqual(await queues!.receive(address, 10, 5000), []); // dead-letters "late" now
  });
  assert.equal(result.replayed, 2);
  assert.deepEqual(await deadIds(address), ['late']);

  const router = new Router(new DedupStore(redis!, PREFIX, 60_000), new Metrics(async () => ({})), log);
  router.register(queues!);
  router.recordReplaysIn(intents!);
  const answer = await router.replayDeadLetters(address, ['late'], SYSTEM_CALLER);
  assert.deepEqual(answer, { replayed: 1 }, 'job ids stay inside');
  const events = recorded.filter((e) => e.subject === address);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0]!.data, { address, replayed: 1, messageIds: ['late'] });
  assert.equal(await intentKeys(), 0);
});

test('the replaying process and a decider reporting one replay report the same event (one id, deduplicated downstream)', { timeout: 30_000 }, async () => {
  const address = 'queue:ri.both';
  await deadLetter(address, ['q1', 'q2']);
  const intent = await intents!.begin(address, false, await capture(address));
  intent.stop();
  await queues!.replayDeadLetters(address);
  await intents!.reconcile(intent.id); // a decider got there first (the process seemed dead)
  await intents!.finish(intent, intent.jobs.map((j) => j.jobId)); // then the process reported too
  const events = recorded.filter((e) => e.subject === address);
  assert.equal(events.length, 2);
  assert.deepEqual(events[0], events[1], 'same key (so the same CloudEvent id) and the same facts');
  assert.equal(await intentKeys(), 0);
});
