import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { dedupKey } from '../../src/core/dedup.ts';
import { addressFromBullQueueName, bullQueueName, dedupId } from '../../src/endpoints/queue/names.ts';

test('the dedup key is the SHA-256 of the JSON of address, original sender and id', () => {
  const m = { to: 'queue:orders', sender: { kind: 'user' as const, name: 'alice' }, id: 'order-1' };
  const expected = createHash('sha256').update(JSON.stringify(['queue:orders', 'user:alice', 'order-1'])).digest('hex');
  assert.equal(dedupKey(m), expected);
  assert.equal(dedupId(m), expected, 'BullMQ gets the one dedup key');
  // Another sender, address or id is another key: one user's id never swallows another's message.
  assert.notEqual(dedupKey({ ...m, sender: { kind: 'user', name: 'bob' } }), expected);
  assert.notEqual(dedupKey({ ...m, to: 'queue:orders.eu' }), expected);
  assert.notEqual(dedupKey({ ...m, id: 'order-2' }), expected);
  // The parts cannot run into each other.
  assert.notEqual(dedupKey({ to: 'queue:a', sender: m.sender, id: 'b' }), dedupKey({ to: 'queue:ab', sender: m.sender, id: '' }));
});

test('queue names round-trip to their address and carry one hash tag', () => {
  for (const address of ['queue:orders.eu', 'queue:a/b-c_d', 'queue:weird:name%']) {
    const name = bullQueueName(address);
    assert.match(name, /^\{[^{}:]+\}$/, name);
    assert.equal(addressFromBullQueueName(name), address);
  }
});
