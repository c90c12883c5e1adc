import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TurnBatches } from '../../src/store/turn-batches.ts';

test('items of one turn go out as one batch per key; a later turn is a batch of its own', async () => {
  const sent: [string, number[]][] = [];
  const b = new TurnBatches<number>(async (key, items) => { sent.push([key, [...items]]); });
  await Promise.all([b.add('a', 1), b.add('b', 2), b.add('a', 3)]);
  await b.add('a', 4);
  assert.deepEqual(sent, [['a', [1, 3]], ['b', [2]], ['a', [4]]]);
});

test('a failed batch rejects each of its adds, and settled() waits for batches still being written', async () => {
  let finish!: () => void;
  const b = new TurnBatches<string>((key) => (key === 'bad' ? Promise.reject(new Error('WRONGTYPE')) : new Promise<void>((r) => (finish = r))));
  await assert.rejects(Promise.all([b.add('bad', 'x'), b.add('bad', 'y')]), /WRONGTYPE/);
  const slow = b.add('slow', 'z');
  let settled = false;
  const waiting = b.settled().then(() => { settled = true; });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(settled, false, 'a batch not yet answered is waited for');
  finish();
  await slow;
  await waiting;
  assert.equal(settled, true);
});
