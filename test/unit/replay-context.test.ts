import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import type { Message } from '../../src/core/message.ts';
import { ReplayContext, type ContextDeps } from '../../src/flows/context.ts';
import { NonDeterministicChange, Suspend } from '../../src/flows/errors.ts';
import type { InstanceMeta, InstanceStore, JournalEntry } from '../../src/flows/store.ts';

// The replay rules of a flow's ctx (DESIGN §3), without Redis: step n returns what the journal
// recorded for n and does nothing again; past the journal it does the work and journals it; a
// step whose kind or target differs from the journal stops the run with NonDeterministicChange.
// The instance store is an in-memory stand-in for the three calls the context makes.

const META: InstanceMeta = {
  id: 'inst-1',
  flow: 'payment',
  status: 'running',
  input: {},
  createdAt: '2025-01-01T00:00:00.000Z',
  updatedAt: '2025-01-01T00:00:00.000Z',
  startedBy: 'user:ops',
} as InstanceMeta;

const AT = '2025-01-01T00:00:01.000Z';

/** A context over `recorded`, with the sends and journal writes it makes. */
function replay(recorded: JournalEntry[]) {
  const written: JournalEntry[] = [];
  const sent: Message[] = [];
  const store = {
    async writeSteps(_id: string, entries: JournalEntry[]) {
      written.push(...entries);
    },
    async inbox() {
      return [];
    },
    async consume() {},
  } as unknown as InstanceStore;
  const deps: ContextDeps = {
    store,
    async send(m) {
      sent.push(m);
      return { id: m.id, duplicate: false };
    },
    async wakeAt() {},
    log: pino({ level: 'silent' }),
  };
  const journal = new Map(recorded.map((e) => [e.n, e]));
  const ctx = new ReplayContext(META, journal, deps, async () => false);
  return { ctx, written, sent };
}

/** Expects `call` to stop the run with a NonDeterministicChange at `step` naming both sides. */
async function assertNonDeterministic(ctx: ReplayContext, call: () => Promise<unknown>, step: number, recorded: RegExp, requested: RegExp): Promise<void> {
  await assert.rejects(call(), (err: unknown) => err instanceof Suspend && err.reason === 'failed');
  assert.ok(ctx.failure instanceof NonDeterministicChange, `failure: ${String(ctx.failure)}`);
  assert.equal(ctx.failure.step, step);
  assert.equal(ctx.failure.code, 'non_deterministic');
  assert.match(ctx.failure.message, recorded);
  assert.match(ctx.failure.message, requested);
}

describe('ReplayContext: journaled steps return what was recorded', () => {
  test('a journaled step returns its recorded result and does not run its function again', async () => {
    const { ctx, written } = replay([{ n: 0, kind: 'step', target: 'charge', at: AT, done: true, result: { charged: 12 } }]);
    let ran = 0;
    const result = await ctx.step('charge', () => { ran++; return { charged: 99 }; });
    assert.deepEqual(result, { charged: 12 });
    assert.equal(ran, 0);
    assert.deepEqual(written, []);
  });

  test('a journaled step that failed throws the recorded error again, with its name and code', async () => {
    const { ctx } = replay([{ n: 0, kind: 'step', target: 'charge', at: AT, done: true, error: { name: 'CardDeclined', code: 'declined', message: 'card declined' } }]);
    await assert.rejects(ctx.step('charge', () => 1), (err: Error & { code?: string }) => err.name === 'CardDeclined' && err.code === 'declined' && err.message === 'card declined');
  });

  test('a journaled send returns its recorded id and sends nothing', async () => {
    const { ctx, sent } = replay([{ n: 0, kind: 'send', target: 'queue:out', at: AT, done: true, result: { id: 'inst-1:0' } }]);
    assert.deepEqual(await ctx.send('queue:out', { x: 1 }), { id: 'inst-1:0' });
    assert.equal(sent.length, 0);
  });

  test('now() and uuid() return the recorded values on replay', async () => {
    const { ctx } = replay([
      { n: 0, kind: 'now', at: AT, done: true, result: '2024-12-24T18:00:00.000Z' },
      { n: 1, kind: 'uuid', at: AT, done: true, result: '00000000-0000-4000-8000-000000000000' },
    ]);
    assert.equal(ctx.now().toISOString(), '2024-12-24T18:00:00.000Z');
    assert.equal(ctx.uuid(), '00000000-0000-4000-8000-000000000000');
  });

  test('a finished sleep returns at once on replay', async () => {
    const { ctx, written } = replay([{ n: 0, kind: 'sleep', at: AT, done: true, deadline: 0 }]);
    await ctx.sleep('1h');
    assert.deepEqual(written, []);
  });
});

describe('ReplayContext: past the journal the flow runs ahead and journals', () => {
  test('after the recorded steps, a new step runs once and is journaled with the next step number', async () => {
    const { ctx, written } = replay([{ n: 0, kind: 'step', target: 'a', at: AT, done: true, result: 1 }]);
    assert.equal(await ctx.step('a', () => 100), 1);
    assert.equal(await ctx.step('b', () => 2), 2);
    assert.deepEqual(written.map((e) => [e.n, e.kind, e.target, e.result]), [[1, 'step', 'b', 2]]);
  });

  test('a new send carries the stable id <instanceId>:<step> and the flow as sender', async () => {
    const { ctx, sent, written } = replay([{ n: 0, kind: 'step', target: 'a', at: AT, done: true, result: 1 }]);
    await ctx.step('a', () => 1);
    assert.deepEqual(await ctx.send('queue:out', { x: 1 }), { id: 'inst-1:1' });
    assert.equal(sent[0]?.id, 'inst-1:1');
    assert.deepEqual(sent[0]?.sender, { kind: 'flow', name: 'payment' });
    assert.deepEqual(written.at(-1)?.result, { id: 'inst-1:1' });
  });

  test('a new now() is journaled with the next effect, so a replay sees the same time', async () => {
    const { ctx, written } = replay([]);
    const at = ctx.now();
    assert.equal(written.length, 0, 'not written on its own');
    await ctx.send('queue:out', {});
    assert.deepEqual(written.map((e) => [e.n, e.kind]), [[0, 'now'], [1, 'send']]);
    assert.equal(written[0]?.result, at.toISOString());
  });
});

describe('ReplayContext: a change of code under a running instance is NonDeterministicChange', () => {
  test('a different kind at a journaled step (send where a step was recorded)', async () => {
    const { ctx, sent } = replay([{ n: 0, kind: 'step', target: 'charge', at: AT, done: true, result: 1 }]);
    await assertNonDeterministic(ctx, () => ctx.send('queue:out', {}), 0, /step charge/, /send queue:out/);
    assert.equal(sent.length, 0, 'nothing is sent once the change is found');
  });

  test('the same kind with a different target (send to another address)', async () => {
    const { ctx } = replay([{ n: 0, kind: 'send', target: 'queue:a', at: AT, done: true, result: { id: 'inst-1:0' } }]);
    await assertNonDeterministic(ctx, () => ctx.send('queue:b', {}), 0, /send queue:a/, /send queue:b/);
  });

  test('a renamed step', async () => {
    const { ctx } = replay([{ n: 0, kind: 'step', target: 'charge', at: AT, done: true, result: 1 }]);
    let ran = 0;
    await assertNonDeterministic(ctx, () => ctx.step('charge-card', () => ran++), 0, /step charge\b/, /step charge-card/);
    assert.equal(ran, 0);
  });

  test('a change further down is found at its step, after the matching ones replayed', async () => {
    const { ctx } = replay([
      { n: 0, kind: 'step', target: 'a', at: AT, done: true, result: 1 },
      { n: 1, kind: 'sleep', at: AT, done: true, deadline: 0 },
    ]);
    assert.equal(await ctx.step('a', () => 0), 1);
    await assertNonDeterministic(ctx, () => ctx.step('b', () => 0), 1, /sleep/, /step b/);
  });

  test('once stopped, every later ctx call stops again', async () => {
    const { ctx } = replay([{ n: 0, kind: 'step', target: 'a', at: AT, done: true, result: 1 }]);
    await assert.rejects(ctx.step('z', () => 0), Suspend);
    await assert.rejects(ctx.send('queue:x', {}), Suspend);
    assert.throws(() => ctx.now(), Suspend);
  });
});
