// The instances a live flows page asks to follow (`?i=flow/id`): parsed strictly, bounded by what
// a search page lists; anything else is a ValidationError naming what was expected.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Request } from 'express';
import { ValidationError } from '../../src/core/errors.ts';
import { LIVE_ROWS, liveRefs } from '../../src/web/routes/console-flows.ts';

const req = (i: unknown) => ({ query: i === undefined ? {} : { i } }) as unknown as Request;

test('one or many flow/id pairs, in order; none is an empty list', () => {
  assert.deepEqual(liveRefs(req(undefined)), []);
  assert.deepEqual(liveRefs(req('invoice/abc-1')), [{ flow: 'invoice', instanceId: 'abc-1' }]);
  assert.deepEqual(liveRefs(req(['a/1', 'b_2/x'])), [{ flow: 'a', instanceId: '1' }, { flow: 'b_2', instanceId: 'x' }]);
  assert.equal(liveRefs(req(Array.from({ length: LIVE_ROWS }, (_, n) => `f/${n}`))).length, LIVE_ROWS);
});

test('a path, a missing half, odd characters, a nested object or too many rows are refused with the reason', () => {
  for (const bad of ['invoice', 'invoice/', '/1', 'invoice/../x', 'invoice/a b', 'flow:invoice/1', 'a/b/c', { x: '1' }]) {
    assert.throws(() => liveRefs(req(bad)), (err: unknown) => err instanceof ValidationError && /flow\/id/.test(err.message), JSON.stringify(bad));
  }
  assert.throws(() => liveRefs(req(Array.from({ length: LIVE_ROWS + 1 }, (_, n) => `f/${n}`))), (err: unknown) => err instanceof ValidationError && /at most 50/.test(err.message));
});
