import assert from 'node:assert/strict';
import { test } from 'node:test';
import '../../src/schemes.ts';
import { configSchema } from '../../src/config/schema.ts';
import { DedupWindows } from '../../src/core/dedup-window.ts';

// Deduplication windows per address pattern (issue 14 point 6): first match wins, 0 is off, the
// default (queues.dedupTtl) everywhere else.

test('the first matching pattern gives the window; 0 turns deduplication off; other addresses get the default', () => {
  const w = new DedupWindows([{ address: 'queue:orders.*', window: 3_600_000 }, { address: 'queue:telemetry.**', window: 0 }, { address: 'queue:orders.eu', window: 5 }], 86_400_000);
  assert.equal(w.windowFor('queue:orders.eu'), 3_600_000, 'the first rule wins over a later, narrower one');
  assert.equal(w.windowFor('queue:telemetry.cpu.host1'), 0);
  assert.equal(w.windowFor('queue:orders'), 86_400_000, '* needs a segment');
  assert.equal(w.windowFor('mq:legacy/orders.eu'), 86_400_000);
  assert.equal(w.windowFor('queue:orders.eu'), 3_600_000, 'the same answer from the memo');
});

test('config: queues.dedup takes patterns and durations (0 = off), defaults to none; a bad pattern names itself', () => {
  const base = { http: { port: 3000 } };
  const c = configSchema.parse({ ...base, queues: { dedup: [{ address: 'queue:orders.*', window: '1h' }, { address: 'queue:telemetry.*', window: 0 }] } });
  assert.deepEqual(c.queues.dedup, [{ address: 'queue:orders.*', window: 3_600_000 }, { address: 'queue:telemetry.*', window: 0 }]);
  assert.equal(c.queues.dedupTtl, 86_400_000);
  assert.deepEqual(configSchema.parse(base).queues.dedup, []);
  const bad = configSchema.safeParse({ ...base, queues: { dedup: [{ address: 'queue:orders-*', window: '1h' }] } });
  assert.equal(bad.success, false);
  assert.match(JSON.stringify(bad.error?.issues), /wildcards must be a whole segment/);
});
