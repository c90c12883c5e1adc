import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from 'ldapts';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 3 against a real OpenLDAP slapd (test/fixtures/directory.ldif): service bind, user search
// with escaped filters, user bind, group search (member and uniqueMember, no memberOf), nested
// groups only when asked for, group → verb rules with default deny, the explain endpoint, fail
// closed while the directory is down and recover without a restart, membership changes within
// the cache TTL (1 s in the test config).

const DN = {
  ops: `cn=ops,ou=groups,${LDAP.base}`,
  approvers: `cn=payment-approvers,ou=groups,${LDAP.base}`,
  clerks: `cn=clerks,ou=groups,${LDAP.base}`,
  admins: `cn=admins,ou=groups,${LDAP.base}`,
  auditors: `cn=auditors,ou=groups,${LDAP.base}`,
  bob: `uid=bob,ou=people,${LDAP.base}`,
};

// Rule ids are config-<entry>-<allow>, in this order.
const PERMISSIONS = [
  // by DN
  { group: DN.ops, allow: [{ address: 'queue:ops.**', verbs: ['send', 'consume', 'browse'] }] },
  { group: DN.approvers, allow: [{ address: 'queue:payments.**', verbs: ['consume', 'browse'] }, { address: 'flow:payment-approval', verbs: ['start'] }] },
  // by cn
  { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
  { group: 'auditors', allow: [{ address: 'queue:audit.**', verbs: ['browse'] }] },
];

const PW: Record<string, string> = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw' };
const as = (name: string, password = PW[name]!) => ({ name, password });
const BAD_LOGIN = 'invalid user name or password';

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

// --- helpers ---------------------------------------------------------------------------------

async function send(user: string, to: string) {
  return api(gw.url, 'POST', '/api/messages', { user: as(user), body: { to, body: { from: user } } });
}
async function browse(user: string, address: string, base = gw.url) {
  return api(base, 'GET', `/api/queues/${enc(address)}`, { user: as(user) });
}
async function consume(user: string, address: string) {
  return api(gw.url, 'POST', `/api/queues/${enc(address)}/receive`, { user: as(user), body: { max: 1, leaseSeconds: 5 } });
}
async function can(asUser: string, user: string, verb: string, address: string, base = gw.url) {
  return api(base, 'GET', `/api/can?${new URLSearchParams({ user, verb, address })}`, { user: as(asUser) });
}
/** Any authenticated call: 200 for any directory user with the right password. */
async function whoami(user: { name: string; password: string }) {
  return api(gw.url, 'GET', '/api/tokens', { user });
}

/** A browser-like client of the web pages: keeps cookies, never follows redirects. */
class WebClient {
  readonly cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  async request(method: string, path: string, form?: Record<string, string>) {
    const headers: Record<string, string> = { accept: 'text/html' };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(this.base + path, { method, headers, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = /expires=Thu, 01 Jan 1970/i.test(c) || /max-age=0\b/i.test(c);
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async csrf(path = '/login'): Promise<string> {
    const page = await this.request('GET', path);
    assert.equal(page.status, 200, page.text);
    const m = /name="_csrf" value="([^"]+)"/.exec(page.text);
    assert.ok(m, `no CSRF token on ${path}`);
    return m[1]!;
  }

  async login(username: string, password: string) {
    const _csrf = await this.csrf('/login');
    return this.request('POST', '/login', { _csrf, username, password, next: '/' });
  }
}

// --- passwords -------------------------------------------------------------------------------

test('the right password logs in; a wrong password and an unknown user get the same 401', async () => {
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin']) {
    const r = await whoami(as(user));
    assert.equal(r.status, 200, `${user}: ${JSON.stringify(r.body)}`);
  }
  const wrong = await whoami(as('alice', 'not-alices-password'));
  const unknown = await whoami(as('mallory', 'alice-pw'));
  const anotherUsersPassword = await whoami(as('alice', 'bob-pw'));
  for (const r of [wrong, unknown, anotherUsersPassword]) {
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.deepEqual(r.body, { error: { code: 'unauthenticated', message: BAD_LOGIN } });
  }
  // The service account is not a login of the user search base.
  assert.equal((await whoami(as('switchboard', LDAP.servicePassword))).status, 401);
});

test('an empty password is refused (an LDAP unauthenticated bind must not count as a login)', async () => {
  for (const user of ['alice', 'erin', 'nosuchuser']) {
    const r = await whoami(as(user, ''));
    assert.equal(r.status, 401, `${user}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, 'unauthenticated');
  }
  const web = new WebClient(gw.url);
  const r = await web.login('alice', '');
  assert.equal(r.status, 401, r.text);
  assert.match(r.text, new RegExp(BAD_LOGIN));
  // Not logged in afterwards.
  assert.equal((await web.request('GET', '/')).status, 303);
});

test('LDAP filter injection strings as user names find nobody and do not log in', async () => {
  const names = ['*', '*)(uid=*', 'alice)(|(uid=*', '\\', 'alice*', '*)(|(objectClass=*'];
  for (const name of names) {
    for (const password of ['alice-pw', 'x']) {
      const r = await whoami({ name, password });
      assert.equal(r.status, 401, `${JSON.stringify(name)} / ${password}: ${JSON.stringify(r.body)}`);
      assert.deepEqual(r.body, { error: { code: 'unauthenticated', message: BAD_LOGIN } });
    }
    // The search itself finds nothing (an escaped filter): explain says no such user.
    const e = await can('carol', name, 'send', 'queue:ops.x');
    assert.equal(e.status, 404, `${JSON.stringify(name)}: ${JSON.stringify(e.body)}`);
  }
  const web = new WebClient(gw.url);
  const r = await web.login('*)(uid=*', 'alice-pw');
  assert.equal(r.status, 401, r.text);
  assert.equal((await web.request('GET', '/')).status, 303, 'the injection attempt must not leave a logged-in session');
});

// --- groups → rights -------------------------------------------------------------------------

test('group memberships come from a group search (member and uniqueMember); the entries have no memberOf', async () => {
  const c = new Client({ url: ldap.url });
  try {
    await c.bind(LDAP.service, LDAP.servicePassword);
    const { searchEntries } = await c.search(`ou=people,${LDAP.base}`, { scope: 'sub', filter: '(uid=alice)', attributes: ['*', '+'] });
    assert.equal(searchEntries.length, 1);
    assert.ok(!Object.keys(searchEntries[0]!).some((k) => k.toLowerCase() === 'memberof'), 'the fixture must not rely on memberOf');
  } finally {
    await c.unbind();
  }
  const alice = await can('carol', 'alice', 'browse', 'queue:ops.x');
  assert.equal(alice.status, 200, JSON.stringify(alice.body));
  // groupOfNames (ops) and groupOfUniqueNames (clerks), by DN and by cn.
  for (const g of [DN.ops, 'ops', DN.clerks, 'clerks']) assert.ok(alice.body.groups.includes(g), `alice's groups ${JSON.stringify(alice.body.groups)} lack ${g}`);
  assert.ok(!alice.body.groups.includes('payment-approvers'));
  const dave = await can('carol', 'dave', 'browse', 'queue:ops.x');
  for (const g of ['payment-approvers', 'clerks']) assert.ok(dave.body.groups.includes(g), `dave's groups ${JSON.stringify(dave.body.groups)} lack ${g}`);
  const erin = await can('carol', 'erin', 'browse', 'queue:ops.x');
  assert.deepEqual(erin.body.groups, []);
});

test('send: ops (rule by DN) and clerks (rule by cn) may send where their rules say; others get 403', async () => {
  assert.equal((await send('alice', 'queue:ops.orders')).status, 202);
  assert.equal((await send('dave', 'queue:in.orders')).status, 202, 'dave is a clerk through uniqueMember');
  for (const [user, to] of [['bob', 'queue:ops.orders'], ['bob', 'queue:in.orders'], ['dave', 'queue:ops.orders'], ['carol', 'queue:ops.orders'], ['alice', 'queue:payments.x'], ['alice', 'queue:in.a.b']] as const) {
    const r = await send(user, to);
    assert.equal(r.status, 403, `${user} → ${to}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, 'forbidden');
  }
  // The sender is the authenticated user.
  const b = await browse('alice', 'queue:ops.orders');
  assert.equal(b.status, 200);
  assert.deepEqual(b.body.messages.map((m: { sender: unknown }) => m.sender), [{ kind: 'user', name: 'alice' }]);
});

test('browse and consume: payment-approvers (rule by DN) on queue:payments.**, nobody else', async () => {
  for (const user of ['bob', 'dave']) {
    const b = await browse(user, 'queue:payments.eu');
    assert.equal(b.status, 200, `${user}: ${JSON.stringify(b.body)}`);
    const c = await consume(user, 'queue:payments.eu');
    assert.equal(c.status, 200, `${user}: ${JSON.stringify(c.body)}`);
    assert.deepEqual(c.body.messages, []);
  }
  for (const user of ['alice', 'carol', 'erin']) {
    assert.equal((await browse(user, 'queue:payments.eu')).status, 403, user);
    assert.equal((await consume(user, 'queue:payments.eu')).status, 403, user);
  }
  // approvers may not send there (no send verb in their rule)
  assert.equal((await send('bob', 'queue:payments.eu')).status, 403);
  // clerks browse queue:out.*, but may not consume it
  assert.equal((await browse('alice', 'queue:out.reports')).status, 200);
  assert.equal((await consume('alice', 'queue:out.reports')).status, 403);
  assert.equal((await browse('bob', 'queue:out.reports')).status, 403);
});

test('start: explained by /api/can for payment-approvers on flow:payment-approval', async () => {
  const bob = await can('carol', 'bob', 'start', 'flow:payment-approval');
  assert.equal(bob.status, 200, JSON.stringify(bob.body));
  assert.equal(bob.body.allowed, true);
  assert.equal(bob.body.rule.id, 'config-2-2');
  assert.equal(bob.body.rule.group, DN.approvers);
  for (const user of ['alice', 'carol', 'erin']) {
    const r = await can('carol', user, 'start', 'flow:payment-approval');
    assert.equal(r.status, 200);
    assert.equal(r.body.allowed, false, `${user} must not start the flow`);
  }
  assert.equal((await can('carol', 'bob', 'start', 'flow:other')).body.allowed, false);
});

test('admin: admins (rule by cn) may read the audit and explain; others get 403', async () => {
  assert.equal((await api(gw.url, 'GET', '/api/audit', { user: as('carol') })).status, 200);
  for (const user of ['alice', 'bob', 'dave', 'erin']) {
    const r = await api(gw.url, 'GET', '/api/audit', { user: as(user) });
    assert.equal(r.status, 403, `${user}: ${JSON.stringify(r.body)}`);
    assert.equal((await can(user, 'alice', 'send', 'queue:ops.x')).status, 403, `${user} may not use explain`);
  }
  const d = await can('carol', 'carol', 'admin', 'queue:anything');
  assert.equal(d.body.allowed, true);
  assert.equal(d.body.rule.id, 'config-4-1');
});

test('default deny: erin (in no group) authenticates but may do nothing', async () => {
  assert.equal((await whoami(as('erin'))).status, 200);
  for (const to of ['queue:ops.x', 'queue:in.x', 'queue:payments.x']) assert.equal((await send('erin', to)).status, 403, to);
  for (const a of ['queue:ops.x', 'queue:out.x', 'queue:payments.x', 'queue:audit.x']) {
    assert.equal((await browse('erin', a)).status, 403, a);
    assert.equal((await consume('erin', a)).status, 403, a);
  }
  assert.equal((await api(gw.url, 'GET', '/api/audit', { user: as('erin') })).status, 403);
  for (const verb of ['send', 'consume', 'browse', 'start', 'admin']) {
    for (const address of ['queue:ops.x', 'flow:payment-approval', 'queue:anything']) {
      const r = await can('carol', 'erin', verb, address);
      assert.equal(r.body.allowed, false, `${verb} ${address}`);
      assert.ok(!('rule' in r.body));
    }
  }
});

test("a user's rights are the union of their groups' rules (alice: ops + clerks)", async () => {
  const checks: [string, string, string][] = [
    ['send', 'queue:ops.a', 'config-1-1'],
    ['consume', 'queue:ops.a', 'config-1-1'],
    ['browse', 'queue:ops.a', 'config-1-1'],
    ['send', 'queue:in.a', 'config-3-1'],
    ['browse', 'queue:out.a', 'config-3-2'],
  ];
  for (const [verb, address, rule] of checks) {
    const r = await can('carol', 'alice', verb, address);
    assert.equal(r.body.allowed, true, `${verb} ${address}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.rule.id, rule);
  }
  // through the real doors too
  assert.equal((await send('alice', 'queue:in.union')).status, 202);
  assert.equal((await send('alice', 'queue:ops.union')).status, 202);
  assert.equal((await browse('alice', 'queue:out.union')).status, 200);
  // and nothing more
  assert.equal((await can('carol', 'alice', 'send', 'queue:out.a')).body.allowed, false);
  assert.equal((await can('carol', 'alice', 'consume', 'queue:in.a')).body.allowed, false);
  // bob, only in payment-approvers, has none of the clerk rights
  assert.equal((await can('carol', 'bob', 'send', 'queue:in.a')).body.allowed, false);
});

test('GET /api/can explains: the rule that allowed, or that none did', async () => {
  const yes = await can('carol', 'alice', 'send', 'queue:ops.orders');
  assert.equal(yes.status, 200);
  assert.equal(yes.body.allowed, true);
  assert.equal(yes.body.verb, 'send');
  assert.equal(yes.body.address, 'queue:ops.orders');
  assert.equal(yes.body.user, 'alice');
  assert.deepEqual(yes.body.rule, { id: 'config-1-1', group: DN.ops, address: 'queue:ops.**', verbs: ['send', 'consume', 'browse'], source: 'config' });
  assert.match(yes.body.reason, /config-1-1/);
  assert.match(yes.body.reason, /cn=ops/);

  const byCn = await can('carol', 'dave', 'send', 'queue:in.x');
  assert.equal(byCn.body.rule.id, 'config-3-1');
  assert.equal(byCn.body.rule.group, 'clerks');

  const no = await can('carol', 'bob', 'send', 'queue:ops.orders');
  assert.equal(no.status, 200);
  assert.equal(no.body.allowed, false);
  assert.ok(!('rule' in no.body), JSON.stringify(no.body));
  assert.match(no.body.reason, /no rule allows user:bob to send on queue:ops\.orders/);
  assert.match(no.body.reason, /default deny/);

  const forbidden = await can('alice', 'bob', 'send', 'queue:ops.orders');
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.code, 'forbidden');
  assert.equal((await can('carol', 'nosuchuser', 'send', 'queue:ops.x')).status, 404);
  assert.equal((await api(gw.url, 'GET', '/api/can?user=bob&verb=fly&address=queue:x', { user: as('carol') })).status, 400);
  assert.equal((await api(gw.url, 'GET', '/api/can?user=bob&verb=send&address=queue:x')).status, 401);
});

test('nested groups count only with nestedGroups: true (carol: admins ⊂ auditors)', async () => {
  // Without nesting (the main gateway): carol is in admins only.
  assert.equal((await browse('carol', 'queue:audit.log')).status, 403);
  const flat = await can('carol', 'carol', 'browse', 'queue:audit.log');
  assert.equal(flat.body.allowed, false);
  assert.ok(!flat.body.groups.includes('auditors'));

  const nested = await startTestGateway(redis.url, { directory: ldapDirectoryConfig(ldap.url, { nestedGroups: true }), permissions: PERMISSIONS });
  extraGateways.push(nested);
  const r = await browse('carol', 'queue:audit.log', nested.url);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const e = await can('carol', 'carol', 'browse', 'queue:audit.log', nested.url);
  assert.equal(e.body.allowed, true);
  assert.equal(e.body.rule.id, 'config-5-1');
  for (const g of ['admins', 'auditors', DN.auditors]) assert.ok(e.body.groups.includes(g), `${g} in ${JSON.stringify(e.body.groups)}`);
  // Nesting does not hand auditor rights to anybody else.
  assert.equal((await browse('alice', 'queue:audit.log', nested.url)).status, 403);
  assert.equal((await can('carol', 'erin', 'browse', 'queue:audit.log', nested.url)).body.allowed, false);
});

// --- outage and recovery ---------------------------------------------------------------------

test('LDAP slow (slapd paused, connections accepted but never answered): logins fail closed with 503, then recover', async () => {
  assert.ok(ldap.pid > 0);
  process.kill(ldap.pid, 'SIGSTOP');
  try {
    // The 2 s operation timeout turns a hanging directory into "unavailable", never a 401 or a 200.
    const slow = (await waitFor(async () => {
      const r = await whoami(as('erin'));
      return r.status === 503 ? r : undefined;
    }, 60_000, 'a login to be refused while slapd is paused'))!;
    assert.equal(slow.body.error.code, 'unavailable');
    assert.match(slow.body.error.message, /directory/i);
    assert.ok(Number(slow.headers.get('retry-after')) > 0);
    const ready = await api(gw.url, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.equal(ready.body.checks.directory.ok, false);
  } finally {
    process.kill(ldap.pid, 'SIGCONT');
  }
  await waitFor(async () => (await whoami(as('erin'))).status === 200, 60_000, 'logins to work once slapd answers again');
});

test('LDAP down: new logins 503 with Retry-After, /readyz down, web sessions keep working; back up: logins work again', async () => {
  const web = new WebClient(gw.url);
  const login = await web.login('alice', 'alice-pw');
  assert.equal(login.status, 303, login.text);
  const home = await web.request('GET', '/');
  assert.equal(home.status, 200);
  assert.match(home.text, /Hello, alice/);
  assert.equal((await api(gw.url, 'GET', '/readyz')).status, 200);

  await ldap.stop();
  try {
    // New API logins (once the 1 s caches have expired): 503 JSON, Retry-After, a clear message.
    const down = (await waitFor(async () => {
      const r = await whoami(as('dave'));
      return r.status === 503 ? r : undefined;
    }, 60_000, 'a login to be refused with 503 while LDAP is down'))!;
    assert.equal(down.body.error.code, 'unavailable');
    assert.match(down.body.error.message, /directory/i);
    assert.match(down.body.error.message, /cannot be reached/);
    assert.ok(Number(down.headers.get('retry-after')) > 0, `Retry-After: ${down.headers.get('retry-after')}`);
    // Every user, known or not, once their cached entry (1 s) has expired.
    for (const user of ['erin', 'bob', 'nosuchuser']) {
      const r = (await waitFor(async () => {
        const x = await whoami(as(user, user === 'nosuchuser' ? 'x' : PW[user]!));
        return x.status === 503 ? x : undefined;
      }, 60_000, `a login of ${user} to be refused with 503`))!;
      assert.equal(r.body.error.code, 'unavailable');
    }

    // The web login says so too.
    const other = new WebClient(gw.url);
    const page = await other.login('bob', 'bob-pw');
    assert.equal(page.status, 503, page.text);
    assert.match(page.text, /directory cannot be reached/);
    assert.ok(Number(page.headers.get('retry-after')) > 0);
    assert.equal((await other.request('GET', '/')).status, 303, 'no session from a failed login');

    const ready = (await waitFor(async () => {
      const r = await api(gw.url, 'GET', '/readyz');
      return r.status === 503 ? r : undefined;
    }, 60_000, '/readyz to report the directory down'))!;
    assert.equal(ready.body.checks.directory.ok, false);
    assert.equal(ready.body.checks.redis.ok, true);

    // The existing web session keeps working (with the groups it had).
    const still = await web.request('GET', '/');
    assert.equal(still.status, 200, still.text);
    assert.match(still.text, /Hello, alice/);
    assert.match(still.text, /ops/);
    // Nothing crashed.
    assert.equal((await api(gw.url, 'GET', '/healthz')).status, 200);
  } finally {
    await ldap.start();
  }

  // Back up: the same gateway accepts logins again, without a restart.
  await waitFor(async () => (await whoami(as('dave'))).status === 200, 60_000, 'logins to work again after LDAP restarted');
  await waitFor(async () => (await api(gw.url, 'GET', '/readyz')).status === 200, 60_000, '/readyz to recover');
  const again = new WebClient(gw.url);
  assert.equal((await again.login('bob', 'bob-pw')).status, 303);
  assert.match((await again.request('GET', '/')).text, /Hello, bob/);
  assert.equal((await whoami(as('dave', 'wrong'))).status, 401, 'wrong passwords are 401 again, not 503');
  assert.equal((await web.request('GET', '/')).status, 200, 'the session from before the outage still works');
});

test('a membership change (bob removed from payment-approvers) is visible after the cache TTL', async () => {
  assert.equal((await browse('bob', 'queue:payments.eu')).status, 200);
  const web = new WebClient(gw.url);
  assert.equal((await web.login('bob', 'bob-pw')).status, 303);
  assert.match((await web.request('GET', '/')).text, /payment-approvers/);

  await ldap.modify(`dn: ${DN.approvers}\nchangetype: modify\ndelete: member\nmember: ${DN.bob}\n`);
  try {
    await waitFor(async () => (await browse('bob', 'queue:payments.eu')).status === 403, 60_000, "bob's browse right to go");
    const e = await can('carol', 'bob', 'consume', 'queue:payments.eu');
    assert.equal(e.body.allowed, false);
    assert.ok(!e.body.groups.includes('payment-approvers'));
    assert.equal((await consume('bob', 'queue:payments.eu')).status, 403);
    // He still logs in (he is still a user); dave, still a member, keeps the right.
    assert.equal((await whoami(as('bob'))).status, 200);
    assert.equal((await browse('dave', 'queue:payments.eu')).status, 200);
    // The logged-in web session sees the new groups too.
    await waitFor(async () => !/payment-approvers/.test((await web.request('GET', '/')).text), 60_000, "bob's web session to lose the group");
  } finally {
    await ldap.modify(`dn: ${DN.approvers}\nchangetype: modify\nadd: member\nmember: ${DN.bob}\n`);
  }
  await waitFor(async () => (await browse('bob', 'queue:payments.eu')).status === 200, 60_000, "bob's browse right to come back");
});
