import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Message } from '../../src/core/message.ts';
import { compose, type Door, type SendInput } from '../../src/core/pipeline.ts';
import { signEnvelope, verifyEnvelope } from '../../src/network/envelope.ts';
import { openTracing } from '../../src/tracing/otel-tracing.ts';
import { formatTraceparent, parseTraceparent, parseTracestate, readTraceContext, traceHeaders, withTraceContext } from '../../src/tracing/trace-context.ts';
import { traceSend } from '../../src/tracing/trace-send.ts';
import { NO_TRACING, type Tracing } from '../../src/tracing/tracing.ts';
import { startOtlpReceiver, type OtlpReceiver } from '../support/otlp-receiver.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${SPAN}-01`;

describe('traceparent (W3C Trace Context §3.2)', () => {
  test('a valid version-00 value gives its trace id, parent span id and flags', () => {
    assert.deepEqual(parseTraceparent(VALID), { traceId: TRACE, spanId: SPAN, flags: 1 });
    assert.deepEqual(parseTraceparent(`00-${TRACE}-${SPAN}-00`), { traceId: TRACE, spanId: SPAN, flags: 0 });
    assert.equal(formatTraceparent({ traceId: TRACE, spanId: SPAN, flags: 1 }), VALID);
  });

  test('values the spec says to ignore are ignored, never an error', () => {
    const bad: unknown[] = [
      undefined, null, 42, '', 'garbage',
      `00-${TRACE.toUpperCase()}-${SPAN}-01`, // upper-case hex
      `00-${'0'.repeat(32)}-${SPAN}-01`, // all-zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero parent id
      `ff-${TRACE}-${SPAN}-01`, // version ff is forbidden
      `00-${TRACE}-${SPAN}-01-extra`, // version 00 has nothing after the flags
      `00-${TRACE.slice(1)}-${SPAN}-01`, // short trace id
      `00-${TRACE}-${SPAN}-1`, // short flags
      `0g-${TRACE}-${SPAN}-01`, // not hex
      `00_${TRACE}_${SPAN}_01`, // wrong separators
    ];
    for (const v of bad) assert.equal(parseTraceparent(v), undefined, `${String(v)} should be ignored`);
  });

  test('a later version is read for its first four fields (forward compatibility) and passed on as version 00', () => {
    const t = parseTraceparent(`cc-${TRACE}-${SPAN}-01-what-the-future-holds`);
    assert.deepEqual(t, { traceId: TRACE, spanId: SPAN, flags: 1 });
    assert.equal(readTraceContext({ traceparent: `cc-${TRACE}-${SPAN}-01-x` })?.traceparent, VALID);
    // ...but a later version still needs the dash after the flags
    assert.equal(parseTraceparent(`cc-${TRACE}-${SPAN}-01x`), undefined);
  });
});

describe('tracestate (W3C Trace Context §3.3)', () => {
  test('valid members are kept, empty ones and white space dropped', () => {
    assert.equal(parseTracestate('rojo=00f067aa0ba902b7, congo=t61rcWkgMzE'), 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
    assert.equal(parseTracestate('tenant@vendor=x,,  a=1 '), 'tenant@vendor=x,a=1');
  });

  test('an invalid tracestate is dropped as a whole', () => {
    for (const v of ['', 'Rojo=1', 'a=1,a=2', 'a=', 'a=b=c,', 'a=1,b=,c=3', Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(','), 'a=tab\there']) {
      assert.equal(parseTracestate(v), undefined, JSON.stringify(v));
    }
  });

  test('a tracestate travels only beside a valid traceparent', () => {
    assert.deepEqual(readTraceContext({ traceparent: VALID, tracestate: 'a=1' }), { traceparent: VALID, tracestate: 'a=1' });
    assert.equal(readTraceContext({ traceparent: 'nonsense', tracestate: 'a=1' }), undefined);
    assert.deepEqual(readTraceContext({ traceparent: VALID, tracestate: 'A=1' }), { traceparent: VALID });
  });
});

describe('headers', () => {
  test('withTraceContext sets and removes both values and keeps the object when nothing changes', () => {
    const h = { x: '1', traceparent: VALID };
    assert.equal(withTraceContext(h, { traceparent: VALID }), h);
    assert.deepEqual(withTraceContext(h, undefined), { x: '1' });
    assert.deepEqual(withTraceContext({ x: '1', tracestate: 'old=1' }, { traceparent: VALID, tracestate: 'a=1' }), { x: '1', traceparent: VALID, tracestate: 'a=1' });
  });

  test('traceHeaders gives outgoing HTTP requests and e-mails only a valid context', () => {
    assert.deepEqual(traceHeaders({ traceparent: VALID, tracestate: 'a=1', other: 'x' }), { traceparent: VALID, tracestate: 'a=1' });
    assert.deepEqual(traceHeaders({ traceparent: 'broken', tracestate: 'a=1' }), {});
  });
});

describe('a peer envelope covers the trace context', () => {
  test('a traceparent changed on the way breaks the signature', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const m: Message = { id: 'e1', to: 'peer:b/queue:x', sender: { kind: 'flow', name: 'f' }, headers: { traceparent: VALID }, contentType: 'application/json', body: { a: 1 }, createdAt: new Date(0).toISOString() };
    const signature = signEnvelope(privateKey, m, 'queue:x', 'O=A');
    assert.ok(verifyEnvelope(publicKey, m, 'queue:x', 'O=A', signature));
    const tampered = { ...m, headers: { traceparent: `00-${TRACE}-${'1'.repeat(16)}-01` } };
    assert.equal(verifyEnvelope(publicKey, tampered, 'queue:x', 'O=A', signature), false);
    const added = { ...m, headers: { ...m.headers, tracestate: 'evil=1' } };
    assert.equal(verifyEnvelope(publicKey, added, 'queue:x', 'O=A', signature), false);
  });
});

const msg = (headers: Record<string, string>): Message => ({ id: 'm1', to: 'queue:x', sender: { kind: 'user', name: 'ann' }, headers, contentType: 'application/json', body: 1, createdAt: new Date(0).toISOString() });

function chainWith(tracing: Tracing, fail?: Error) {
  const reached: SendInput[] = [];
  const send = compose([traceSend(tracing)], async (input) => {
    reached.push(input);
    if (fail) throw fail;
    return { id: input.message.id, duplicate: false };
  });
  return { reached, send: (m: Message, door: Door = 'amqp') => send({ message: m, caller: { principal: { kind: 'user', name: 'ann' }, door } }) };
}

describe('the trace-send interceptor, tracing off', () => {
  test('passes a valid context on unchanged and drops an invalid one', async () => {
    const { reached, send } = chainWith(NO_TRACING);
    await send(msg({ traceparent: VALID, tracestate: 'a=1' }));
    assert.deepEqual(reached[0]!.message.headers, { traceparent: VALID, tracestate: 'a=1' });
    await send(msg({ traceparent: 'not-a-trace', tracestate: 'a=1', keep: 'me' }));
    assert.deepEqual(reached[1]!.message.headers, { keep: 'me' });
    await send(msg({}));
    assert.deepEqual(reached[2]!.message.headers, {});
  });
});

describe('the trace-send interceptor, tracing on (real OTLP/HTTP receiver)', () => {
  let receiver: OtlpReceiver;
  let tracing: Tracing;
  before(async () => {
    receiver = await startOtlpReceiver();
    tracing = await openTracing({ serviceName: 'unit', otlp: { url: receiver.url, flushEveryMs: 100 }, log: pino({ level: 'silent' }) });
  });
  after(async () => {
    await tracing.shutdown();
    await receiver.close();
  });

  test('continues the caller: the span is a child of the carried span and the message carries the new span', async () => {
    const { reached, send } = chainWith(tracing);
    await send(msg({ traceparent: VALID, tracestate: 'rojo=1' }));
    const out = readTraceContext(reached[0]!.message.headers)!;
    const carried = parseTraceparent(out.traceparent)!;
    assert.equal(carried.traceId, TRACE);
    assert.notEqual(carried.spanId, SPAN);
    assert.equal(out.tracestate, 'rojo=1');
    const span = await receiver.waitFor((s) => s.spanId === carried.spanId, 'for the send');
    assert.equal(span.traceId, TRACE);
    assert.equal(span.parentSpanId, SPAN);
    assert.equal(span.name, 'send queue:x');
    assert.equal(span.kind, 5, 'a message from a client door is a CONSUMER span (OTLP kind 5)');
    assert.equal(span.attributes['messaging.message.id'], 'm1');
    assert.equal(span.service, 'unit');
  });

  test('an invalid traceparent starts a new trace instead of failing the send', async () => {
    const { reached, send } = chainWith(tracing);
    await send(msg({ traceparent: `00-${'0'.repeat(32)}-${SPAN}-01` }), 'http');
    const carried = parseTraceparent(reached[0]!.message.headers.traceparent)!;
    assert.ok(carried, 'the message carries a new, valid traceparent');
    const span = await receiver.waitFor((s) => s.spanId === carried.spanId, 'for the new trace');
    assert.equal(span.parentSpanId, undefined, 'a root span');
    assert.equal(span.kind, 2, 'HTTP is a SERVER span (OTLP kind 2)');
  });

  test('a refused send is a failed span', async () => {
    const { reached, send } = chainWith(tracing, Object.assign(new Error('no right to send'), { code: 'forbidden' }));
    await assert.rejects(send(msg({ traceparent: VALID })), /no right/);
    const carried = parseTraceparent(reached[0]!.message.headers.traceparent)!;
    const span = await receiver.waitFor((s) => s.spanId === carried.spanId, 'for the refusal');
    assert.equal(span.status, 2);
    assert.equal(span.attributes['error.type'], 'forbidden');
  });
});
