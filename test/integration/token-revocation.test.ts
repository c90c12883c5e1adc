import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, startTestGateway } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 13.6: a leaked API token cannot outlive its revocation through tokens it minted. The
// choice: only a password login may create a token; a token that tries is refused 403 with the
// reason, audited (token.refused), and nothing is created. So revoking a leaked token ends every
// credential the thief had.

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

test('a token cannot mint a token: 403 with the reason, audited, nothing created; revoked, it is 401 everywhere', async () => {
  const leaked = await api(gw.url, 'POST', '/api/tokens', { user: 'clerk', body: { name: 'leaked' } });
  assert.equal(leaked.status, 201, JSON.stringify(leaked.body));
  const before = (await api(gw.url, 'GET', '/api/tokens', { user: 'clerk' })).body.tokens as { id: string }[];

  // The thief, holding only the token, tries to make a successor.
  const mint = await api(gw.url, 'POST', '/api/tokens', { headers: bearer(leaked.body.token), body: { name: 'successor' } });
  assert.equal(mint.status, 403, JSON.stringify(mint.body));
  assert.equal(mint.body.error.code, 'token_cannot_mint');
  assert.match(mint.body.error.message, /an API token cannot create tokens: sign in with your password/);
  assert.equal(mint.body.token, undefined);
  const afterMint = (await api(gw.url, 'GET', '/api/tokens', { user: 'clerk' })).body.tokens as { id: string }[];
  assert.deepEqual(afterMint.map((t) => t.id), before.map((t) => t.id), 'nothing was created');

  const audit = await api(gw.url, 'GET', '/api/audit?action=token.refused&limit=10', { user: 'ops' });
  assert.equal(audit.status, 200, JSON.stringify(audit.body));
  assert.ok(audit.body.entries.some((e: { actor: string; detail: string }) => e.actor === 'user:clerk' && /only a password login may/.test(e.detail)), JSON.stringify(audit.body.entries));

  // The owner revokes the leaked token: the thief has nothing left.
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${leaked.body.id}`, { user: 'clerk' })).status, 200);
  for (const [method, path, body] of [['GET', '/api/tokens', undefined], ['POST', '/api/tokens', { name: 'late successor' }], ['POST', '/api/messages', { to: 'queue:in.x', body: 1 }]] as const) {
    const r = await api(gw.url, method, path, { headers: bearer(leaked.body.token), body });
    assert.equal(r.status, 401, `${method} ${path}: ${JSON.stringify(r.body)}`);
  }
  assert.deepEqual((await api(gw.url, 'GET', '/api/tokens', { user: 'clerk' })).body.tokens, []);
});

test('a password login still creates tokens, and a token may still list and revoke its owner’s tokens', async () => {
  const a = await api(gw.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'a' } });
  const b = await api(gw.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'b' } });
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  const listed = await api(gw.url, 'GET', '/api/tokens', { headers: bearer(a.body.token) });
  assert.equal(listed.status, 200);
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${b.body.id}`, { headers: bearer(a.body.token) })).status, 200, 'revoking only takes rights away');
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { headers: bearer(b.body.token) })).status, 401);
});
