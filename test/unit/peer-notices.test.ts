import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MalformedNotice, parseRefusalNotice } from '../../src/network/peer-notices.ts';

test('a refusal notice is read as {notice, id, to, reason} and nothing more', () => {
  assert.deepEqual(parseRefusalNotice({ notice: 'undeliverable', id: 'm-1', to: 'queue:x', reason: 'not allowed', extra: 'dropped' }), { notice: 'undeliverable', id: 'm-1', to: 'queue:x', reason: 'not allowed' });
});

test('anything else is a MalformedNotice saying what was expected', () => {
  const bad: unknown[] = [
    null, 'text', [1], {}, { notice: 'delivered', id: 'm', to: 'q', reason: 'r' },
    { notice: 'undeliverable', id: '', to: 'q', reason: 'r' }, { notice: 'undeliverable', id: 'm', to: 7, reason: 'r' },
    { notice: 'undeliverable', id: 'm', to: 'q', reason: 'r'.repeat(1001) },
  ];
  for (const body of bad) {
    assert.throws(() => parseRefusalNotice(body), (err: unknown) => err instanceof MalformedNotice && err.code === 'malformed_notice' && /must be \{notice: 'undeliverable', id, to, reason\}/.test(err.message), JSON.stringify(body));
  }
});
