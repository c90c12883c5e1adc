import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { schemes } from '../../src/core/address.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, testConfig, waitFor, type ApiResponse, type USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Every bad input gets the right status and a JSON {error: {code, message}} that says what was
// wrong (DESIGN §6), changes nothing, and never shows a stack trace.

const TARGET = 'queue:bad.target';

let redis: TestRedis;
let gw: Gateway;
before(async () => {
  redis = await startTestRedis();
  const base = await testConfig(redis.url);
  gw = await startTestGateway(redis.url, {
    http: { port: 0, host: '127.0.0.1', bodyLimit: '1kb' },
    permissions: [
      ...(base.permissions as unknown[]),
      // ops may send to mq: and dlq: addresses, so that what refuses those is the gateway, not a 403.
      { user: 'ops', allow: [{ address: 'mq:**', verbs: ['send'] }, { address: 'dlq:**', verbs: ['send'] }] },
    ],
  });
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: TARGET, id: 'sentinel', body: { keep: true } } });
  assert.equal(sent.status, 202);
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

type Opts = Parameters<typeof api>[3];
type User = keyof typeof USERS;

/** Nothing in a response body may look like a stack trace or a file path. */
function assertNoStack(r: ApiResponse): void {
  const text = typeof r.body === 'string' ? r.body : JSON.stringify(r.body ?? '');
  assert.doesNotMatch(text, /\bat \S+ \(|\bat (file:|\/)|\.(ts|js|mjs|cjs):\d+|node_modules|\/work\//, `a stack trace or path in: ${text}`);
}

async function call(method: string, path: string, opts: Opts = {}): Promise<ApiResponse> {
  const r = await api(gw.url, method, path, opts);
  assertNoStack(r);
  return r;
}

/** Asserts a JSON error response with `status`, `code`, and a message containing every fragment. */
function expectError(r: ApiResponse, status: number, code: string, ...fragments: string[]): string {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${JSON.stringify(r.body)}`);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(typeof r.body, 'object', `a JSON body: ${String(r.body)}`);
  assert.deepEqual(Object.keys(r.body), ['error']);
  assert.equal(r.body.error.code, code, JSON.stringify(r.body));
  const message = r.body.error.message as string;
  assert.equal(typeof message, 'string');
  for (const f of fragments) assert.ok(message.includes(f), `message ${JSON.stringify(message)} should mention ${JSON.stringify(f)}`);
  return message;
}

async function state(address = TARGET) {
  const q = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(q.status, 200, JSON.stringify(q.body));
  const metrics = await (await fetch(`${gw.url}/metrics`)).text();
  const line = metrics.split('\n').find((l) => l.startsWith('switchboard_messages_in_total{endpoint="queue"}'));
  return { depth: q.body.depth as number, inFlight: q.body.inFlight as number, ids: (q.body.messages as { id: string }[]).map((m) => m.id), messagesIn: Number(line?.split(' ').pop() ?? 0) };
}

/** Runs `fn` and asserts the target queue and the accepted-messages counter did not change. */
async function changesNothing(fn: () => Promise<void>, address = TARGET): Promise<void> {
  const before = await state(address);
  await fn();
  assert.deepEqual(await state(address), before, 'a refused request changed the queue or the accepted count');
}

const send = (body: unknown, user: User = 'ops') => call('POST', '/api/messages', { user, body });

test('bad JSON → 400 bad_json saying the body is not valid JSON', async () => {
  await changesNothing(async () => {
    for (const raw of ['{"to": "queue:bad.target", "body": ', '{to: queue:bad.target}', "{'to': 'x'}", '{"to":"queue:bad.target"} trailing']) {
      const r = await call('POST', '/api/messages', { user: 'ops', rawBody: raw });
      expectError(r, 400, 'bad_json', 'request body is not valid JSON');
    }
    expectError(await call('POST', `/api/queues/${enc(TARGET)}/receive`, { user: 'ops', rawBody: '{"max": ' }), 400, 'bad_json', 'not valid JSON');
    expectError(await call('POST', `/api/queues/${enc(TARGET)}/ack`, { user: 'ops', rawBody: '[' }), 400, 'bad_json', 'not valid JSON');
  });
});

test('a body that is JSON but not a message object → 400 saying what is expected', async () => {
  await changesNothing(async () => {
    expectError(await call('POST', '/api/messages', { user: 'ops', rawBody: '"queue:bad.target"' }), 400, 'bad_request', 'expected a JSON object', '"to"');
    expectError(await call('POST', '/api/messages', { user: 'ops', rawBody: '42' }), 400, 'bad_request', 'expected a JSON object');
    expectError(await send({ body: { no: 'to' } }), 400, 'bad_address', 'expected a non-empty string like queue:orders');
    expectError(await send({ to: 42 }), 400, 'bad_address', 'expected a non-empty string');
    expectError(await send({ to: TARGET, id: 7 }), 400, 'bad_request', "'id'");
    expectError(await send({ to: TARGET, id: 'has space' }), 400, 'bad_request', "'id'", 'without spaces');
    expectError(await send({ to: TARGET, id: 'x'.repeat(257) }), 400, 'bad_request', "'id'", '256');
    expectError(await send({ to: TARGET, correlationId: 5 }), 400, 'bad_request', "'correlationId'");
    expectError(await send({ to: TARGET, expiresAt: 'next tuesday' }), 400, 'bad_request', "'expiresAt'", 'ISO 8601');
  });
});

test('unknown scheme → 400 listing the schemes; a scheme this gateway does not serve → 400 listing the available ones', async () => {
  await changesNothing(async () => {
    const m = expectError(await send({ to: 'foo:bar', body: 1 }), 400, 'bad_address', "'foo:bar'", "unknown scheme 'foo'");
    for (const s of schemes.names) assert.ok(m.includes(s), `the message lists the scheme ${s}: ${m}`);
    expectError(await call('GET', `/api/queues/${enc('foo:bar')}`, { user: 'ops' }), 400, 'bad_address', "unknown scheme 'foo'", 'queue, person');
    expectError(await send({ to: 'mq:legacy/payments.in', body: 1 }), 400, 'unknown_scheme', "'mq:'", 'available: queue');
  });
});

test('malformed addresses → 400 bad_address quoting the address and what was expected', async () => {
  await changesNothing(async () => {
    expectError(await send({ to: 'queue:a b', body: 1 }), 400, 'bad_address', "'queue:a b'", 'bad queue name', 'queue:<name>');
    expectError(await send({ to: 'queue:', body: 1 }), 400, 'bad_address', "'queue:'", 'empty path');
    expectError(await send({ to: 'queue:orders..eu', body: 1 }), 400, 'bad_address', 'bad queue name');
    expectError(await send({ to: 'orders', body: 1 }), 400, 'bad_address', "'orders'", 'expected scheme:path');
    expectError(await send({ to: `queue:${'a'.repeat(600)}`, body: 1 }), 400, 'bad_address', 'longer than 512 characters');
    expectError(await send({ to: 'mq:legacy', body: 1 }), 400, 'bad_address', "'mq:legacy'", 'mq:<broker>/<address>');
    expectError(await send({ to: TARGET, replyTo: 'nowhere', body: 1 }), 400, 'bad_address', "'nowhere'");
    expectError(await call('GET', `/api/queues/${enc('queue:a b')}`, { user: 'ops' }), 400, 'bad_address', 'bad queue name');
    expectError(await call('POST', `/api/queues/${enc('queue:')}/receive`, { user: 'ops', body: {} }), 400, 'bad_address', 'empty path');
  });
});

test('an oversized body → 413 naming the limit', async () => {
  await changesNothing(async () => {
    const r = await send({ to: TARGET, body: 'x'.repeat(4096) });
    expectError(r, 413, 'payload_too_large', 'larger than the limit of 1kb');
  });
  // Just under the limit is fine.
  const ok = await send({ to: 'queue:bad.small', body: 'x'.repeat(800) });
  assert.equal(ok.status, 202);
});

test('missing credentials → 401 on every API call, before the body is looked at', async () => {
  await changesNothing(async () => {
    for (const [method, path, opts] of [
      ['POST', '/api/messages', { body: { to: TARGET, body: 1 } }],
      ['POST', '/api/messages', { rawBody: 'not json at all' }],
      ['GET', `/api/queues/${enc(TARGET)}`, {}],
      ['POST', `/api/queues/${enc(TARGET)}/receive`, { body: { max: 1 } }],
      ['POST', `/api/queues/${enc(TARGET)}/ack`, { body: { leases: ['a.b'] } }],
      ['GET', `/api/dlq/${enc(TARGET)}`, {}],
      ['POST', `/api/dlq/${enc(TARGET)}/replay`, { body: {} }],
      ['GET', '/api/no-such-thing', {}],
    ] as [string, string, Opts][]) {
      expectError(await call(method, path, opts), 401, 'unauthenticated', 'authentication required');
    }
    const bearer = await call('POST', '/api/messages', { headers: { authorization: 'Digest abc' }, body: { to: TARGET } });
    expectError(bearer, 401, 'unauthenticated', 'HTTP Basic');
  });
});

test('wrong password and unknown user → 401 with the same message', async () => {
  await changesNothing(async () => {
    const badPw = await call('POST', '/api/messages', { user: { name: 'ops', password: 'not-the-password' }, body: { to: TARGET, body: 1 } });
    const noUser = await call('POST', '/api/messages', { user: { name: 'no-such-user', password: 'whatever' }, body: { to: TARGET, body: 1 } });
    const m1 = expectError(badPw, 401, 'unauthenticated');
    const m2 = expectError(noUser, 401, 'unauthenticated');
    assert.equal(m1, m2, 'an unknown user and a wrong password must not be told apart');
    assert.deepEqual(badPw.body, noUser.body);
    assert.doesNotMatch(m2, /no-such-user/, 'the message does not echo the user name');
    // Another user's password does not work either, and an empty password is refused the same way.
    const swapped = await call('GET', `/api/queues/${enc(TARGET)}`, { user: { name: 'ops', password: 'clerk-pw' } });
    assert.deepEqual(swapped.body, badPw.body);
    const empty = await call('GET', `/api/queues/${enc(TARGET)}`, { user: { name: 'ops', password: '' } });
    assert.equal(empty.status, 401);
    assert.deepEqual(empty.body, badPw.body);
  });
});

test('a known user without the right → 403 naming principal, verb and address', async () => {
  await changesNothing(async () => {
    expectError(await send({ to: TARGET, body: 1 }, 'nobody'), 403, 'forbidden', 'user:nobody', 'send', TARGET);
    // clerk may send to queue:in.* (one segment) and browse queue:out.*, nothing else.
    expectError(await send({ to: 'queue:in.a.b', body: 1 }, 'clerk'), 403, 'forbidden', 'user:clerk', 'send', 'queue:in.a.b');
    expectError(await send({ to: TARGET, body: 1 }, 'clerk'), 403, 'forbidden', 'user:clerk', 'send', TARGET);
    expectError(await call('GET', `/api/queues/${enc(TARGET)}`, { user: 'clerk' }), 403, 'forbidden', 'user:clerk', 'browse', TARGET);
    expectError(await call('POST', `/api/queues/${enc(TARGET)}/receive`, { user: 'clerk', body: { max: 10 } }), 403, 'forbidden', 'user:clerk', 'consume', TARGET);
    expectError(await call('POST', `/api/queues/${enc(TARGET)}/receive`, { user: 'nobody', body: { max: 10 } }), 403, 'forbidden', 'user:nobody', 'consume', TARGET);
    expectError(await call('GET', `/api/can?user=ops&verb=send&address=${enc(TARGET)}`, { user: 'clerk' }), 403, 'forbidden', 'user:clerk', 'admin', TARGET);
  });
  // The permission check uses the principal, not the body's claims.
  await changesNothing(async () => {
    expectError(await send({ to: TARGET, body: 1, sender: { kind: 'user', name: 'ops' } }, 'nobody'), 403, 'forbidden', 'user:nobody');
  });
  // The sentinel is still the only message, never leased by the refused receives.
  const s = await state();
  assert.deepEqual(s.ids, ['sentinel']);
  assert.equal(s.inFlight, 0);
});

test('a header that is not a string → 400 naming the header', async () => {
  await changesNothing(async () => {
    expectError(await send({ to: TARGET, body: 1, headers: { priority: 5 } }), 400, 'bad_request', "header 'priority'", 'must be a string', 'number');
    expectError(await send({ to: TARGET, body: 1, headers: { ok: 'yes', nested: { a: 'b' } } }), 400, 'bad_request', "header 'nested'", 'must be a string');
    expectError(await send({ to: TARGET, body: 1, headers: ['a=b'] }), 400, 'bad_request', "'headers'", 'object of string values');
    expectError(await send({ to: TARGET, body: 1, headers: 'a=b' }), 400, 'bad_request', "'headers'");
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`h${i}`, 'v']));
    expectError(await send({ to: TARGET, body: 1, headers: many }), 400, 'bad_request', "'headers'", 'at most 64');
  });
});

test('bad max or leaseSeconds → 400 naming the field and its range; nothing is leased', async () => {
  const receive = (body: unknown) => call('POST', `/api/queues/${enc(TARGET)}/receive`, { user: 'ops', body });
  await changesNothing(async () => {
    for (const max of [0, -1, 1001, 1.5, 'ten', true, [1]]) {
      expectError(await receive({ max, leaseSeconds: 30 }), 400, 'bad_request', "'max'", 'integer from 1 to 1000', `got ${JSON.stringify(max)}`);
    }
    for (const leaseSeconds of [0, -5, 43_201, 2.5, 'abc', {}]) {
      expectError(await receive({ max: 1, leaseSeconds }), 400, 'bad_request', "'leaseSeconds'", 'integer from 1 to 43200');
    }
    expectError(await call('GET', `/api/queues/${enc(TARGET)}?limit=0`, { user: 'ops' }), 400, 'bad_request', "'limit'", 'from 1 to 1000');
    expectError(await call('GET', `/api/dlq/${enc(TARGET)}?limit=abc`, { user: 'ops' }), 400, 'bad_request', "'limit'");
  });
});

test('ack with bad leases → 400 saying what leases must be; a live lease is untouched', async () => {
  const q = 'queue:bad.acks';
  assert.equal((await send({ to: q, body: 'held' })).status, 202);
  const got = await call('POST', `/api/queues/${enc(q)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 120 } });
  assert.equal(got.body.messages.length, 1);
  const lease = got.body.messages[0].lease as string;
  const ack = (body: unknown) => call('POST', `/api/queues/${enc(q)}/ack`, { user: 'ops', body });
  await changesNothing(async () => {
    for (const body of [{}, { leases: [] }, { leases: lease }, { leases: [1] }, { leases: [''] }, { leases: [lease, null] }, { leases: ['x'.repeat(300)] }, { lease }]) {
      expectError(await ack(body), 400, 'bad_request', "'leases'", 'non-empty array', 'lease strings');
    }
  }, q);
  // The refused acks did not settle the message: its lease still works, exactly once.
  const good = await ack({ leases: [lease] });
  assert.equal(good.status, 200);
  assert.deepEqual(good.body, { acked: 1, expired: [] });
});

test('dead-letter queues cannot be sent to, even with a send right on dlq:**', async () => {
  await changesNothing(async () => {
    expectError(await send({ to: `dlq:${TARGET}`, body: 1 }), 400, 'bad_request', `'dlq:${TARGET}'`, 'dead-letter queues are written by Switchboard only');
    expectError(await send({ to: `dlq:${TARGET}`, body: 1 }, 'clerk'), 403, 'forbidden', 'user:clerk', 'send', `dlq:${TARGET}`);
    expectError(await send({ to: 'dlq:dlq:queue:x', body: 1 }), 400, 'bad_address', 'no dead-letter queue of its own');
    expectError(await send({ to: 'dlq:foo:x', body: 1 }), 400, 'bad_address', 'inner address', "unknown scheme 'foo'");
  });
  const dlq = await call('GET', `/api/dlq/${enc(TARGET)}`, { user: 'ops' });
  assert.equal(dlq.status, 200);
  assert.equal(dlq.body.depth, 0, 'nothing was written to the dead letters');
});

test('unknown paths → 404 JSON naming method and path', async () => {
  await changesNothing(async () => {
    expectError(await call('GET', '/api/nope', { user: 'ops' }), 404, 'not_found', 'no such endpoint', 'GET /api/nope');
    expectError(await call('GET', '/api/messages', { user: 'ops' }), 404, 'not_found', 'GET /api/messages');
    expectError(await call('DELETE', `/api/queues/${enc(TARGET)}`, { user: 'ops' }), 404, 'not_found', 'DELETE');
    expectError(await call('POST', `/api/queues/${enc(TARGET)}/purge`, { user: 'ops', body: {} }), 404, 'not_found', 'POST');
    expectError(await call('GET', '/no-such-page'), 404, 'not_found', 'GET /no-such-page');
  });
});

test('a URL with malformed percent-encoding and a body that does not decompress → 400, not 500', async () => {
  await changesNothing(async () => {
    expectError(await call('GET', '/api/queues/queue%3Ax%ZZ', { user: 'ops' }), 400, 'bad_request', 'percent-encoding');
    expectError(await call('POST', '/api/messages', { user: 'ops', rawBody: 'not gzip at all', headers: { 'content-encoding': 'gzip' } }), 400, 'bad_request', 'could not be read');
  });
});

test('with Redis stopped: 503 with Retry-After and /readyz 503; after a restart it works again', async () => {
  const before = await state();
  await redis.stop();
  try {
    // First wait until the gateway has noticed (a request racing the disconnect could otherwise
    // be queued by ioredis until Redis is back); each probe gives up after 2 s.
    const notReady = await waitFor(async () => {
      try {
        const r = await fetch(`${gw.url}/readyz`, { signal: AbortSignal.timeout(2000) });
        return r.status === 503 ? r : undefined;
      } catch {
        return undefined;
      }
    }, 20_000, '/readyz to answer 503');
    assert.ok(notReady);

    const refused = await call('POST', '/api/messages', { user: 'ops', body: { to: TARGET, body: 'during outage' } });
    expectError(refused, 503, 'unavailable', 'redis');
    assert.match(refused.headers.get('retry-after') ?? '', /^\d+$/, 'Retry-After is a number of seconds');

    const browse = await call('GET', `/api/queues/${enc(TARGET)}`, { user: 'ops' });
    expectError(browse, 503, 'unavailable', 'redis');
    assert.ok(browse.headers.get('retry-after'));

    const ready = await call('GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.ok(ready.headers.get('retry-after'));
    assert.equal(ready.body.status, 'not ready');
    assert.equal(ready.body.checks.redis.ok, false);
    assert.equal(typeof ready.body.checks.redis.detail, 'string');

    // Liveness does not depend on Redis.
    assert.equal((await call('GET', '/healthz')).status, 200);
  } finally {
    await redis.restart();
  }
  await waitFor(async () => (await api(gw.url, 'GET', '/readyz')).status === 200, 30_000, '/readyz to answer 200 after the restart');
  const ready = await call('GET', '/readyz');
  assert.equal(ready.body.checks.redis.ok, true);

  // Nothing was lost and nothing was added by the refused send.
  assert.deepEqual((await state()).ids, before.ids);

  const q = 'queue:bad.after-restart';
  const sent = await send({ to: q, body: 'after' });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const got = await call('POST', `/api/queues/${enc(q)}/receive`, { user: 'ops', body: { max: 5, leaseSeconds: 30 } });
  assert.equal(got.status, 200);
  assert.deepEqual(got.body.messages.map((m: { id: string }) => m.id), [sent.body.id]);
  const acked = await call('POST', `/api/queues/${enc(q)}/ack`, { user: 'ops', body: { leases: [got.body.messages[0].lease] } });
  assert.deepEqual(acked.body, { acked: 1, expired: [] });
});
