import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Message } from '../../src/core/message.ts';
import { ReplayContext, traceOf, type ContextDeps } from '../../src/flows/context.ts';
import type { InstanceMeta, InstanceStore, JournalEntry } from '../../src/flows/store.ts';

// With tracing off a flow still carries the trace it was started in: every message a step sends
// carries the instance's stored traceparent unchanged (W3C: pass on what you got), and a replayed
// step sends nothing again.

const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const META = { id: 'i1', flow: 'f', status: 'running', input: {}, createdAt: '', updatedAt: '', startedBy: 'user:ann', traceparent: TP, tracestate: 'a=1' } as InstanceMeta;

function context(meta: InstanceMeta, recorded: JournalEntry[] = []) {
  const sent: Message[] = [];
  const store = { async writeSteps() {}, async inbox() { return []; }, async consume() {} } as unknown as InstanceStore;
  const deps: ContextDeps = { store, async send(m) { sent.push(m); return { id: m.id, duplicate: false }; }, async wakeAt() {}, log: pino({ level: 'silent' }) };
  return { ctx: new ReplayContext(meta, new Map(recorded.map((e) => [e.n, e])), deps, async () => false), sent };
}

describe('a flow carries its trace with tracing off', () => {
  test('a step sends the instance trace context; its own headers cannot replace it', async () => {
    const { ctx, sent } = context(META);
    await ctx.send('queue:out', { a: 1 }, { headers: { traceparent: '00-11111111111111111111111111111111-2222222222222222-01', x: 'y' } });
    assert.equal(sent[0]!.headers.traceparent, TP);
    assert.equal(sent[0]!.headers.tracestate, 'a=1');
    assert.equal(sent[0]!.headers.x, 'y');
  });

  test('an instance started without a trace sends none', async () => {
    const { ctx, sent } = context({ ...META, traceparent: undefined, tracestate: undefined } as InstanceMeta);
    await ctx.send('queue:out', 1);
    assert.equal(sent[0]!.headers.traceparent, undefined);
  });

  test('traceOf reads only a valid stored context', () => {
    assert.deepEqual(traceOf(META), { traceparent: TP, tracestate: 'a=1' });
    assert.equal(traceOf({ traceparent: 'junk', tracestate: 'a=1' }), undefined);
  });
});
