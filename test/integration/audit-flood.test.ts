import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { AuditLog } from '../../src/auth/audit.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 13.6: unauthenticated doors cannot flood the audit trail out. 5,000 failed logins (bad
// API tokens: no password hashing, so the flood is quick) from one IP are written as at most
// `audit.unauthenticatedPerMinute` entries a minute plus one "N more suppressed" entry, and the
// legitimate entries written before the flood are still there. Retention is by time (MINID).

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  // The login rate limit would answer 429 long before 5,000 (and 429s are not audited): raised
  // here so every attempt reaches the audit trail, which is what this test is about.
  gw = await startTestGateway(redis.url, { http: { port: 0, host: '127.0.0.1', loginLimits: { perUser: 1_000_000, perIp: 1_000_000, window: '1m' } } });
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

type Entry = { action: string; actor: string; ip?: string; detail?: string };
const entries = async (query = ''): Promise<Entry[]> => {
  const r = await api(gw.url, 'GET', `/api/audit?limit=1000${query}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
};

test('5,000 failed logins from one IP leave earlier entries in place and add a bounded number', async () => {
  // Legitimate history: a token created and revoked by ops.
  const t = await api(gw.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'before the flood' } });
  assert.equal(t.status, 201);
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${t.body.id}`, { user: 'ops' })).status, 200);
  const before = await entries();
  const legit = before.filter((e) => e.action === 'token.created' || e.action === 'token.revoked');
  assert.equal(legit.length, 2);

  const started = Date.now();
  const attempts = 5000;
  let next = 0;
  const worker = async () => {
    while (next < attempts) {
      const n = next++;
      const res = await fetch(`${gw.url}/api/tokens`, { headers: { authorization: `Bearer sbt_${n.toString(16).padStart(16, '0')}_${'x'.repeat(43)}` } });
      await res.arrayBuffer();
      assert.equal(res.status, 401);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000) + 1;

  const all = await entries();
  const failures = all.filter((e) => e.action === 'login.failure');
  assert.ok(failures.length >= 20, `the first failures are recorded (${failures.length})`);
  assert.ok(failures.length <= 20 * minutes, `at most 20 a minute are recorded, got ${failures.length} over ${minutes} minute(s)`);
  assert.ok(all.length < 20 * minutes + legit.length + 50, `the trail grew by a bounded number: ${all.length}`);
  for (const e of legit) assert.ok(all.some((x) => x.action === e.action && x.actor === e.actor), `${e.action} is still in the trail`);

  // When each minute ends, one entry says how many were left out in it (a slow machine spreads
  // the flood over several minutes: wait for the summary of each).
  const suppressedSoFar = async () => (await entries('&action=audit.suppressed'))
    .filter((e) => /more login\.failure from .* suppressed/.test(e.detail ?? ''))
    .reduce((n, e) => n + Number(/^(\d+) more/.exec(e.detail!)![1]), 0);
  await waitFor(async () => failures.length + (await suppressedSoFar()) >= attempts, 75_000 + 60_000 * minutes, 'the suppressed summaries');
  assert.equal(failures.length + (await suppressedSoFar()), attempts, 'every attempt is either an entry or counted in a summary');
});

test('retention is by time: entries older than audit.retention are dropped as new ones come', async () => {
  const client = new Redis(redis.url);
  try {
    const audit = new AuditLog(client, 'retention-test', pino({ level: 'silent' }), { retentionMs: 1500 });
    await audit.record({ action: 'login.success', actor: 'user:old', ip: '10.0.0.1' });
    await new Promise((r) => setTimeout(r, 2000));
    await audit.record({ action: 'login.success', actor: 'user:new', ip: '10.0.0.1' });
    const kept = await audit.list(10);
    assert.deepEqual(kept.map((e) => e.actor), ['user:new']);
  } finally {
    client.disconnect();
  }
});
