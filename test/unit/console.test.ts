// Pure parts of the operations console: the per-minute rate meter, the CSV export (quoting and
// formula defusing), the flow search form, and the short ages shown in the queue table.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Request } from 'express';
import { RateMeter } from '../../src/core/rate-meter.ts';
import { age } from '../../src/web/console/access.ts';
import { flowSearchOf } from '../../src/web/routes/console-flows.ts';
import { auditCsv, csvField } from '../../src/web/routes/console-ops.ts';
import { ValidationError } from '../../src/core/errors.ts';

test('the rate meter counts per second over the last minute and forgets older buckets', () => {
  let now = 1_000_000_000_000;
  const m = new RateMeter(2, () => now);
  for (let i = 0; i < 30; i++) m.add('a');
  m.add('b', 6);
  assert.equal(m.perSecond('a'), 0.5);
  assert.equal(m.perSecond('b'), 0.1);
  assert.equal(m.perSecond('unknown'), 0);
  now += 30_000;
  m.add('a', 30);
  assert.equal(m.perSecond('a'), 1, 'both buckets within the minute');
  now += 40_000;
  assert.equal(m.perSecond('a'), 0.5, 'the first bucket is older than a minute');
  m.add('c');
  assert.equal(m.perSecond('b'), 0, 'past maxKeys the least recently counted key is dropped');
});

test('CSV fields are quoted as RFC 4180 says, and a leading formula character is defused', () => {
  assert.equal(csvField('plain'), 'plain');
  assert.equal(csvField(undefined), '');
  assert.equal(csvField('a,b'), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField('line\nbreak'), '"line\nbreak"');
  assert.equal(csvField('=HYPERLINK("http://evil")'), '"\'=HYPERLINK(""http://evil"")"');
  assert.equal(csvField('+1'), "'+1");
  assert.equal(csvField('@SUM(A1)'), "'@SUM(A1)");
  const csv = auditCsv([{ id: '1-0', at: '2026-12-01T10:00:00.000Z', action: 'deadletter.replayed', actor: 'user:ops', target: 'dlq:queue:a', detail: 'x, y' }]);
  assert.equal(csv, 'at,action,actor,ip,target,detail\r\n2026-12-01T10:00:00.000Z,deadletter.replayed,user:ops,,dlq:queue:a,"x, y"\r\n');
});

const req = (query: Record<string, string>) => ({ query } as unknown as Request);

test('the flow search form becomes a search: a bare starter is a user, dates cover whole days, a tag is name=value', () => {
  const { search } = flowSearchOf(req({ flow: 'invoice', status: 'failed', startedBy: 'alice', from: '2026-12-01', to: '2026-12-02', tag: 'ref = INV-1' }));
  assert.deepEqual(search, { limit: 50, flow: 'invoice', status: 'failed', startedBy: 'user:alice', from: Date.parse('2026-12-01T00:00:00Z'), to: Date.parse('2026-12-02T23:59:59.999Z'), tag: { name: 'ref', value: 'INV-1' } });
  assert.deepEqual(flowSearchOf(req({ startedBy: 'peer:bank-b', flow: '' })).search, { limit: 50, startedBy: 'peer:bank-b' });
  assert.deepEqual(flowSearchOf(req({ tag: 'k=a=b' })).search.tag, { name: 'k', value: 'a=b' }, 'the first = splits');
});

test('a bad search field is a ValidationError naming the field', () => {
  for (const [q, msg] of [[{ flow: 'no/slash' }, /not a flow name/], [{ status: 'stuck' }, /status must be one of/], [{ tag: 'ref' }, /name=value/], [{ tag: '=x' }, /name=value/], [{ from: 'soon' }, /'from' must be a date/]] as const) {
    assert.throws(() => flowSearchOf(req(q as Record<string, string>)), (e: unknown) => e instanceof ValidationError && msg.test(e.message));
  }
});

test('ages read short', () => {
  assert.equal(age(undefined), '—');
  assert.equal(age(4_400), '4 s');
  assert.equal(age(125_000), '2 min');
  assert.equal(age(3 * 3_600_000), '3 h');
  assert.equal(age(2.5 * 86_400_000), '2.5 d');
});
