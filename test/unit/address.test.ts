import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isAddress, parseAddress, schemes } from '../../src/core/address.ts';
import { AddressError } from '../../src/core/errors.ts';

/** Asserts that `raw` is refused with an AddressError naming it and saying what was expected. */
function assertRefused(raw: string, expected: RegExp): AddressError {
  let caught: unknown;
  try {
    parseAddress(raw);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof AddressError, `expected an AddressError for ${JSON.stringify(raw)}, got ${String(caught)}`);
  assert.equal(caught.code, 'bad_address');
  assert.equal(caught.status, 400);
  assert.equal(caught.address, raw);
  assert.ok(caught.message.includes(`'${raw}'`), `message names the address: ${caught.message}`);
  assert.match(caught.message, /expected/);
  assert.match(caught.message, expected);
  return caught;
}

describe('parseAddress: valid addresses of every scheme', () => {
  const valid: [string, string, string][] = [
    ['queue:orders', 'queue', 'orders'],
    ['queue:orders.eu', 'queue', 'orders.eu'],
    ['queue:orders/eu_west-1', 'queue', 'orders/eu_west-1'],
    ['person:alice', 'person', 'alice'],
    ['person:alice.smith@example.com', 'person', 'alice.smith@example.com'],
    ['group:payment-approvers', 'group', 'payment-approvers'],
    ['mq:legacy/payments.in', 'mq', 'legacy/payments.in'],
    ['mq:legacy/queue/deep:name', 'mq', 'legacy/queue/deep:name'],
    ['peer:bank-b/trades', 'peer', 'bank-b/trades'],
    ['peer:bank-b/queue:inbound.x', 'peer', 'bank-b/queue:inbound.x'],
    ['webhook:crm', 'webhook', 'crm'],
    ['email:ops@example.com', 'email', 'ops@example.com'],
    ['email:first.last+tag@mail.example.co.uk', 'email', 'first.last+tag@mail.example.co.uk'],
    ['flow:payment-approval', 'flow', 'payment-approval'],
    ['flow:payment-approval/3f2b9c1e-7a4d-4e0b-9c1d-2a6f8e9b0c11', 'flow', 'payment-approval/3f2b9c1e-7a4d-4e0b-9c1d-2a6f8e9b0c11'],
    ['dlq:queue:orders', 'dlq', 'queue:orders'],
    ['tmp:k3x9q2-7/1', 'tmp', 'k3x9q2-7/1'],
    ['topic:trades.eu', 'topic', 'trades.eu'],
    ['topic:trades.*?subscription=risk', 'topic', 'trades.*?subscription=risk'],
  ];
  for (const [raw, scheme, path] of valid) {
    test(`${raw} parses to scheme '${scheme}' and path '${path}', keeping the raw text`, () => {
      assert.deepEqual(parseAddress(raw), { scheme, path, raw });
      assert.equal(isAddress(raw), true);
    });
  }

  test('every registered scheme has at least one valid example above', () => {
    const covered = new Set(valid.map(([, scheme]) => scheme));
    assert.deepEqual(schemes.names.filter((s) => !covered.has(s)), []);
  });

  test('the path is everything after the first colon', () => {
    assert.equal(parseAddress('mq:legacy/a:b:c').path, 'legacy/a:b:c');
  });
});

describe('parseAddress: refused addresses name the address and what was expected', () => {
  const invalid: [string, RegExp][] = [
    // not scheme:path at all
    ['orders', /scheme:path/],
    [':orders', /scheme:path/],
    // unknown or wrongly-cased scheme (addresses are case-sensitive)
    ['nats:orders', /unknown scheme 'nats'/],
    ['Queue:orders', /unknown scheme 'Queue'/],
    // empty path
    ['queue:', /empty path/],
    ['person:', /empty path/],
    // queue
    ['queue:orders..eu', /queue:<name>/],
    ['queue:.orders', /queue:<name>/],
    ['queue:orders.', /queue:<name>/],
    ['queue:my orders', /queue:<name>/],
    ['queue:orders*', /queue:<name>/],
    // person / group
    ['person:-alice', /person:<user>/],
    ['person:al ice', /person:<user>/],
    ['group:.admins', /group:<group>/],
    ['group:pay/approvers', /group:<group>/],
    // mq
    ['mq:legacy', /mq:<broker>\/<address>/],
    ['mq:/payments.in', /missing broker name/],
    ['mq:legacy/', /missing address after the \//],
    ['mq:leg.acy/payments.in', /bad broker name 'leg\.acy'/],
    ['mq:legacy/payments in', /may not contain spaces/],
    // peer
    ['peer:bank-b', /peer:<alias>\/<queue>/],
    ['peer:/trades', /missing peer alias name/],
    ['peer:bank b/trades', /bad peer alias name/],
    ['peer:bank-b/', /missing address after the \//],
    // webhook
    ['webhook:crm.events', /webhook:<name>/],
    ['webhook:crm/x', /webhook:<name>/],
    // email
    ['email:ops', /email:<user@domain>/],
    ['email:ops@localhost', /email:<user@domain>/],
    ['email:ops @example.com', /email:<user@domain>/],
    ['email:@example.com', /email:<user@domain>/],
    // flow
    ['flow:payment approval', /flow:<name>/],
    ['flow:payment.approval', /bad flow name/],
    ['flow:/abc', /bad flow name/],
    ['flow:payment-approval/', /bad instance id/],
    ['flow:payment-approval/a/b', /bad instance id/],
    ['flow:payment-approval/a b', /bad instance id/],
  ];
  for (const [raw, expected] of invalid) {
    test(`${JSON.stringify(raw)} is refused (${expected.source})`, () => {
      assertRefused(raw, expected);
      assert.equal(isAddress(raw), false);
    });
  }

  test('non-strings and the empty string are refused with an AddressError asking for a non-empty string', () => {
    for (const raw of ['', undefined, null, 42, {}, ['queue:orders']]) {
      assert.throws(() => parseAddress(raw), (err: unknown) => err instanceof AddressError && /non-empty string like queue:orders/.test(err.message), String(raw));
      assert.equal(isAddress(raw), false);
    }
  });
});

describe('parseAddress: dlq:<address> nesting', () => {
  test('dlq: wraps any other valid address, keeping it whole as the path', () => {
    for (const inner of ['queue:orders', 'mq:legacy/payments.in', 'peer:bank-b/trades', 'flow:payment-approval/abc123', 'person:alice', 'email:ops@example.com']) {
      const a = parseAddress(`dlq:${inner}`);
      assert.equal(a.scheme, 'dlq');
      assert.equal(a.path, inner);
      assert.deepEqual(parseAddress(a.path).raw, inner);
    }
  });

  test('a dead-letter queue of a dead-letter queue is refused', () => {
    assertRefused('dlq:dlq:queue:orders', /has no dead-letter queue of its own/);
  });

  test('an invalid inner address is refused and the inner problem is quoted', () => {
    const err = assertRefused('dlq:bogus', /inner address: invalid address 'bogus'/);
    assert.match(err.message, /dlq:<address>/);
    assertRefused('dlq:queue:', /inner address: invalid address 'queue:': empty path/);
    assertRefused('dlq:mq:legacy', /inner address: .*mq:<broker>\/<address>/);
  });

  test('dlq: with nothing after it is refused', () => {
    assertRefused('dlq:', /empty path/);
  });
});

describe('parseAddress: length limit', () => {
  test('an address of exactly 512 characters is accepted', () => {
    const raw = 'queue:' + 'a'.repeat(512 - 'queue:'.length);
    assert.equal(raw.length, 512);
    assert.equal(parseAddress(raw).raw, raw);
  });

  test('an address of 513 characters is refused, naming its start and the limit', () => {
    const raw = 'queue:' + 'a'.repeat(513 - 'queue:'.length);
    assert.throws(
      () => parseAddress(raw),
      (err: unknown) =>
        err instanceof AddressError &&
        err.message.includes(raw.slice(0, 40)) &&
        !err.message.includes(raw) &&
        /longer than 512 characters/.test(err.message),
    );
    assert.equal(isAddress(raw), false);
  });
});

describe('parseAddress remembers what it parsed', () => {
  test('the same address again is the same answer, which no caller can change', () => {
    const a = parseAddress('queue:orders.eu');
    const b = parseAddress('queue:orders.eu');
    assert.equal(a, b);
    assert.deepEqual(b, { scheme: 'queue', path: 'orders.eu', raw: 'queue:orders.eu' });
    assert.throws(() => { (a as { path: string }).path = 'other'; }, TypeError);
    assert.equal(parseAddress('queue:orders.eu').path, 'orders.eu');
  });

  test('an invalid address is refused every time it is asked, never remembered as valid', () => {
    for (let i = 0; i < 3; i++) assertRefused('queue:orders..eu', /expected/);
    for (let i = 0; i < 3; i++) assert.throws(() => parseAddress('nosuch:x'), AddressError);
  });

  test('tens of thousands of different addresses are each parsed right', () => {
    for (let i = 0; i < 25_000; i++) assert.equal(parseAddress(`queue:q${i}.x`).path, `q${i}.x`);
    assert.equal(parseAddress('queue:q0.x').raw, 'queue:q0.x');
  });
});
