import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressError } from '../../src/core/errors.ts';
import { matchesPattern, parsePattern, patternWithin } from '../../src/core/pattern.ts';

const matches = (pattern: string, address: string) => matchesPattern(parsePattern(pattern), address);
const within = (inner: string, outer: string) => patternWithin(parsePattern(inner), parsePattern(outer));

describe('parsePattern', () => {
  test('parses scheme and segments split on / . and :', () => {
    assert.deepEqual(parsePattern('mq:legacy/payments.*'), { raw: 'mq:legacy/payments.*', scheme: 'mq', segments: ['legacy', 'payments', '*'], separators: ['', '/', '.'] });
    assert.deepEqual(parsePattern('dlq:queue:**'), { raw: 'dlq:queue:**', scheme: 'dlq', segments: ['queue', '**'], separators: ['', ':'] });
    assert.deepEqual(parsePattern('group:*'), { raw: 'group:*', scheme: 'group', segments: ['*'], separators: [''] });
  });

  test("'**' alone is the pattern for everything", () => {
    assert.deepEqual(parsePattern('**'), { raw: '**', scheme: '**', segments: [], separators: [] });
  });

  const invalid: [unknown, RegExp][] = [
    ['', /expected a pattern like/],
    [undefined, /expected a pattern like/],
    [42, /expected a pattern like/],
    ['queue', /scheme:path with wildcards/],
    ['*', /scheme:path with wildcards/],
    [':orders', /scheme:path with wildcards/],
    ['nats:orders', /unknown scheme 'nats'/],
    ['*:orders', /unknown scheme '\*'/],
    ['queue:', /empty segment/],
    ['queue:orders..eu', /empty segment/],
    ['queue:orders.', /empty segment/],
    ['queue:orders-*', /segment 'orders-\*': wildcards must be a whole segment/],
    ['queue:***', /wildcards must be a whole segment/],
    ['queue:**.eu', /'\*\*' may only be the last segment/],
    ['mq:**/x', /'\*\*' may only be the last segment/],
    ['queue:my orders', /segment 'my orders'/],
  ];
  for (const [raw, expected] of invalid) {
    test(`${JSON.stringify(raw)} is refused with an AddressError (${expected.source})`, () => {
      assert.throws(
        () => parsePattern(raw),
        (err: unknown) => err instanceof AddressError && err.code === 'bad_address' && expected.test(err.message),
      );
    });
  }

  test('a refused pattern is named in the error message', () => {
    assert.throws(() => parsePattern('queue:orders-*'), (err: unknown) => err instanceof AddressError && err.message.includes("'queue:orders-*'"));
  });
});

describe('matchesPattern', () => {
  test('a pattern without wildcards matches only that address', () => {
    assert.equal(matches('queue:orders', 'queue:orders'), true);
    assert.equal(matches('queue:orders', 'queue:orders.eu'), false);
    assert.equal(matches('queue:orders', 'queue:order'), false);
    assert.equal(matches('queue:orders', 'person:orders'), false);
  });

  test('* matches exactly one segment', () => {
    assert.equal(matches('queue:orders.*', 'queue:orders.eu'), true);
    assert.equal(matches('queue:orders.*', 'queue:orders.us'), true);
    assert.equal(matches('queue:orders.*', 'queue:orders'), false);
    assert.equal(matches('queue:orders.*', 'queue:orders.eu.x'), false);
    assert.equal(matches('group:*', 'group:payment-approvers'), true);
    assert.equal(matches('queue:*', 'queue:orders.eu'), false);
    assert.equal(matches('queue:*.eu', 'queue:orders.eu'), true);
    assert.equal(matches('queue:*.eu', 'queue:orders.us'), false);
  });

  test('** matches any rest, including nothing', () => {
    assert.equal(matches('queue:**', 'queue:orders'), true);
    assert.equal(matches('queue:**', 'queue:orders.eu.x/y'), true);
    assert.equal(matches('queue:orders.**', 'queue:orders'), true);
    assert.equal(matches('queue:orders.**', 'queue:orders.eu'), true);
    assert.equal(matches('queue:orders.**', 'queue:orders.eu.x'), true);
    assert.equal(matches('queue:orders.**', 'queue:ordersx'), false);
    assert.equal(matches('queue:orders.**', 'queue:returns.eu'), false);
  });

  test('mq:legacy/** matches every address on the legacy broker and no other broker', () => {
    assert.equal(matches('mq:legacy/**', 'mq:legacy/payments.in'), true);
    assert.equal(matches('mq:legacy/**', 'mq:legacy/a/b/c'), true);
    assert.equal(matches('mq:legacy/**', 'mq:legacy2/payments.in'), false);
    assert.equal(matches('mq:legacy/**', 'mq:other/payments.in'), false);
  });

  test('/ and . both separate segments, so * stops at either', () => {
    assert.equal(matches('mq:legacy/*', 'mq:legacy/payments.in'), false);
    assert.equal(matches('mq:legacy/*.in', 'mq:legacy/payments.in'), true);
    assert.equal(matches('mq:*/payments.in', 'mq:legacy/payments.in'), true);
  });

  test(': separates segments too, so dlq: and peer: patterns can reach into the inner address', () => {
    assert.equal(matches('dlq:queue:*', 'dlq:queue:orders'), true);
    assert.equal(matches('dlq:queue:**', 'dlq:queue:orders.eu'), true);
    assert.equal(matches('dlq:queue:**', 'dlq:mq:legacy/payments.in'), false);
    assert.equal(matches('peer:bank-b/queue:*', 'peer:bank-b/queue:trades'), true);
  });

  test('the scheme must match exactly', () => {
    assert.equal(matches('queue:**', 'dlq:queue:orders'), false);
    assert.equal(matches('dlq:**', 'queue:orders'), false);
    assert.equal(matches('person:*', 'group:alice'), false);
  });

  test("'**' alone matches an address of every scheme", () => {
    for (const a of ['queue:orders', 'person:alice', 'group:ops', 'mq:legacy/payments.in', 'peer:bank-b/trades', 'webhook:crm', 'email:ops@example.com', 'flow:payment-approval/abc', 'dlq:queue:orders']) {
      assert.equal(matches('**', a), true, a);
    }
  });
});

describe('patternWithin (delegated administration)', () => {
  test('a pattern is within itself', () => {
    for (const p of ['queue:orders', 'queue:orders.*', 'queue:**', '**', 'mq:legacy/**']) assert.equal(within(p, p), true, p);
  });

  test("everything is within '**', and '**' is within nothing narrower", () => {
    assert.equal(within('queue:orders', '**'), true);
    assert.equal(within('mq:legacy/**', '**'), true);
    assert.equal(within('**', 'queue:**'), false);
  });

  test('narrower patterns are within a wider ** pattern of the same scheme', () => {
    assert.equal(within('queue:orders', 'queue:**'), true);
    assert.equal(within('queue:orders.*', 'queue:**'), true);
    assert.equal(within('queue:orders.eu.**', 'queue:orders.**'), true);
    assert.equal(within('queue:orders', 'queue:orders.**'), true);
    assert.equal(within('mq:legacy/payments.in', 'mq:legacy/**'), true);
  });

  test('a pattern reaching outside the admin pattern is not within it', () => {
    assert.equal(within('queue:**', 'queue:orders.**'), false);
    assert.equal(within('queue:returns.*', 'queue:orders.**'), false);
    assert.equal(within('mq:other/**', 'mq:legacy/**'), false);
    assert.equal(within('queue:orders', 'mq:legacy/**'), false);
  });

  test('* in the inner pattern is within * of the outer, but not within a literal segment', () => {
    assert.equal(within('queue:orders.eu', 'queue:orders.*'), true);
    assert.equal(within('queue:orders.*', 'queue:orders.*'), true);
    assert.equal(within('queue:orders.*', 'queue:orders.eu'), false);
    assert.equal(within('queue:orders.**', 'queue:orders.*'), false);
  });

  test('a pattern with more or fewer segments than a wildcard-free outer one is not within it', () => {
    assert.equal(within('queue:orders.eu', 'queue:orders'), false);
    assert.equal(within('queue:orders', 'queue:orders.*'), false);
    assert.equal(within('queue:orders.eu.x', 'queue:orders.*'), false);
  });

  test('every address the inner pattern matches is matched by the outer one when patternWithin says so', () => {
    const patterns = ['**', 'queue:**', 'queue:orders.**', 'queue:orders.*', 'queue:orders', 'queue:*.eu', 'queue:orders.eu', 'mq:legacy/**'];
    const addresses = ['queue:orders', 'queue:orders.eu', 'queue:orders.us', 'queue:orders.eu.x', 'queue:returns.eu', 'mq:legacy/payments.in', 'person:alice'];
    for (const inner of patterns) {
      for (const outer of patterns) {
        if (!within(inner, outer)) continue;
        for (const a of addresses) {
          if (matches(inner, a)) assert.equal(matches(outer, a), true, `${inner} within ${outer}, but ${a} escapes`);
        }
      }
    }
  });
});

describe('separators are part of the address', () => {
  const m = (p: string, a: string) => matchesPattern(parsePattern(p), a);
  test('a rule for queue:demo.in does not open queue:demo/in or queue:demo:in', () => {
    assert.equal(m('queue:demo.in', 'queue:demo.in'), true);
    assert.equal(m('queue:demo.in', 'queue:demo/in'), false);
    assert.equal(m('mq:legacy/payments.in', 'mq:legacy/payments/in'), false);
  });
  test('* and ** keep the separator written before them', () => {
    assert.equal(m('queue:orders.*', 'queue:orders/eu'), false);
    assert.equal(m('queue:orders.**', 'queue:orders/eu'), false);
    assert.equal(m('queue:orders.**', 'queue:orders.eu/x'), true);
    assert.equal(m('queue:orders.**', 'queue:orders'), true);
  });
  test('delegation: queue:orders/** is not within queue:orders.**', () => {
    assert.equal(patternWithin(parsePattern('queue:orders/**'), parsePattern('queue:orders.**')), false);
    assert.equal(patternWithin(parsePattern('queue:orders.eu'), parsePattern('queue:orders.**')), true);
    assert.equal(patternWithin(parsePattern('queue:orders.eu'), parsePattern('queue:orders.*')), true);
  });
});
