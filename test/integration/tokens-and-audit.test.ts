import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// API tokens (created, shown once, stored hashed, used as Bearer, listed, revoked), the CLI with
// SWITCHBOARD_TOKEN, the audit trail (GET /api/audit) and login rate limits, against a real slapd
// and a real redis-server.

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');
const TOKEN = /^sbt_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$/;

const PERMISSIONS = [
  { group: `cn=ops,ou=groups,${LDAP.base}`, allow: [{ address: 'queue:ops.**', verbs: ['send', 'consume', 'browse'] }] },
  { group: `cn=payment-approvers,ou=groups,${LDAP.base}`, allow: [{ address: 'queue:payments.**', verbs: ['consume', 'browse'] }, { address: 'flow:payment-approval', verbs: ['start'] }] },
  { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

const PW: Record<string, string> = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw' };
const as = (name: string, password = PW[name]!) => ({ name, password });
/** Wrong passwords tried in this file: none may ever show up in the audit. */
const WRONG_PASSWORDS = ['Wr0ng-Secret-Pass!', 'ghost-Secret-9'];
/** Every token created in this file (the whole token): no secret may show up in the audit or in Redis. */
const secrets: string[] = [];

let redis: TestRedis;
let ldap: TestLdap;
let gw: Gateway;
const extraGateways: Gateway[] = [];

before(async () => {
  redis = await startTestRedis();
  ldap = await startTestLdap();
  gw = await startTestGateway(redis.url, { directory: ldapDirectoryConfig(ldap.url), permissions: PERMISSIONS });
});
after(async () => {
  for (const g of extraGateways) await g.stop();
  await gw?.stop();
  await ldap?.dispose();
  await redis?.dispose();
});

/** The secret part of a token (it may itself contain '_'). */
const secretOf = (token: string): string => TOKEN.exec(token)![2]!;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function createToken(user: string, name: string): Promise<{ id: string; name: string; user: string; createdAt: string; token: string }> {
  const r = await api(gw.url, 'POST', '/api/tokens', { user: as(user), body: { name } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  secrets.push(r.body.token);
  return r.body;
}

/** Every value stored in Redis, as text (keys and values), to look for secrets. */
async function redisDump(): Promise<string> {
  const c = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await c.connect();
  try {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await c.scan(cursor, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        out.push(key);
        const type = await c.type(key);
        if (type === 'string') out.push(String(await c.get(key)));
        else if (type === 'hash') out.push(JSON.stringify(await c.hgetall(key)));
        else if (type === 'set') out.push(JSON.stringify(await c.smembers(key)));
        else if (type === 'list') out.push(JSON.stringify(await c.lrange(key, 0, -1)));
        else if (type === 'zset') out.push(JSON.stringify(await c.zrange(key, 0, -1)));
        else if (type === 'stream') out.push(JSON.stringify(await c.xrange(key, '-', '+')));
      }
    } while (cursor !== '0');
    return out.join('\n');
  } finally {
    c.disconnect();
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The real CLI with an API token and nothing else from the developer's environment. */
function cli(args: string[], token: string): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SWITCHBOARD_URL', 'SWITCHBOARD_USER', 'SWITCHBOARD_PASSWORD', 'SWITCHBOARD_TOKEN', 'SWITCHBOARD_CONFIG', 'NODE_OPTIONS']) delete env[k];
  env.SWITCHBOARD_URL = gw.url;
  env.SWITCHBOARD_TOKEN = token;
  return new Promise((res, rej) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      if (err && code === -1) return rej(new Error(`the CLI did not run: ${err.message}\n${stderr}`));
      res({ code, stdout, stderr });
    });
    child.stdin!.end();
  });
}

function json(r: Run): any {
  assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// --- tokens ----------------------------------------------------------------------------------

test('POST /api/tokens creates a token: 201, shown once as sbt_…, stored only as a hash', async () => {
  const t = await createToken('alice', 'deploy script');
  const m = TOKEN.exec(t.token);
  assert.ok(m, `token format: ${t.token}`);
  assert.equal(m[1], t.id);
  assert.equal(t.user, 'alice');
  assert.equal(t.name, 'deploy script');
  assert.ok(!Number.isNaN(Date.parse(t.createdAt)));

  const dump = await redisDump();
  const secret = m[2]!;
  assert.ok(!dump.includes(secret), 'the token secret is stored in Redis');
  assert.ok(dump.includes(createHash('sha256').update(secret).digest('hex')), 'the SHA-256 of the secret is what Redis keeps');

  // Every creation is a new token.
  const t2 = await createToken('alice', 'deploy script');
  assert.notEqual(t2.id, t.id);
  assert.notEqual(t2.token, t.token);
});

test('creating a token needs credentials and a valid name', async () => {
  assert.equal((await api(gw.url, 'POST', '/api/tokens', { body: { name: 'x' } })).status, 401);
  assert.equal((await api(gw.url, 'POST', '/api/tokens', { user: as('alice', 'nope'), body: { name: 'x' } })).status, 401);
  for (const body of [{}, { name: '' }, { name: 'x'.repeat(65) }, { name: 42 }, { name: 'line\nbreak' }]) {
    const r = await api(gw.url, 'POST', '/api/tokens', { user: as('alice'), body });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.error.code, 'bad_request');
  }
});

test("a token acts as its owner with the owner's groups: permitted and denied calls", async () => {
  const { token } = await createToken('alice', 'acts as alice');
  // ops (by DN) and clerks (by cn) rights of alice
  const sent = await api(gw.url, 'POST', '/api/messages', { headers: bearer(token), body: { to: 'queue:ops.tokens', body: { n: 1 }, sender: { kind: 'user', name: 'carol' } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  assert.equal((await api(gw.url, 'POST', '/api/messages', { headers: bearer(token), body: { to: 'queue:in.tokens', body: 1 } })).status, 202);
  const b = await api(gw.url, 'GET', `/api/queues/${enc('queue:ops.tokens')}`, { headers: bearer(token) });
  assert.equal(b.status, 200);
  assert.deepEqual(b.body.messages.map((x: { id: string; sender: unknown }) => [x.id, x.sender]), [[sent.body.id, { kind: 'user', name: 'alice' }]], 'the sender is the token owner, never the client-supplied one');
  // what alice may not do, her token may not either: 403 (known principal), not 401
  for (const [method, path, body] of [
    ['POST', '/api/messages', { to: 'queue:payments.x', body: 1 }],
    ['GET', `/api/queues/${enc('queue:payments.x')}`, undefined],
    ['GET', '/api/audit', undefined],
    ['GET', `/api/can?user=bob&verb=send&address=queue:ops.x`, undefined],
  ] as const) {
    const r = await api(gw.url, method, path, { headers: bearer(token), body });
    assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
  }
  // an admin's token has the admin's rights
  const carol = await createToken('carol', 'admin script');
  const e = await api(gw.url, 'GET', `/api/can?user=bob&verb=browse&address=${enc('queue:payments.eu')}`, { headers: bearer(carol.token) });
  assert.equal(e.status, 200, JSON.stringify(e.body));
  assert.equal(e.body.allowed, true);
  assert.equal((await api(gw.url, 'POST', '/api/messages', { headers: bearer(carol.token), body: { to: 'queue:ops.x', body: 1 } })).status, 403, 'admin on ** is not send');
});

test('GET /api/tokens lists the caller’s own tokens without secrets', async () => {
  const t = await createToken('dave', 'listed');
  const r = await api(gw.url, 'GET', '/api/tokens', { user: as('dave') });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.tokens, [{ id: t.id, name: 'listed', user: 'dave', createdAt: t.createdAt }]);
  const text = JSON.stringify(r.body);
  assert.ok(!text.includes(secretOf(t.token)), 'the secret is never listed');
  // with the token itself too
  const viaToken = await api(gw.url, 'GET', '/api/tokens', { headers: bearer(t.token) });
  assert.deepEqual(viaToken.body, r.body);
  // alice's list has her tokens only
  const alice = await api(gw.url, 'GET', '/api/tokens', { user: as('alice') });
  assert.ok(alice.body.tokens.length >= 1);
  assert.ok(alice.body.tokens.every((x: { user: string; token?: string }) => x.user === 'alice' && x.token === undefined));
});

test('another user cannot revoke a token (404); its owner can, and then it is refused with 401', async () => {
  const t = await createToken('alice', 'to revoke');
  const stranger = await api(gw.url, 'DELETE', `/api/tokens/${t.id}`, { user: as('dave') });
  assert.equal(stranger.status, 404, JSON.stringify(stranger.body));
  // not even an admin
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${t.id}`, { user: as('carol') })).status, 404);
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { headers: bearer(t.token) })).status, 200, 'still valid after the failed revocations');

  const r = await api(gw.url, 'DELETE', `/api/tokens/${t.id}`, { user: as('alice') });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.revoked.id, t.id);
  const after = await api(gw.url, 'GET', '/api/tokens', { headers: bearer(t.token) });
  assert.equal(after.status, 401);
  assert.equal(after.body.error.code, 'unauthenticated');
  assert.equal((await api(gw.url, 'POST', '/api/messages', { headers: bearer(t.token), body: { to: 'queue:ops.x', body: 1 } })).status, 401);
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${t.id}`, { user: as('alice') })).status, 404, 'a revoked token cannot be revoked twice');
  const list = await api(gw.url, 'GET', '/api/tokens', { user: as('alice') });
  assert.ok(!list.body.tokens.some((x: { id: string }) => x.id === t.id));
  assert.equal((await api(gw.url, 'DELETE', '/api/tokens/not-an-id', { user: as('alice') })).status, 400);
});

test('malformed, unknown and tampered tokens get 401', async () => {
  const good = await createToken('bob', 'tamper target');
  const [, id, secret] = TOKEN.exec(good.token)!;
  const flip = (s: string) => s.slice(0, -1) + (s.endsWith('A') ? 'B' : 'A');
  const bad = [
    'garbage',
    'sbt_',
    `sbt_${id}`,
    `sbt_${id}_`,
    `sbt_${id}_${secret!.slice(1)}`,
    `sbt_${id}_${flip(secret!)}`,
    `sbt_${'0'.repeat(16)}_${secret}`,
    `SBT_${id}_${secret}`,
    `${good.token}x`,
    `sbt_${id}_${secret}' OR '1'='1`,
  ];
  for (const token of bad) {
    const r = await api(gw.url, 'GET', '/api/tokens', { headers: bearer(token) });
    assert.equal(r.status, 401, `${token}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, 'unauthenticated');
  }
  for (const authorization of ['Bearer', 'Bearer ', `Token ${good.token}`, good.token]) {
    const r = await api(gw.url, 'GET', '/api/tokens', { headers: { authorization } });
    assert.equal(r.status, 401, `${authorization}: ${JSON.stringify(r.body)}`);
  }
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { headers: bearer(good.token) })).status, 200, 'the real token still works');
});

test('the CLI works with SWITCHBOARD_TOKEN: tokens ls/create/revoke, send, can', async () => {
  const alice = await createToken('alice', 'cli');
  const carol = await createToken('carol', 'cli admin');

  const ls = json(await cli(['tokens', 'ls'], alice.token));
  assert.ok(ls.tokens.some((t: { id: string }) => t.id === alice.id));
  assert.ok(!JSON.stringify(ls).includes(alice.token));

  const sent = json(await cli(['send', 'queue:ops.cli', '--json', '{"n":1}'], alice.token));
  assert.equal(sent.duplicate, false);
  const b = await api(gw.url, 'GET', `/api/queues/${enc('queue:ops.cli')}`, { user: as('alice') });
  assert.deepEqual(b.body.messages.map((m: { id: string; sender: unknown }) => [m.id, m.sender]), [[sent.id, { kind: 'user', name: 'alice' }]]);

  const denied = await cli(['send', 'queue:payments.cli', '--json', '1'], alice.token);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /403/);

  const yes = json(await cli(['can', 'bob', 'start', 'flow:payment-approval'], carol.token));
  assert.equal(yes.allowed, true);
  assert.equal(yes.rule.id, 'config-2-2');
  const no = json(await cli(['can', 'erin', 'send', 'queue:ops.x'], carol.token));
  assert.equal(no.allowed, false);
  assert.match(no.reason, /default deny/);
  const notAdmin = await cli(['can', 'bob', 'send', 'queue:ops.x'], alice.token);
  assert.equal(notAdmin.code, 1);
  assert.match(notAdmin.stderr, /403/);

  // A token may not mint tokens (a leaked one could outlive its revocation): only a password may.
  const minted = await cli(['tokens', 'create', 'made by the cli'], alice.token);
  assert.equal(minted.code, 1);
  assert.match(minted.stderr, /403[\s\S]*cannot create tokens/);
  const made = await createToken('alice', 'revoked by the cli');
  const revoked = json(await cli(['tokens', 'revoke', made.id], alice.token));
  assert.equal(revoked.revoked.id, made.id);
  const refused = await cli(['tokens', 'ls'], made.token);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /401/);
});

// --- audit -----------------------------------------------------------------------------------

interface AuditEntry {
  action: string;
  actor: string;
  ip?: string;
  target?: string;
  detail?: string;
  at: string;
  id: string;
}

async function auditEntries(query = ''): Promise<AuditEntry[]> {
  const r = await api(gw.url, 'GET', `/api/audit?limit=1000${query}`, { user: as('carol') });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
}

test('GET /api/audit records logins, failures, denials and token changes, and never a secret', async () => {
  // Fresh events of each kind, with names only this test uses.
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { user: as('erin') })).status, 200);
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { user: as('erin', WRONG_PASSWORDS[0]) })).status, 401);
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { user: as('ghost', WRONG_PASSWORDS[1]) })).status, 401);
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: as('erin'), body: { to: 'queue:ops.audited', body: 1 } })).status, 403);
  const t = await api(gw.url, 'POST', '/api/tokens', { user: as('erin'), body: { name: 'audited' } });
  assert.equal(t.status, 201);
  secrets.push(t.body.token);
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${t.body.id}`, { user: as('erin') })).status, 200);

  const find = (entries: AuditEntry[], action: string, actor: string, target?: string) =>
    entries.find((e) => e.action === action && e.actor === actor && (target === undefined || e.target === target));
  // access.denied is recorded while the 403 is answered: wait for it rather than race it.
  const entries = (await waitFor(async () => {
    const all = await auditEntries();
    return find(all, 'access.denied', 'user:erin', 'queue:ops.audited') ? all : undefined;
  }, 30_000, 'the access.denied entry'))!;

  const success = find(entries, 'login.success', 'user:erin', 'http-api');
  assert.ok(success, 'login.success for erin');
  assert.ok(success.ip, 'the client address is recorded');
  assert.ok(!Number.isNaN(Date.parse(success.at)));
  assert.ok(find(entries, 'login.failure', 'user:erin'), 'login.failure for a wrong password');
  assert.ok(find(entries, 'login.failure', 'user:ghost'), 'login.failure for an unknown user');
  const denied = find(entries, 'access.denied', 'user:erin', 'queue:ops.audited')!;
  assert.match(denied.detail ?? '', /send/);
  assert.ok(find(entries, 'token.created', 'user:erin', `token:${t.body.id}`), 'token.created');
  assert.ok(find(entries, 'token.revoked', 'user:erin', `token:${t.body.id}`), 'token.revoked');
  // earlier tests' token events are there too
  assert.ok(entries.filter((e) => e.action === 'token.created').length >= secrets.length - 1);
  assert.ok(entries.some((e) => e.action === 'login.failure' && e.actor === 'token:(invalid)'), 'a bad bearer token is a login failure');
  // newest first
  const times = entries.map((e) => Date.parse(e.at));
  assert.deepEqual(times, [...times].sort((a, b) => b - a));

  // filters
  const failures = await auditEntries('&action=login.failure');
  assert.ok(failures.length >= 2);
  assert.ok(failures.every((e) => e.action === 'login.failure'));
  const erinOnly = await auditEntries(`&actor=${enc('user:erin')}`);
  assert.ok(erinOnly.length >= 5 && erinOnly.every((e) => e.actor === 'user:erin'));

  // never a password or a token secret
  const text = JSON.stringify(await auditEntries());
  for (const pw of [...Object.values(PW), ...WRONG_PASSWORDS]) assert.ok(!text.includes(pw), `a password in the audit: ${pw}`);
  for (const token of secrets) {
    assert.ok(!text.includes(token), 'a token in the audit');
    assert.ok(!text.includes(secretOf(token)), 'a token secret in the audit');
  }
});

test('every web login is audited, even right after an API call with the same password', async () => {
  const before = (await api(gw.url, 'GET', '/api/audit?action=login.success&actor=user%3Adave&limit=100', { user: as('carol') })).body.entries.length;
  assert.equal((await api(gw.url, 'GET', '/api/tokens', { user: as('dave') })).status, 200);
  assert.equal(await webLogin(gw.url, 'dave', 'dave-pw'), 303);
  assert.equal(await webLogin(gw.url, 'dave', 'dave-pw'), 303);
  const entries = (await api(gw.url, 'GET', '/api/audit?action=login.success&actor=user%3Adave&limit=100', { user: as('carol') })).body.entries as { target?: string }[];
  assert.equal(entries.filter((e) => e.target === 'web-login').length, 2, JSON.stringify(entries));
  assert.ok(entries.length >= before + 2);
});

test('GET /api/audit is for admins only', async () => {
  for (const user of ['alice', 'bob', 'erin']) {
    const r = await api(gw.url, 'GET', '/api/audit', { user: as(user) });
    assert.equal(r.status, 403, `${user}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.entries, undefined);
  }
  assert.equal((await api(gw.url, 'GET', '/api/audit')).status, 401);
});

// --- rate limits -----------------------------------------------------------------------------

/** Logs in on the web form (with its CSRF token); returns the POST's status. */
async function webLogin(base: string, username: string, password: string): Promise<number> {
  const page = await fetch(`${base}/login`, { redirect: 'manual' });
  const cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())?.[1];
  assert.ok(csrf);
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
    body: new URLSearchParams({ _csrf: csrf, username, password, next: '/' }).toString(),
  });
  await res.text();
  return res.status;
}

test('login rate limit per user: the 4th failure answers 429, the same for existing and unknown names; others still log in', async () => {
  const limited = await startTestGateway(redis.url, {
    http: { port: 0, host: '127.0.0.1', loginLimits: { perUser: 3, perIp: 100, window: '1m' } },
    directory: ldapDirectoryConfig(ldap.url),
    permissions: PERMISSIONS,
  });
  extraGateways.push(limited);
  const call = (user: { name: string; password: string }) => api(limited.url, 'GET', '/api/tokens', { user });

  const answers: Record<string, unknown> = {};
  for (const name of ['alice', 'nobody-here']) {
    for (let i = 1; i <= 3; i++) {
      const r = await call(as(name, `wrong-${i}`));
      assert.equal(r.status, 401, `${name} attempt ${i}: ${JSON.stringify(r.body)}`);
    }
    const fourth = await call(as(name, 'wrong-4'));
    assert.equal(fourth.status, 429, `${name} attempt 4: ${JSON.stringify(fourth.body)}`);
    assert.equal(fourth.body.error.code, 'too_many_attempts');
    assert.ok(Number(fourth.headers.get('retry-after')) > 0, `Retry-After: ${fourth.headers.get('retry-after')}`);
    answers[name] = fourth.body;
  }
  assert.deepEqual(answers.alice, answers['nobody-here'], 'existing and unknown names are limited alike');

  // Locked out: even the right password gets 429 (or the limit would confirm a guess), whatever the case of the name, at every door.
  assert.equal((await call(as('alice'))).status, 429);
  assert.equal((await call(as('ALICE', 'wrong-5'))).status, 429);
  assert.equal(await webLogin(limited.url, 'alice', 'alice-pw'), 429);
  // Spaces around or inside the name make no new name to guess for: LDAP ignores them, so do the limits.
  for (const padded of [' alice', 'alice ', '  alice  ']) {
    assert.equal((await call(as(padded))).status, 429, JSON.stringify(padded));
    assert.equal(await webLogin(limited.url, padded, 'alice-pw'), 429, JSON.stringify(padded));
  }

  // Many requests at once with good credentials are never taken for failures.
  const burst = await Promise.all(Array.from({ length: 30 }, () => call(as('bob'))));
  assert.deepEqual([...new Set(burst.map((r) => r.status))], [200]);

  // Other users are not affected.
  for (const user of ['bob', 'dave', 'bob']) assert.equal((await call(as(user))).status, 200, user);
  assert.equal(await webLogin(limited.url, 'dave', 'dave-pw'), 303);
});

test('login rate limit per IP: many names failing from one address get 429', async () => {
  const limited = await startTestGateway(redis.url, {
    http: { port: 0, host: '127.0.0.1', loginLimits: { perUser: 100, perIp: 4, window: '1m' } },
    directory: ldapDirectoryConfig(ldap.url),
    permissions: PERMISSIONS,
  });
  extraGateways.push(limited);
  const call = (user: { name: string; password: string }) => api(limited.url, 'GET', '/api/tokens', { user });
  // Successful logins do not count.
  for (let i = 0; i < 6; i++) assert.equal((await call(as('bob'))).status, 200);
  for (let i = 1; i <= 4; i++) assert.equal((await call(as(`sprayed-${i}`, 'password1'))).status, 401, `attempt ${i}`);
  const r = await call(as('sprayed-5', 'password1'));
  assert.equal(r.status, 429, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'too_many_attempts');
  assert.match(r.body.error.message, /address/);
});
