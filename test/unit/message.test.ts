import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseDuration } from '../../src/core/duration.ts';
import { AddressError, ValidationError } from '../../src/core/errors.ts';
import { createMessage, decodeMessage, encodeMessage, principalId, type MessageInput, type Principal, type StoredMessage } from '../../src/core/message.ts';

const dana: Principal = { kind: 'user', name: 'dana', groups: ['ops'] };
const NOW = new Date('2024-05-01T12:00:00.000Z');

/** Through JSON, as a store would keep it. */
const throughJson = (s: StoredMessage): StoredMessage => JSON.parse(JSON.stringify(s)) as StoredMessage;

describe('createMessage', () => {
  test('a minimal input gets a generated id, empty headers, JSON content type, null body and the creation time', () => {
    const m = createMessage({ to: 'queue:orders' }, dana, NOW);
    assert.match(m.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.deepEqual(m, { id: m.id, to: 'queue:orders', sender: { kind: 'user', name: 'dana' }, headers: {}, contentType: 'application/json', body: null, createdAt: '2024-05-01T12:00:00.000Z' });
  });

  test('each message without a client id gets a different id', () => {
    const ids = new Set(Array.from({ length: 50 }, () => createMessage({ to: 'queue:orders' }, dana).id));
    assert.equal(ids.size, 50);
  });

  test('a client-supplied id is kept (it is the dedup key)', () => {
    assert.equal(createMessage({ to: 'queue:orders', id: 'order-42:v1' }, dana).id, 'order-42:v1');
    const long = 'x'.repeat(256);
    assert.equal(createMessage({ to: 'queue:orders', id: long }, dana).id, long);
  });

  test('a null id is treated as absent and generated', () => {
    assert.match(createMessage({ to: 'queue:orders', id: null }, dana).id, /^[0-9a-f-]{36}$/);
  });

  test('a bad id (empty, with spaces, non-ASCII, too long, not a string) is a ValidationError', () => {
    for (const id of ['', 'a b', 'ordér', 'tab\there', 'x'.repeat(257), 42, { id: 'x' }]) {
      assert.throws(() => createMessage({ to: 'queue:orders', id }, dana), (err: unknown) => err instanceof ValidationError && err.status === 400 && /'id' must be/.test(err.message), JSON.stringify(id));
    }
  });

  test('the sender is always the authenticated principal, even when the input carries a sender', () => {
    const forged = { to: 'queue:orders', sender: { kind: 'system', name: 'gateway' }, body: { sender: 'kept in body' } } as MessageInput;
    const m = createMessage(forged, dana);
    assert.deepEqual(m.sender, { kind: 'user', name: 'dana' });
    assert.deepEqual(m.body, { sender: 'kept in body' });
  });

  test("the sender carries only kind and name, never the principal's groups", () => {
    const m = createMessage({ to: 'queue:orders' }, dana);
    assert.equal('groups' in m.sender, false);
  });

  test('fields the gateway decides (createdAt, from) are not taken from the client', () => {
    const m = createMessage({ to: 'queue:orders', createdAt: '1999-01-01T00:00:00Z', from: 'queue:elsewhere' } as MessageInput, dana, NOW);
    assert.equal(m.createdAt, NOW.toISOString());
    assert.equal(m.from, undefined);
  });

  test('optional fields are kept and expiresAt is normalised to UTC ISO', () => {
    const m = createMessage(
      { to: 'queue:orders', body: { n: 1 }, correlationId: 'c-1', replyTo: 'flow:payment-approval/abc', subject: 'hello', contentType: 'text/plain', expiresAt: '2030-01-01T01:00:00+01:00', headers: { 'x-a': '1', b: '' } },
      dana,
      NOW,
    );
    assert.equal(m.correlationId, 'c-1');
    assert.equal(m.replyTo, 'flow:payment-approval/abc');
    assert.equal(m.subject, 'hello');
    assert.equal(m.contentType, 'text/plain');
    assert.equal(m.expiresAt, '2030-01-01T00:00:00.000Z');
    assert.deepEqual(m.headers, { 'x-a': '1', b: '' });
    assert.deepEqual(m.body, { n: 1 });
  });

  test('absent optional fields are not present on the message', () => {
    const m = createMessage({ to: 'queue:orders' }, dana);
    for (const k of ['correlationId', 'replyTo', 'subject', 'expiresAt', 'from']) assert.equal(k in m, false, k);
  });

  test('the destination is validated with the address parser', () => {
    assert.throws(() => createMessage({ to: 'orders' }, dana), AddressError);
    assert.throws(() => createMessage({ to: 'queue:' }, dana), AddressError);
    assert.throws(() => createMessage({} as MessageInput, dana), AddressError);
  });

  test('a bad replyTo address is an AddressError naming it', () => {
    assert.throws(() => createMessage({ to: 'queue:orders', replyTo: 'nowhere' }, dana), (err: unknown) => err instanceof AddressError && err.address === 'nowhere');
    assert.throws(() => createMessage({ to: 'queue:orders', replyTo: 42 }, dana), (err: unknown) => err instanceof ValidationError && /'replyTo'/.test(err.message));
  });

  test('header values must be strings', () => {
    assert.throws(() => createMessage({ to: 'queue:orders', headers: { 'x-n': 1 } }, dana), (err: unknown) => err instanceof ValidationError && /header 'x-n' must be a string, got number/.test(err.message));
    assert.throws(() => createMessage({ to: 'queue:orders', headers: { 'x-o': { a: 'b' } } }, dana), (err: unknown) => err instanceof ValidationError && /header 'x-o'/.test(err.message));
  });

  test('headers must be an object, not an array or a string', () => {
    for (const headers of [['a'], 'a=b', 5]) {
      assert.throws(() => createMessage({ to: 'queue:orders', headers }, dana), (err: unknown) => err instanceof ValidationError && /'headers' must be an object/.test(err.message), JSON.stringify(headers));
    }
  });

  test('at most 64 headers are accepted', () => {
    const h = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`h${i}`, 'v']));
    assert.equal(Object.keys(createMessage({ to: 'queue:orders', headers: h(64) }, dana).headers).length, 64);
    assert.throws(() => createMessage({ to: 'queue:orders', headers: h(65) }, dana), (err: unknown) => err instanceof ValidationError && /at most 64/.test(err.message));
  });

  test('an expiresAt that is not a date is a ValidationError', () => {
    assert.throws(() => createMessage({ to: 'queue:orders', expiresAt: 'tomorrow' }, dana), (err: unknown) => err instanceof ValidationError && /'expiresAt'/.test(err.message));
  });

  test('optional string fields must be non-empty strings', () => {
    for (const field of ['correlationId', 'subject', 'contentType'] as const) {
      assert.throws(() => createMessage({ to: 'queue:orders', [field]: '' }, dana), (err: unknown) => err instanceof ValidationError && err.message.includes(`'${field}'`), field);
      assert.throws(() => createMessage({ to: 'queue:orders', [field]: 7 }, dana), (err: unknown) => err instanceof ValidationError && err.message.includes(`'${field}'`), field);
    }
  });

  test('input that is not an object is a ValidationError', () => {
    for (const input of [null, 'queue:orders', 5]) {
      assert.throws(() => createMessage(input as unknown as MessageInput, dana), ValidationError);
    }
  });
});

describe('encodeMessage / decodeMessage', () => {
  test('a Buffer body survives a JSON round trip byte for byte', () => {
    const bytes = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
    const m = createMessage({ to: 'queue:files', body: bytes, contentType: 'application/octet-stream' }, dana, NOW);
    const stored = throughJson(encodeMessage(m));
    assert.equal(stored.bodyBase64, true);
    assert.equal(typeof stored.body, 'string');
    const back = decodeMessage(stored);
    assert.ok(Buffer.isBuffer(back.body));
    assert.deepEqual(back.body, bytes);
    assert.equal('bodyBase64' in back, false);
    assert.deepEqual({ ...back, body: null }, { ...m, body: null });
  });

  test('a Uint8Array body comes back as the same bytes', () => {
    const m = createMessage({ to: 'queue:files', body: new Uint8Array([9, 8, 7]) }, dana, NOW);
    const back = decodeMessage(throughJson(encodeMessage(m)));
    assert.deepEqual([...(back.body as Buffer)], [9, 8, 7]);
  });

  test('a JSON body that looks like a binary marker ({$binary: …}) comes back as that same JSON, not as bytes', () => {
    const body = { $binary: 'AAECAw==', bodyBase64: true, type: 'Buffer', data: [1, 2] };
    const m = createMessage({ to: 'queue:orders', body }, dana, NOW);
    const stored = throughJson(encodeMessage(m));
    assert.equal(stored.bodyBase64, undefined);
    const back = decodeMessage(stored);
    assert.equal(Buffer.isBuffer(back.body), false);
    assert.deepEqual(back, m);
  });

  test('a JSON string body that happens to be valid base64 stays a string', () => {
    const m = createMessage({ to: 'queue:orders', body: 'AAECAw==' }, dana, NOW);
    assert.deepEqual(decodeMessage(throughJson(encodeMessage(m))), m);
  });

  test('plain JSON bodies of every kind survive the round trip', () => {
    for (const body of [{ ref: 'P-1', amount: 12.5, tags: ['a'] }, [1, 2, 3], 'text', 0, false, null]) {
      const m = createMessage({ to: 'queue:orders', body }, dana, NOW);
      assert.deepEqual(decodeMessage(throughJson(encodeMessage(m))), m, JSON.stringify(body));
    }
  });
});

describe('principalId', () => {
  test('is kind:name', () => {
    assert.equal(principalId(dana), 'user:dana');
    assert.equal(principalId({ kind: 'peer', name: 'O=Bank B,L=Paris,C=FR' }), 'peer:O=Bank B,L=Paris,C=FR');
  });
});

describe('parseDuration', () => {
  const ok: [unknown, number][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['10m', 600_000],
    ['4h', 14_400_000],
    ['7d', 604_800_000],
    ['1.5s', 1500],
    [' 30s ', 30_000],
    ['0s', 0],
    [250, 250],
    [0, 0],
  ];
  for (const [input, ms] of ok) {
    test(`${JSON.stringify(input)} is ${ms} ms`, () => {
      assert.equal(parseDuration(input), ms);
    });
  }

  const bad: unknown[] = ['5x', '', '10', '-1s', '1S', 's', '1 day', -5, Number.NaN, Number.POSITIVE_INFINITY, null, undefined, {}, ['1s']];
  for (const input of bad) {
    test(`${String(JSON.stringify(input))} is refused with a ValidationError listing the accepted forms`, () => {
      assert.throws(() => parseDuration(input), (err: unknown) => err instanceof ValidationError && /invalid duration/.test(err.message) && /500ms, 30s, 10m, 4h, 7d/.test(err.message));
    });
  }
});
