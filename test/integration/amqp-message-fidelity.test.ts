/**
 * Messages arrive as they were sent (issue 14 point 6; DESIGN §2, §6). Qpid Proton for Python
 * (/usr/bin/python3) sends messages with ulong, uuid, binary and string ids and correlation ids,
 * typed application properties (int, long, boolean, double, float, ubyte, string, symbol,
 * timestamp, uuid), value, sequence and data bodies with content types, priority, ttl,
 * absolute-expiry-time, group-id, group-sequence, reply-to-group-id, content-encoding and durable:
 *
 * - through the embedded endpoint, queue:fid.a → route → queue:fid.a2, back out to Proton;
 * - through queue:fid.b → route → mq:legacy/fid on a real RabbitMQ 3.10 → route → queue:fid.b2;
 * - read straight off RabbitMQ by Proton (what Switchboard put there);
 * - over HTTP: ids as strings, a binary body as {"base64": …} with its contentType.
 *
 * Proton prints each message it sent and received as JSON with every value's AMQP type; the test
 * compares the two. What RabbitMQ 3.10 itself changes is asserted as such (and said in README).
 *
 * Real redis-server, real RabbitMQ, real Proton; every child stopped by PID.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PYTHON = '/usr/bin/python3';

// One Proton program: `send` sends every case and prints each as it is on the wire (encoded and
// decoded again by Proton, so both sides are read the same way); `recv` prints what it receives.
const PROTON = String.raw`
import json, sys, time, uuid
from proton import Message, ulong, uint, ushort, ubyte, byte, short, int32, float32, char, symbol, timestamp, Described, Array
from proton.utils import BlockingConnection

def typed(v, ident=False):
    if v is None: return ['null', None]
    if isinstance(v, bool): return ['boolean', v]
    for t, name in ((ulong, 'ulong'), (uint, 'uint'), (ushort, 'ushort'), (ubyte, 'ubyte'), (byte, 'byte'), (short, 'short'), (int32, 'int'), (timestamp, 'timestamp')):
        if isinstance(v, t): return [name, int(v)]
    if isinstance(v, int): return ['ulong' if ident else 'long', v]  # Proton: an int id is a ulong, an int value a long
    if isinstance(v, float32): return ['float', float(v)]
    if isinstance(v, float): return ['double', v]
    if isinstance(v, char): return ['char', str(v)]
    if isinstance(v, uuid.UUID): return ['uuid', str(v)]
    if isinstance(v, symbol): return ['symbol', str(v)]
    if isinstance(v, str): return ['string', v]
    if isinstance(v, bytes): return ['binary', v.hex()]
    if isinstance(v, dict): return ['map', [[typed(k), typed(x)] for k, x in v.items()]]
    if isinstance(v, list): return ['list', [typed(x) for x in v]]
    return ['unknown', repr(v)]

def dump(m):
    return {
        'subject': m.subject, 'id': typed(m.id, True), 'correlation_id': typed(m.correlation_id, True),
        'durable': m.durable, 'priority': m.priority, 'ttl': m.ttl, 'expiry_time': m.expiry_time,
        'group_id': m.group_id, 'group_sequence': m.group_sequence, 'reply_to_group_id': m.reply_to_group_id,
        'content_type': m.content_type, 'content_encoding': m.content_encoding,
        'properties': {k: typed(v) for k, v in (m.properties or {}).items()},
        'section': ('data' if isinstance(m.body, bytes) else 'sequence') if m.inferred else 'value', 'body': typed(m.body),
        'user_id': m.user_id.decode('utf8') if m.user_id else None,
    }

U1 = uuid.UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')
U2 = uuid.UUID('6ba7b811-9dad-11d1-80b4-00c04fd430c8')
PROPS = {'int': int32(-5), 'long': 5, 'big-long': -2**62, 'bool': True, 'double': 2.5, 'whole-double': 5.0, 'float': float32(1.5),
         'ubyte': ubyte(3), 'string': 'x', 'number-text': '5', 'symbol': symbol('sym'), 'timestamp': timestamp(1700000000123), 'uuid': U1}
EXPIRY = float(int(time.time()) + 3600)

def cases(tag):
    return [
        Message(subject='ulong-value', id=ulong(1001), correlation_id=ulong(77), durable=True, priority=7, ttl=600.0,
                group_id='grp-1', group_sequence=3, reply_to_group_id='grp-r', content_type='application/x-amqp-map',
                properties=dict(PROPS, case=tag), body={'sequence': 1, 'n': int32(5), 'big': ulong(2**64 - 1), 'when': timestamp(1700000000000), 'list': [1, 'two', True, None]}),
        Message(subject='uuid-string', id=U1, correlation_id=U2, durable=False, priority=2, content_type='text/plain', body='hello'),
        Message(subject='binary-data', id=b'\x00\x01\xfe\xff', correlation_id=b'\xca\xfe', durable=True, inferred=True,
                content_type='application/octet-stream', content_encoding='gzip', body=b'\x00\x01\x02\xff'),
        Message(subject='string-sequence', id='fid-string-' + tag, correlation_id='corr-' + tag, durable=True, inferred=True,
                content_type='application/x-list', body=[1, 'a', True, 2.5, uuid.UUID(int=7)]),
        Message(subject='json-data', id=ulong(2**64 - 2), correlation_id='c-json', durable=True, inferred=True,
                content_type='application/json', body=b'{"a": 1,  "b": [1, 2]}'),
        Message(subject='expiry', id=ulong(2**53 + 1), durable=True, expiry_time=EXPIRY, body=symbol('a-symbol-body')),
    ]

def wire(m):
    back = Message()
    back.decode(m.encode())
    return back

mode, url, user, password, address = sys.argv[1:6]
conn = BlockingConnection(url, user=user, password=password, allowed_mechs='PLAIN', timeout=30)
if mode == 'send':
    sender = conn.create_sender(address)
    for m in cases(sys.argv[6]):
        sender.send(m)
        print(json.dumps(dump(wire(m))), flush=True)
else:
    receiver = conn.create_receiver(address, credit=int(sys.argv[6]))
    for _ in range(int(sys.argv[6])):
        m = receiver.receive(timeout=float(sys.argv[7]))
        print(json.dumps(dump(m)), flush=True)
        receiver.accept()
conn.close()
`;

type Dump = Record<string, any>;

let redis: TestRedis | undefined;
let rabbit: TestRabbit | undefined;
let gw: Gateway | undefined;
let dir: string | undefined;
const children = new Set<ChildProcess>();

/** Runs the Proton program; resolves with one JSON object per line it printed (fails on a non-zero exit). */
function proton(args: string[], timeoutMs = 60_000): Promise<Dump[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(dir!, 'fidelity.py'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (code !== 0) reject(new Error(`proton ${args[0]} ${args[4]} exited ${code ?? signal}: ${err}\n${out}`));
      else resolve(out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Dump));
    });
  });
}

const gatewayUrl = () => `amqp://127.0.0.1:${gw!.amqpPort}`;
const CASES = 6;
const bySubject = (ds: Dump[]) => new Map(ds.map((d) => [d.subject as string, d]));

/** Properties Switchboard adds by design (DESIGN §6): the sender it stamps, a claim it does not trust. */
function withoutOwn(d: Dump): Dump {
  const properties = Object.fromEntries(Object.entries(d.properties as Record<string, unknown>).filter(([k]) => !k.startsWith('switchboard-')));
  const { user_id: _userId, ...rest } = d;
  return { ...rest, properties };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-fidelity-'));
  writeFileSync(join(dir, 'fidelity.py'), PROTON);
  redis = await startTestRedis();
  rabbit = await startTestRabbit();
  gw = await startTestGateway(redis.url, {
    amqp: { port: 0, credit: 10 },
    brokers: { legacy: { url: rabbit.url, addressFormat: 'rabbitmq', maxAttempts: 3, sendTimeout: '5s' } },
    routes: [
      { from: 'queue:fid.a', to: 'queue:fid.a2' },
      { from: 'queue:fid.b', to: 'mq:legacy/fid' },
      { from: 'mq:legacy/fid', to: 'queue:fid.b2' },
      { from: 'queue:fid.c', to: 'mq:legacy/fidraw' },
    ],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:legacy/**', verbs: ['send'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    log: { level: 'error' },
  });
  await waitFor(async () => (await api(gw!.url, 'GET', '/readyz')).status === 200, 60_000, 'the gateway to be ready (broker connected)');
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await gw?.stop().catch(() => {});
  await rabbit?.dispose().catch(() => {});
  await redis?.dispose().catch(() => {});
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('Proton → embedded endpoint → queue → route → queue → Proton: every id, property, body section and header field arrives with the same AMQP type and value', { timeout: 120_000 }, async () => {
  const sent = await proton(['send', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.a', 'a']);
  assert.equal(sent.length, CASES);
  const got = bySubject(await proton(['recv', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.a2', String(CASES), '30']));
  for (const s of sent) {
    const g = got.get(s.subject);
    assert.ok(g, `${s.subject} arrived`);
    assert.deepEqual(withoutOwn(g), withoutOwn(s), `${s.subject}: as sent`);
    assert.deepEqual(g.properties['switchboard-sender'], ['string', 'user:ops'], 'the sender Switchboard stamped');
  }
  // The ids Proton's own types make of them, spelled out for the reader.
  assert.deepEqual(got.get('ulong-value')!.id, ['ulong', 1001]);
  assert.deepEqual(got.get('uuid-string')!.id, ['uuid', '6ba7b810-9dad-11d1-80b4-00c04fd430c8']);
  assert.deepEqual(got.get('binary-data')!.correlation_id, ['binary', 'cafe']);
  assert.deepEqual(got.get('json-data')!.body, ['binary', Buffer.from('{"a": 1,  "b": [1, 2]}').toString('hex')], 'a JSON data section keeps its bytes');
});

test('Proton → queue → route → mq: on RabbitMQ 3.10 → route → queue → Proton: the same, except what RabbitMQ itself changes', { timeout: 180_000 }, async () => {
  const sent = await proton(['send', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.b', 'b']);
  const got = bySubject(await proton(['recv', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.b2', String(CASES), '60']));
  for (const s of sent) {
    const g = got.get(s.subject);
    assert.ok(g, `${s.subject} arrived`);
    assert.deepEqual(withoutOwn(g), withoutOwn(s), `${s.subject}: as sent, after RabbitMQ`);
    // From a broker the sender is the broker; what the message claimed is kept, not trusted (DESIGN §6).
    assert.deepEqual(g.properties['switchboard-sender'], ['string', 'broker:legacy']);
    assert.deepEqual(g.properties['switchboard-claimed-sender'], ['string', 'user:ops']);
  }
});

test('what Switchboard puts on RabbitMQ (read there by Proton) is what was sent to Switchboard', { timeout: 180_000 }, async () => {
  const sent = await proton(['send', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.c', 'c']);
  // The mq: endpoint declared fidraw durable on its first send; /amq/queue/ attaches without declaring.
  await waitFor(async () => ((await rabbit!.queues()).fidraw?.ready ?? 0) === CASES, 60_000, `${CASES} messages on RabbitMQ's fidraw`);
  const got = bySubject(await proton(['recv', rabbit!.url, 'guest', 'guest', '/amq/queue/fidraw', String(CASES), '30']));
  for (const s of sent) {
    const g = got.get(s.subject);
    assert.ok(g, `${s.subject} on RabbitMQ`);
    assert.deepEqual(withoutOwn(g), withoutOwn(s), `${s.subject}: as sent, on RabbitMQ`);
    assert.equal(g.user_id, null, 'no user_id towards a broker (DESIGN §6)');
  }
});

test('over HTTP the ids are strings and a binary body is {"base64": …} with its contentType', { timeout: 60_000 }, async () => {
  await proton(['send', gatewayUrl(), 'ops', USERS.ops, 'queue:fid.h', 'h']);
  const r = await api(gw!.url, 'GET', `/api/queues/${enc('queue:fid.h')}?limit=20`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const m = new Map<string, any>((r.body.messages as any[]).map((x) => [x.subject, x]));
  const bin = m.get('binary-data');
  assert.deepEqual(bin.body, { base64: Buffer.from([0, 1, 2, 0xff]).toString('base64') });
  assert.equal(bin.contentType, 'application/octet-stream');
  assert.equal(bin.id, '0001feff');
  assert.equal(bin.amqp.idType, 'binary');
  assert.equal(m.get('ulong-value').id, '1001');
  assert.equal(m.get('ulong-value').amqp.idType, 'ulong');
  assert.equal(m.get('ulong-value').headers.int, '-5');
  assert.equal(m.get('ulong-value').headers.timestamp, '2023-11-14T22:13:20.123Z');
  assert.equal(m.get('uuid-string').id, '6ba7b810-9dad-11d1-80b4-00c04fd430c8');
  assert.equal(m.get('uuid-string').body, 'hello');
  assert.equal(m.get('json-data').id, '18446744073709551614');
  assert.deepEqual(m.get('json-data').body, { a: 1, b: [1, 2] });
  const received = await api(gw!.url, 'POST', `/api/queues/${enc('queue:fid.h')}/receive`, { user: 'ops', body: { max: 10 } });
  assert.equal(received.status, 200);
  const rbin = (received.body.messages as any[]).find((x) => x.subject === 'binary-data');
  assert.deepEqual(rbin.body, { base64: 'AAEC/w==' });
});

test('an expired message (ttl or absolute-expiry-time passed) is dead-lettered with the reason, not delivered', {
  timeout: 60_000,
}, async () => {
  const Q = 'queue:fid.expired';
  const sent = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: Q, id: 'expired-1', body: 1, expiresAt: new Date(Date.now() + 300).toISOString() } });
  assert.equal(sent.status, 202);
  await new Promise((r) => setTimeout(r, 1000));
  const got = await api(gw!.url, 'POST', `/api/queues/${enc(Q)}/receive`, { user: 'ops', body: { max: 1 } });
  assert.deepEqual(got.body.messages, [], 'not delivered');
  const dlq = await api(gw!.url, 'GET', `/api/dlq/${enc(Q)}`, { user: 'ops' });
  assert.equal(dlq.body.depth, 1);
  assert.match(JSON.stringify(dlq.body.messages[0]), /expired/);
});
