import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DestinationUnavailable, ValidationError } from '../../src/core/errors.ts';
import { holdAfterFailure, holdWhileUnavailable, type HoldOptions } from '../../src/core/hold.ts';

const unavailable = () => new DestinationUnavailable('queue:full', 'the queue is full');

/** A clock that records each pause instead of waiting; jitter pinned to the middle (no spread). */
function fake(over: Partial<HoldOptions> = {}): HoldOptions & { pauses: number[] } {
  const pauses: number[] = [];
  return { pauses, stopping: () => false, sleep: async (ms) => { pauses.push(ms); }, random: () => 0.5, ...over };
}

/** Fails with each of `errors` in turn, then answers `value`. */
function attempts<T>(errors: unknown[], value: T): { calls: () => number; fn: () => Promise<T> } {
  let n = 0;
  return { calls: () => n, fn: async () => { const err = errors[n++]; if (err !== undefined) throw err; return value; } };
}

describe('holdWhileUnavailable', () => {
  test('an attempt that succeeds at once is not held', async () => {
    const o = fake();
    const a = attempts([], 'ok');
    assert.equal(await holdWhileUnavailable(a.fn, o), 'ok');
    assert.equal(a.calls(), 1);
    assert.deepEqual(o.pauses, []);
  });

  test('a retryable failure is held with doubling pauses, capped, until the destination takes it', async () => {
    const o = fake({ firstPauseMs: 200, maxPauseMs: 1000 });
    const a = attempts(Array.from({ length: 5 }, unavailable), 'delivered');
    assert.equal(await holdWhileUnavailable(a.fn, o), 'delivered');
    assert.equal(a.calls(), 6);
    assert.deepEqual(o.pauses, [200, 400, 800, 1000, 1000]);
  });

  test('defaults: first pause 250 ms, cap 5 s', async () => {
    const o = fake();
    await holdWhileUnavailable(attempts(Array.from({ length: 7 }, unavailable), 1).fn, o);
    assert.deepEqual(o.pauses, [250, 500, 1000, 2000, 4000, 5000, 5000]);
  });

  test('a first pause above the cap starts at the cap', async () => {
    const o = fake({ firstPauseMs: 9000, maxPauseMs: 5000 });
    await holdWhileUnavailable(attempts([unavailable()], 1).fn, o);
    assert.deepEqual(o.pauses, [5000]);
  });

  test('jitter spreads each pause by ± the given fraction', async () => {
    const low = fake({ random: () => 0, firstPauseMs: 1000 });
    const high = fake({ random: () => 0.999999, firstPauseMs: 1000 });
    await holdWhileUnavailable(attempts([unavailable()], 1).fn, low);
    await holdWhileUnavailable(attempts([unavailable()], 1).fn, high);
    assert.deepEqual(low.pauses, [750]);
    assert.deepEqual(high.pauses, [1250]);
    const none = fake({ random: () => 0, firstPauseMs: 1000, jitter: 0 });
    await holdWhileUnavailable(attempts([unavailable()], 1).fn, none);
    assert.deepEqual(none.pauses, [1000]);
  });

  test('a failure that is not retryable is rethrown at once, unheld', async () => {
    const o = fake();
    const bad = new ValidationError('bad body');
    const a = attempts([unavailable(), bad], 1);
    await assert.rejects(holdWhileUnavailable(a.fn, o), (err) => err === bad);
    assert.equal(a.calls(), 2);
    assert.deepEqual(o.pauses, [250]);
  });

  test('a plain Error is not retryable: it is the caller\'s failed attempt', async () => {
    const o = fake();
    await assert.rejects(holdWhileUnavailable(attempts([new Error('boom')], 1).fn, o), /boom/);
    assert.deepEqual(o.pauses, []);
  });

  test('once stopping, a retryable failure is rethrown so the caller hands the message back', async () => {
    let stopping = false;
    const o = fake({ stopping: () => stopping });
    o.sleep = async (ms) => { o.pauses.push(ms); if (o.pauses.length === 2) stopping = true; };
    const a = attempts(Array.from({ length: 10 }, unavailable), 1);
    await assert.rejects(holdWhileUnavailable(a.fn, o), (err) => err instanceof DestinationUnavailable);
    assert.equal(a.calls(), 3, 'two holds, then the failure after the stop is rethrown');
    assert.equal(o.pauses.length, 2);
  });

  test('onHold sees each retryable failure and the pause that follows', async () => {
    const seen: [string, number][] = [];
    const o = fake({ firstPauseMs: 100, onHold: (err, ms) => seen.push([(err as Error).message, ms]) });
    await holdWhileUnavailable(attempts([unavailable(), unavailable()], 1).fn, o);
    assert.deepEqual(seen, [
      ['queue:full cannot accept messages now: the queue is full', 100],
      ['queue:full cannot accept messages now: the queue is full', 200],
    ]);
  });

  test('without a fake clock it really waits', async () => {
    const started = Date.now();
    await holdWhileUnavailable(attempts([unavailable()], 1).fn, { stopping: () => false, firstPauseMs: 40, jitter: 0 });
    assert.ok(Date.now() - started >= 35);
  });
});

describe('holdAfterFailure (the caller made the first attempt)', () => {
  test('holds like holdWhileUnavailable from the first pause, and the attempts it makes are the retries', async () => {
    const o = fake({ firstPauseMs: 200, maxPauseMs: 1000 });
    const a = attempts([unavailable(), unavailable()], 'delivered');
    assert.equal(await holdAfterFailure(unavailable(), a.fn, o), 'delivered');
    assert.equal(a.calls(), 3, 'two more failures, then the delivery');
    assert.deepEqual(o.pauses, [200, 400, 800]);
  });

  test('a first failure that is not retryable, or any while stopping, is rethrown without a pause or another attempt', async () => {
    const refused = new ValidationError('bad input');
    const o = fake();
    const a = attempts([], 'never');
    await assert.rejects(holdAfterFailure(refused, a.fn, o), (err) => err === refused);
    const stopping = fake({ stopping: () => true });
    const first = unavailable();
    await assert.rejects(holdAfterFailure(first, a.fn, stopping), (err) => err === first);
    assert.equal(a.calls(), 0);
    assert.deepEqual([o.pauses, stopping.pauses], [[], []]);
  });

  test('a later failure that is not retryable ends the hold with that failure', async () => {
    const o = fake();
    const refused = new ValidationError('refused on the second try');
    await assert.rejects(holdAfterFailure(unavailable(), attempts([refused], 'never').fn, o), (err) => err === refused);
    assert.deepEqual(o.pauses, [250]);
  });
});
