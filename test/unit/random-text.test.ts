import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomBase64url } from '../../src/core/random-text.ts';

test('random text has the asked length in base64url and never repeats, across pool refills and mixed sizes', () => {
  const seen = new Set<string>();
  const sizes = [16, 12, 9, 16, 1, 33];
  for (let i = 0; i < 30_000; i++) {
    const bytes = sizes[i % sizes.length]!;
    const text = randomBase64url(bytes);
    assert.equal(text.length, Math.ceil((bytes * 4) / 3), `${bytes} bytes: ${text}`);
    assert.match(text, /^[A-Za-z0-9_-]+$/);
    if (bytes >= 9) {
      assert.ok(!seen.has(text), `repeated: ${text}`);
      seen.add(text);
    }
  }
});

test('a request larger than the pool gets its own fresh bytes, and the next one still works', () => {
  const big = randomBase64url(10_000);
  assert.equal(Buffer.from(big, 'base64url').length, 10_000);
  // Not all one value: the bytes are random, not a zero-filled buffer.
  assert.ok(new Set(Buffer.from(big, 'base64url')).size > 200);
  assert.equal(Buffer.from(randomBase64url(16), 'base64url').length, 16);
});
