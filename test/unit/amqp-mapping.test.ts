import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CLAIMED_SENDER_HEADER, SENDER_PROPERTY, fromAmqp, toAmqp, type AmqpMessage } from '../../src/amqp/mapping.ts';
import { ValidationError } from '../../src/core/errors.ts';
import type { Message } from '../../src/core/message.ts';

// DESIGN §6, the AMQP mapping, as pure functions: Message → AMQP (toAmqp) and AMQP → Message
// (fromAmqp), as the embedded endpoint, the peer transport and the mq transport use them.

const BROKER = { kind: 'broker' as const, name: 'legacy' };

function message(extra: Partial<Message> = {}): Message {
  return {
    id: 'order-1',
    to: 'mq:legacy/orders',
    sender: { kind: 'user', name: 'ops' },
    headers: { 'x-region': 'eu', 'x-priority': 'high' },
    body: { amount: 12.5, items: ['a', 'b'], nested: { ok: true } },
    createdAt: '2025-03-01T10:00:00.000Z',
    ...extra,
  } as Message;
}

/** What a receiving peer would see: the AMQP message as fromAmqp gets it from rhea. */
const roundTrip = (m: Message, sender = BROKER, o: Parameters<typeof toAmqp>[1] = {}) => fromAmqp(toAmqp(m, o), 'queue:in', sender);

describe('toAmqp → fromAmqp round trips', () => {
  test('a JSON message keeps its id, body, headers, correlation, subject, reply-to and times', () => {
    const m = message({ correlationId: 'corr-7', subject: 'new-order', replyTo: 'queue:replies', expiresAt: '2030-01-01T00:00:00.000Z' });
    const back = roundTrip(m);
    assert.equal(back.id, 'order-1');
    assert.equal(back.to, 'queue:in');
    assert.deepEqual(back.body, m.body);
    assert.equal(back.contentType, 'application/json');
    assert.equal(back.correlationId, 'corr-7');
    assert.equal(back.subject, 'new-order');
    assert.equal(back.replyTo, 'queue:replies');
    assert.equal(back.createdAt, m.createdAt);
    assert.equal(back.expiresAt, m.expiresAt);
    assert.equal(back.headers['x-region'], 'eu');
    assert.equal(back.headers['x-priority'], 'high');
  });

  test('a binary body stays the same bytes, with its content type', () => {
    const bytes = Buffer.from('%PDF-1.4 \x00\x01\x02\xff binary', 'latin1');
    const back = roundTrip(message({ body: bytes, contentType: 'application/pdf' }));
    assert.ok(Buffer.isBuffer(back.body));
    assert.ok((back.body as Buffer).equals(bytes));
    assert.equal(back.contentType, 'application/pdf');
  });

  test('a binary body that says application/json goes out as application/octet-stream, not as JSON', () => {
    const a = toAmqp(message({ body: Buffer.from([0, 1, 2]), contentType: 'application/json' }));
    assert.equal(a.content_type, 'application/octet-stream');
    const back = fromAmqp(a, 'queue:in', BROKER);
    assert.ok(Buffer.isBuffer(back.body));
  });

  test('null, strings and numbers survive as JSON', () => {
    for (const body of [null, 'text', 42, [1, 'two']]) assert.deepEqual(roundTrip(message({ body })).body, body);
  });

  test('the sender is the one the receiving door stamps; the sending side\'s claim is kept as a header only', () => {
    const back = roundTrip(message({ sender: { kind: 'user', name: 'mallory' } }));
    assert.deepEqual(back.sender, BROKER);
    assert.equal(back.headers[CLAIMED_SENDER_HEADER], 'user:mallory');
    assert.equal(back.headers[SENDER_PROPERTY], undefined, 'the sender property is not a header');
  });

  test('a claim that matches the stamped sender adds no header', () => {
    const back = roundTrip(message({ sender: { kind: 'broker', name: 'legacy' } }));
    assert.equal(back.headers[CLAIMED_SENDER_HEADER], undefined);
  });
});

describe('toAmqp', () => {
  test('carries the id, a durable flag, headers plus switchboard-sender, and the body as a data section', () => {
    const a = toAmqp(message());
    assert.equal(a.message_id, 'order-1');
    assert.equal(a.durable, true);
    assert.deepEqual(a.application_properties, { 'x-region': 'eu', 'x-priority': 'high', [SENDER_PROPERTY]: 'user:ops' });
    const body = a.body as { typecode: number; content: Buffer };
    assert.equal(body.typecode, 0x75, 'a data section');
    assert.deepEqual(JSON.parse(body.content.toString('utf8')), message().body);
    assert.equal(a.user_id, undefined, 'no user_id unless asked for');
  });

  test('user_id and a reply-to override are set when the hop asks for them', () => {
    const a = toAmqp(message({ replyTo: 'queue:mine' }), { userId: 'gateway-a', replyTo: '/queue/replies' });
    assert.ok(Buffer.isBuffer(a.user_id));
    assert.equal((a.user_id as Buffer).toString('utf8'), 'gateway-a');
    assert.equal(a.reply_to, '/queue/replies');
  });
});

describe('fromAmqp', () => {
  const data = (text: string | Buffer, extra: AmqpMessage = {}): AmqpMessage => ({
    message_id: 'm-1',
    body: { typecode: 0x75, content: Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8') },
    ...extra,
  });

  test('application properties of any type become string headers (dates ISO, binary base64)', () => {
    const when = new Date('2025-01-02T03:04:05.000Z');
    const m = fromAmqp(data('{}', { application_properties: { n: 7, flag: true, at: when, raw: Buffer.from('hi') } }), 'queue:in', BROKER);
    assert.deepEqual(m.headers, { n: '7', flag: 'true', at: when.toISOString(), raw: Buffer.from('hi').toString('base64') });
  });

  test('text/* bodies become strings; other types stay bytes', () => {
    assert.equal(fromAmqp(data('héllo', { content_type: 'text/plain; charset=utf-8' }), 'queue:in', BROKER).body, 'héllo');
    const bin = fromAmqp(data(Buffer.from([1, 2, 3]), { content_type: 'image/png' }), 'queue:in', BROKER);
    assert.ok(Buffer.isBuffer(bin.body));
    assert.equal(bin.contentType, 'image/png');
  });

  test('a data section without a content type: JSON when it parses, bytes when it does not', () => {
    assert.deepEqual(fromAmqp(data('{"a":1}'), 'queue:in', BROKER).body, { a: 1 });
    const m = fromAmqp(data(Buffer.from([0xff, 0x00])), 'queue:in', BROKER);
    assert.ok(Buffer.isBuffer(m.body));
    assert.equal(m.contentType, 'application/octet-stream');
  });

  test('a body declared JSON that is not JSON is refused, saying so', () => {
    assert.throws(() => fromAmqp(data('{nope', { content_type: 'application/json' }), 'queue:in', BROKER), (err: unknown) =>
      err instanceof ValidationError && err.code === 'malformed_message' && /declared application\/json but is not valid JSON/.test(err.message));
  });

  test('an AMQP value body (map, string) is taken as structured data', () => {
    assert.deepEqual(fromAmqp({ message_id: 'v', body: { a: [1, 2] } }, 'queue:in', BROKER).body, { a: [1, 2] });
    assert.equal(fromAmqp({ message_id: 'v', body: 'plain' }, 'queue:in', BROKER).body, 'plain');
  });

  test('a body over maxBytes is refused as payload_too_large', () => {
    assert.throws(() => fromAmqp(data('x'.repeat(100)), 'queue:in', BROKER, { maxBytes: 10 }), (err: unknown) => err instanceof ValidationError && err.code === 'payload_too_large');
  });

  test('binary and numeric ids become text; a missing id gets a fresh UUID; a bad id is refused', () => {
    assert.equal(fromAmqp(data('{}', { message_id: Buffer.from([0xab, 0xcd]) }), 'queue:in', BROKER).id, 'abcd');
    assert.equal(fromAmqp(data('{}', { message_id: 42 }), 'queue:in', BROKER).id, '42');
    assert.match(fromAmqp(data('{}', { message_id: undefined }), 'queue:in', BROKER).id, /^[0-9a-f-]{36}$/);
    assert.throws(() => fromAmqp(data('{}', { message_id: 'has space' }), 'queue:in', BROKER), ValidationError);
  });

  test('reply-to passes through mapReplyTo; a reply-to it does not map is dropped', () => {
    const mapped = fromAmqp(data('{}', { reply_to: '/queue/replies' }), 'queue:in', BROKER, { mapReplyTo: (r) => (r === '/queue/replies' ? 'mq:legacy/replies' : undefined) });
    assert.equal(mapped.replyTo, 'mq:legacy/replies');
    const dropped = fromAmqp(data('{}', { reply_to: '/exchange/x' }), 'queue:in', BROKER, { mapReplyTo: () => undefined });
    assert.equal(dropped.replyTo, undefined);
  });
});
