import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CLAIMED_SENDER_HEADER, SENDER_PROPERTY, fromAmqp, toAmqp, type AmqpMessage } from '../../src/amqp/mapping.ts';
import rhea from 'rhea';
import { ValidationError } from '../../src/core/errors.ts';
import { decodeMessage, encodeMessage, expiryReason, isExpired, type Message, type StoredMessage } from '../../src/core/message.ts';
import { messageJson } from '../../src/web/routes/queues.ts';

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

// Issue 14 point 6: messages arrive as they were sent. `wire` is what a door really gets: rhea
// encodes the AMQP message and decodes it again (the decoder src/amqp/mapping.ts keeps the bytes
// beside, so fromAmqp reads the types); `types` reads those bytes back to show the types written.
const T = rhea.types as any;
const wire = (a: AmqpMessage): AmqpMessage => rhea.message.decode(rhea.message.encode(a as never)) as unknown as AmqpMessage;
const hop = (m: Message) => fromAmqp(wire(toAmqp(m)), 'queue:next', { kind: 'user', name: 'ops' });
/** The AMQP type names rhea reads off the wire for the properties and application properties. */
function typesOnWire(a: AmqpMessage): { id: string; correlationId?: string; props: Record<string, string>; body: string } {
  const reader = new T.Reader(rhea.message.encode(a as never));
  const out: { id: string; correlationId?: string; props: Record<string, string>; body: string } = { id: '', props: {}, body: '' };
  while (reader.remaining()) {
    const s = reader.read();
    const code = s.descriptor.value;
    if (code === 0x73) { out.id = s.value[0].type.name; if (s.value[5] && s.value[5].type.name !== 'Null') out.correlationId = s.value[5].type.name; }
    if (code === 0x74) for (let i = 0; i < s.value.length; i += 2) out.props[s.value[i].value] = s.value[i + 1].type.name;
    if (code >= 0x75 && code <= 0x77) out.body = code === 0x75 ? 'data' : code === 0x76 ? 'sequence' : `value:${s.type.name}`;
  }
  return out;
}
const received = (a: AmqpMessage) => fromAmqp(wire(a), 'queue:in', { kind: 'user', name: 'ops' });

describe('AMQP types survive a hop (issue 14 point 6)', () => {
  test('ulong, uuid, binary and string message and correlation ids keep their type and value; HTTP sees their strings', () => {
    const uuid = Buffer.from('6ba7b8109dad11d180b400c04fd430c8', 'hex');
    const cases: [unknown, string, string, string][] = [
      [T.wrap_ulong(7), '7', 'ulong', 'SmallUlong'],
      [T.wrap_ulong(Buffer.from('fffffffffffffffe', 'hex')), '18446744073709551614', 'ulong', 'Ulong'],
      [T.wrap_uuid(uuid), '6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'uuid', 'Uuid'],
      [T.wrap_binary(Buffer.from([0, 1, 0xfe])), '0001fe', 'binary', 'Vbin8'],
      ['order-9', 'order-9', 'string', 'Str8'],
    ];
    for (const [raw, text, type, onWire] of cases) {
      const m = received({ message_id: raw, correlation_id: raw, body: 'x' });
      assert.equal(m.id, text);
      assert.equal(m.correlationId, text);
      assert.equal(m.amqp?.idType, type === 'string' ? undefined : type);
      const out = typesOnWire(toAmqp(m));
      assert.equal(out.id, onWire, `${type} id on the wire`);
      assert.equal(out.correlationId, onWire, `${type} correlation id on the wire`);
      assert.deepEqual({ id: hop(m).id, type: hop(m).amqp?.idType }, { id: text, type: m.amqp?.idType }, 'and again after another hop');
    }
  });

  test('an id a hop changed leaves as a string, not as a mangled ulong', () => {
    const m = received({ message_id: T.wrap_ulong(7), body: 'x' });
    assert.equal(typesOnWire(toAmqp({ ...m, id: 'undeliverable:7' })).id, 'Str8');
  });

  test('application properties keep their AMQP types; headers keep their string forms', () => {
    const when = new Date('2023-11-14T22:13:20.123Z');
    const m = received({
      message_id: 'p', body: 'x',
      application_properties: { int: T.wrap_int(-5), long: T.wrap_long(5), bool: true, double: T.wrap_double(5), text: '5', at: when, id: T.wrap_uuid(Buffer.alloc(16, 1)), sym: T.wrap_symbol('s'), big: T.wrap_ulong(Buffer.from('ffffffffffffffff', 'hex')) },
    });
    assert.deepEqual(m.headers, { int: '-5', long: '5', bool: 'true', double: '5', text: '5', at: when.toISOString(), id: '01010101-0101-0101-0101-010101010101', sym: 's', big: '18446744073709551615' });
    const props = typesOnWire(toAmqp(m)).props;
    assert.deepEqual(props, { int: 'SmallInt', long: 'SmallLong', bool: 'True', double: 'Double', text: 'Str8', at: 'Timestamp', id: 'Uuid', sym: 'Sym8', big: 'Ulong', [SENDER_PROPERTY]: 'Str8' });
    assert.deepEqual(hop(m).amqp?.properties, m.amqp?.properties);
  });

  test('a header a hop changed leaves as the new string', () => {
    const m = received({ message_id: 'p', body: 'x', application_properties: { n: T.wrap_int(5) } });
    assert.equal(typesOnWire(toAmqp({ ...m, headers: { n: 'five' } })).props.n, 'Str8');
  });

  test('value, sequence and data bodies keep their section, their content and their content type', () => {
    const value = received({ message_id: 'v', content_type: 'application/x-amqp', body: T.wrap_map({ n: T.wrap_long(1), l: [1, 'a'] }) });
    assert.deepEqual(value.body, { n: 1, l: [1, 'a'] });
    assert.equal(value.contentType, 'application/x-amqp');
    assert.equal(typesOnWire(toAmqp(value)).body, 'value:Map32');
    assert.deepEqual(hop(value).amqp?.body, value.amqp?.body, 'the long stays a long, the uint a uint');
    assert.equal(toAmqp(value).content_type, 'application/x-amqp');

    const seq = received({ message_id: 's', body: rhea.message.sequence_section([1, 'two']) });
    assert.deepEqual(seq.body, [1, 'two']);
    assert.equal(typesOnWire(toAmqp(seq)).body, 'sequence');
    assert.equal(toAmqp(seq).content_type, undefined, 'no content type was sent, none is invented');

    const text = received({ message_id: 't', content_type: 'text/plain', body: rhea.message.data_section(Buffer.from('hello')) });
    assert.equal(typesOnWire(toAmqp(text)).body, 'data');
    assert.deepEqual((toAmqp(text).body as { content: Buffer }).content, Buffer.from('hello'), 'text goes out as its bytes, not as a JSON string');

    const json = Buffer.from('{"a": 1,  "b": [1, 2]}');
    const j = received({ message_id: 'j', content_type: 'application/json', body: rhea.message.data_section(json) });
    assert.deepEqual(j.body, { a: 1, b: [1, 2] });
    assert.ok((toAmqp(j).body as { content: Buffer }).content.equals(json), 'a JSON data section keeps its own bytes');
    assert.deepEqual(JSON.parse((toAmqp({ ...j, body: { a: 2 } }).body as { content: Buffer }).content.toString()), { a: 2 }, 'unless the body was changed');

    const changed = toAmqp({ ...value, body: { n: 2 } });
    assert.equal(typesOnWire(changed).body, 'value:Map32', 'a changed value body is still a value section');
    assert.deepEqual(received(changed).body, { n: 2 });
  });

  test('durable, priority, ttl, absolute-expiry-time, group and content-encoding are kept; a ttl sets the expiry', () => {
    const abs = new Date(Date.now() + 3_600_000);
    const m = received({ message_id: 'h', body: 'x', durable: false, priority: 7, ttl: 60_000, absolute_expiry_time: abs, group_id: 'g', group_sequence: 3, reply_to_group_id: 'rg', content_encoding: 'gzip' });
    const a = wire(toAmqp(m));
    assert.deepEqual([a.durable, a.priority, a.ttl, (a.absolute_expiry_time as Date).getTime(), a.group_id, a.group_sequence, a.reply_to_group_id, a.content_encoding],
      [false, 7, 60_000, abs.getTime(), 'g', 3, 'rg', 'gzip'], 'as sent: durable false stays false');
    assert.ok(Date.parse(m.expiresAt!) <= Date.now() + 60_000 && Date.parse(m.expiresAt!) > Date.now() + 50_000, 'the ttl, earlier than the absolute time, is the expiry');
    const ttlOnly = wire(toAmqp(received({ message_id: 'h2', body: 'x', ttl: 1000 })));
    assert.equal(ttlOnly.absolute_expiry_time, undefined, 'an expiry that came as a ttl leaves as that ttl');
    assert.equal(wire(toAmqp(message())).durable, true, 'a message that did not come over AMQP leaves durable');
  });

  test('isExpired: past expiresAt only', () => {
    assert.equal(isExpired({ expiresAt: '2030-01-01T00:00:00.000Z' }, new Date('2029-12-31T23:59:59.999Z')), false);
    assert.equal(isExpired({ expiresAt: '2030-01-01T00:00:00.000Z' }, Date.parse('2030-01-01T00:00:00.000Z')), true);
    assert.equal(isExpired({}), false);
    assert.match(expiryReason({ expiresAt: '2030-01-01T00:00:00.000Z', amqp: { ttl: 5 } }), /expired at 2030-01-01T00:00:00.000Z \(ttl 5 ms\)/);
  });

  test('a JSON data body leaves as the bytes it came with while it says the same, stored or not; changed, as its new JSON', () => {
    const spaced = Buffer.from('{"a": 1,  "b": [1, 2], "c": "\\u00e9"}');
    const m = received({ message_id: 'k', content_type: 'application/json', body: rhea.message.data_section(spaced) });
    const out = (msg: Message) => (toAmqp(msg).body as { content: Buffer }).content;
    assert.ok(out(m).equals(spaced), 'passed straight on (a route\'s copy of the message shares its record)');
    assert.ok(out({ ...m, to: 'mq:b/next' }).equals(spaced));
    const stored = decodeMessage(JSON.parse(JSON.stringify(encodeMessage(m))) as StoredMessage);
    assert.equal(stored.amqp?.data, spaced.toString('base64'), 'storing keeps the original bytes, as data');
    assert.ok(out(stored).equals(spaced), 'and a stored, read back message still leaves with them');
    // Changed in place (as flow code could): never the stale bytes.
    (m.body as { a: number }).a = 2;
    assert.deepEqual(JSON.parse(out(m).toString()), { a: 2, b: [1, 2], c: 'é' });
    // Bytes JSON.stringify writes the same need no copy when stored.
    const plain = received({ message_id: 'p', content_type: 'application/json', body: rhea.message.data_section(Buffer.from('{"a":1}')) });
    assert.equal('data' in JSON.parse(JSON.stringify(encodeMessage(plain))).amqp, false);
    assert.ok(out(plain).equals(Buffer.from('{"a":1}')));
  });

  test('the typed detail is JSON-safe: it survives storage (encodeMessage → JSON → decodeMessage) and a hop after it', () => {
    const m = received({ message_id: T.wrap_ulong(Buffer.from('fffffffffffffffe', 'hex')), body: T.wrap_list([T.wrap_long(-(2 ** 62)), T.wrap_float(1.5), T.wrap_double(Number.NaN), T.wrap_timestamp(1)]), application_properties: { u: T.wrap_ubyte(3) } });
    const stored = decodeMessage(JSON.parse(JSON.stringify(encodeMessage(m))) as StoredMessage);
    assert.deepEqual(stored.amqp, m.amqp);
    const out = typesOnWire(toAmqp(stored));
    assert.deepEqual([out.id, out.props.u, out.body], ['Ulong', 'Ubyte', 'value:List32']);
    assert.deepEqual(hop(stored).amqp?.body, m.amqp?.body);
  });

  test('over HTTP a binary body is {base64} with its contentType, and the typed copies of the body are left out', () => {
    const m = received({ message_id: T.wrap_binary(Buffer.from([1, 2])), content_type: 'image/png', body: rhea.message.data_section(Buffer.from([0, 0xff])) });
    const j = JSON.parse(JSON.stringify(messageJson(m)));
    assert.deepEqual(j.body, { base64: 'AP8=' });
    assert.equal(j.contentType, 'image/png');
    assert.equal(j.id, '0102');
    assert.equal(j.amqp.idType, 'binary');
    const v = JSON.parse(JSON.stringify(messageJson(received({ message_id: 'v', body: T.wrap_map({ a: 1 }) }))));
    assert.equal(v.amqp.body, undefined);
  });
});
