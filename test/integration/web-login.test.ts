import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { startTestGateway } from '../support/gateway.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The web login over real HTTP (cookies handled by hand, redirects not followed): session cookie
// flags, CSRF on every form (login and logout too), a new session id at login (fixation), the
// uniform error, same-site `next` only, the admin page (mapping and explain), escaping of
// user-supplied text. The same login in a real browser, keyboard only: test/e2e/keyboard-sign-in.test.ts.

const PERMISSIONS = [
  { group: `cn=ops,ou=groups,${LDAP.base}`, allow: [{ address: 'queue:ops.**', verbs: ['send', 'consume', 'browse'] }] },
  { group: `cn=payment-approvers,ou=groups,${LDAP.base}`, allow: [{ address: 'queue:payments.**', verbs: ['consume', 'browse'] }] },
  { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];
const BAD_LOGIN = 'invalid user name or password';

let redis: TestRedis;
let ldap: TestLdap;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  ldap = await startTestLdap();
  gw = await startTestGateway(redis.url, { directory: ldapDirectoryConfig(ldap.url), permissions: PERMISSIONS });
});
after(async () => {
  await gw?.stop();
  await ldap?.dispose();
  await redis?.dispose();
});

interface Page {
  status: number;
  headers: Headers;
  text: string;
  setCookies: string[];
}

/** A browser-like client: keeps cookies, never follows redirects. */
class WebClient {
  readonly cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  async request(method: string, path: string, form?: Record<string, string>): Promise<Page> {
    const headers: Record<string, string> = { accept: 'text/html' };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(this.base + path, { method, headers, body, redirect: 'manual' });
    const setCookies = res.headers.getSetCookie();
    for (const c of setCookies) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = /expires=Thu, 01 Jan 1970/i.test(c) || /max-age=0\b/i.test(c);
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return { status: res.status, headers: res.headers, text: await res.text(), setCookies };
  }

  get sid(): string | undefined {
    return this.cookies.get('sb.sid');
  }

  async csrf(path = '/login'): Promise<string> {
    const page = await this.request('GET', path);
    assert.equal(page.status, 200, `${path}: ${page.text}`);
    return csrfOf(page.text);
  }

  async login(username: string, password: string, next = '/'): Promise<Page> {
    const _csrf = await this.csrf('/login');
    return this.request('POST', '/login', { _csrf, username, password, next });
  }

  /** Asserts this client's session is logged in as `name` (the start page greets them). */
  async assertLoggedIn(name: string): Promise<Page> {
    const home = await this.request('GET', '/');
    assert.equal(home.status, 200, `expected to be logged in as ${name}, got ${home.status} ${home.headers.get('location') ?? ''}`);
    assert.match(home.text, new RegExp(`Hello, ${name}`));
    return home;
  }

  async assertLoggedOut(): Promise<void> {
    const home = await this.request('GET', '/');
    assert.equal(home.status, 303, `expected no login, got ${home.status}`);
    assert.match(home.headers.get('location') ?? '', /^\/login/);
  }
}

function csrfOf(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'no CSRF token in the page');
  return m[1]!;
}

function hiddenNext(html: string): string | undefined {
  return /name="next" value="([^"]*)"/.exec(html)?.[1];
}

async function loggedIn(user: string, password = `${user}-pw`): Promise<WebClient> {
  const c = new WebClient(gw.url);
  const r = await c.login(user, password);
  assert.equal(r.status, 303, r.text);
  return c;
}

// --- login, cookies, fixation ----------------------------------------------------------------

test('GET /login sets an HttpOnly, SameSite=Lax session cookie and puts a CSRF token in the form', async () => {
  const c = new WebClient(gw.url);
  const page = await c.request('GET', '/login');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  const cookie = page.setCookies.find((s) => s.startsWith('sb.sid='));
  assert.ok(cookie, `no session cookie in ${JSON.stringify(page.setCookies)}`);
  assert.match(cookie, /;\s*HttpOnly/i);
  assert.match(cookie, /;\s*SameSite=Lax/i);
  assert.match(cookie, /;\s*Path=\//i);
  assert.ok(csrfOf(page.text).length >= 16);
  assert.match(page.text, /<form method="post" action="\/login">/);
  assert.match(page.text, /name="username"/);
  assert.match(page.text, /name="password" type="password"/);
  // A different visitor gets a different session and token.
  const other = new WebClient(gw.url);
  const otherToken = await other.csrf();
  assert.notEqual(other.sid, c.sid);
  assert.notEqual(otherToken, csrfOf(page.text));
});

test('POST /login with the CSRF token and good credentials: 303 and a NEW session id (no fixation)', async () => {
  // The attacker gets a session id and plants it in the victim's browser.
  const attacker = new WebClient(gw.url);
  await attacker.csrf();
  const planted = attacker.sid!;
  assert.ok(planted);
  const victim = new WebClient(gw.url);
  victim.cookies.set('sb.sid', planted);

  const r = await victim.login('alice', 'alice-pw');
  assert.equal(r.status, 303, r.text);
  assert.equal(r.headers.get('location'), '/');
  assert.ok(r.setCookies.some((s) => s.startsWith('sb.sid=')), 'a new cookie at login');
  assert.ok(victim.sid && victim.sid !== planted, 'the session id must change at login');
  const home = await victim.assertLoggedIn('alice');
  assert.match(home.text, /Signed in as <strong>alice<\/strong>/);

  // The planted id is worth nothing.
  await attacker.assertLoggedOut();
  assert.equal(attacker.sid, planted);
});

test('bad credentials: 401 page with the same message for an unknown user and a wrong password', async () => {
  const errors: string[] = [];
  for (const [user, pw] of [['alice', 'wrong-password'], ['nosuchuser', 'alice-pw'], ['alice', '']]) {
    const c = new WebClient(gw.url);
    const r = await c.login(user!, pw!);
    assert.equal(r.status, 401, `${user}: ${r.status}`);
    const m = /<p class="error" role="alert">([^<]*)<\/p>/.exec(r.text);
    assert.ok(m, 'an error message on the page');
    assert.match(m[1]!, new RegExp(BAD_LOGIN));
    errors.push(m[1]!);
    // the form is shown again with a fresh token and the name filled in
    assert.ok(csrfOf(r.text));
    assert.match(r.text, new RegExp(`name="username"[^>]*value="${user}"`));
    await c.assertLoggedOut();
  }
  assert.equal(new Set(errors).size, 1, `one message for every failure: ${JSON.stringify(errors)}`);
});

test('POST /login without, with a wrong, or with another session’s _csrf: 403 and no login', async () => {
  const c = new WebClient(gw.url);
  const token = await c.csrf();
  const other = new WebClient(gw.url);
  const otherToken = await other.csrf();
  const attempts: [string, Record<string, string>][] = [
    ['no token', { username: 'alice', password: 'alice-pw', next: '/' }],
    ['empty token', { _csrf: '', username: 'alice', password: 'alice-pw', next: '/' }],
    ['wrong token', { _csrf: `${token}x`, username: 'alice', password: 'alice-pw', next: '/' }],
    ["another session's token", { _csrf: otherToken, username: 'alice', password: 'alice-pw', next: '/' }],
  ];
  for (const [what, form] of attempts) {
    const r = await c.request('POST', '/login', form);
    assert.equal(r.status, 403, `${what}: ${r.status}`);
    assert.match(r.text, /did not come from this site/);
    await c.assertLoggedOut();
  }
  // A cross-site form post with no session at all.
  const forged = new WebClient(gw.url);
  const r = await forged.request('POST', '/login', { _csrf: token, username: 'alice', password: 'alice-pw', next: '/' });
  assert.equal(r.status, 403);
  await forged.assertLoggedOut();
  // The right token still works afterwards.
  assert.equal((await c.request('POST', '/login', { _csrf: token, username: 'alice', password: 'alice-pw', next: '/' })).status, 303);
  await c.assertLoggedIn('alice');
});

test('POST /logout needs the CSRF token; with it the session is gone (server side too)', async () => {
  const c = await loggedIn('dave');
  const home = await c.assertLoggedIn('dave');
  const token = csrfOf(home.text);

  for (const form of [{}, { _csrf: 'forged' }] as Record<string, string>[]) {
    const r = await c.request('POST', '/logout', form);
    assert.equal(r.status, 403, JSON.stringify(form));
    await c.assertLoggedIn('dave');
  }

  const sid = c.sid!;
  const out = await c.request('POST', '/logout', { _csrf: token });
  assert.equal(out.status, 303);
  assert.equal(out.headers.get('location'), '/login');
  assert.ok(out.setCookies.some((s) => s.startsWith('sb.sid=;')), 'the cookie is cleared');
  await c.assertLoggedOut();
  // Replaying the old cookie does not bring the session back.
  const replay = new WebClient(gw.url);
  replay.cookies.set('sb.sid', sid);
  await replay.assertLoggedOut();
});

test('a page request without a session redirects to /login?next=…, and the login form carries it', async () => {
  const c = new WebClient(gw.url);
  for (const path of ['/', '/admin', '/admin?user=bob&verb=send&address=queue%3Aops.x']) {
    const r = await c.request('GET', path);
    assert.equal(r.status, 303, path);
    assert.equal(r.headers.get('location'), `/login?next=${encodeURIComponent(path)}`);
    const form = await c.request('GET', r.headers.get('location')!);
    assert.equal(form.status, 200);
    assert.equal(hiddenNext(form.text), path.replaceAll('&', '&amp;'));
  }
  // An API path is JSON 401, not a redirect.
  const api = await fetch(`${gw.url}/api/tokens`, { redirect: 'manual' });
  assert.equal(api.status, 401);
});

test('`next` is followed only to same-site paths (no open redirect)', async () => {
  const ok = new WebClient(gw.url);
  const toAdmin = await ok.login('carol', 'carol-pw', '/admin?user=bob');
  assert.equal(toAdmin.status, 303);
  assert.equal(toAdmin.headers.get('location'), '/admin?user=bob');

  for (const next of ['//evil.example', '//evil.example/x', 'https://evil.example/', '/\\evil.example', 'evil.example', 'javascript:alert(1)', '']) {
    const c = new WebClient(gw.url);
    const r = await c.login('bob', 'bob-pw', next);
    assert.equal(r.status, 303, JSON.stringify(next));
    assert.equal(r.headers.get('location'), '/', `next=${JSON.stringify(next)}`);
    // The form does not carry it either; nor does /login when already logged in.
    const form = await new WebClient(gw.url).request('GET', `/login?next=${encodeURIComponent(next)}`);
    assert.equal(hiddenNext(form.text), '/', `form next for ${JSON.stringify(next)}`);
    const again = await c.request('GET', `/login?next=${encodeURIComponent(next)}`);
    assert.equal(again.status, 303);
    assert.equal(again.headers.get('location'), '/');
  }
});

// --- admin -----------------------------------------------------------------------------------

test('/admin for an admin lists the mapping and explains a test user', async () => {
  const carol = await loggedIn('carol');
  const home = await carol.assertLoggedIn('carol');
  assert.match(home.text, /href="\/admin"/, 'admins see the Admin link');

  const page = await carol.request('GET', '/admin');
  assert.equal(page.status, 200);
  assert.match(page.text, /Permission mapping/);
  for (const s of [`Group cn=ops,ou=groups,${LDAP.base}`, `Group cn=payment-approvers,ou=groups,${LDAP.base}`, 'Group clerks', 'Group admins', 'queue:ops.**', 'queue:payments.**', 'queue:in.*', 'config-1-1', 'config-3-2', 'config-4-1', 'send, consume, browse']) {
    assert.ok(page.text.includes(s), `the mapping shows ${s}`);
  }

  const yes = await carol.request('GET', `/admin?${new URLSearchParams({ user: 'alice', verb: 'send', address: 'queue:in.orders' })}`);
  assert.equal(yes.status, 200);
  assert.match(yes.text, /<strong>Allowed:<\/strong> rule config-3-1 \(config\) allows group clerks to send on queue:in\.\*/);
  assert.match(yes.text, /Groups of alice: (ops, clerks|clerks, ops)/);

  const no = await carol.request('GET', `/admin?${new URLSearchParams({ user: 'erin', verb: 'browse', address: 'queue:ops.x' })}`);
  assert.match(no.text, /<strong>Denied:<\/strong> no rule allows user:erin to browse on queue:ops\.x \(default deny\)/);
  assert.match(no.text, /Groups of erin: none/);

  const unknown = await carol.request('GET', `/admin?${new URLSearchParams({ user: 'nosuchuser', verb: 'send', address: 'queue:ops.x' })}`);
  assert.match(unknown.text, /no user &#39;nosuchuser&#39; in the directory|no user 'nosuchuser' in the directory/);
  const badVerb = await carol.request('GET', `/admin?${new URLSearchParams({ user: 'alice', verb: 'fly', address: 'queue:ops.x' })}`);
  assert.match(badVerb.text, /unknown verb/);
});

test('/admin for a non-admin is a 403 page', async () => {
  const alice = await loggedIn('alice');
  const home = await alice.assertLoggedIn('alice');
  assert.doesNotMatch(home.text, /href="\/admin"/);
  const r = await alice.request('GET', '/admin');
  assert.equal(r.status, 403);
  assert.match(r.headers.get('content-type') ?? '', /text\/html/);
  assert.match(r.text, /Not allowed/);
  assert.doesNotMatch(r.text, /Permission mapping/);
  const explain = await alice.request('GET', `/admin?${new URLSearchParams({ user: 'bob', verb: 'send', address: 'queue:ops.x' })}`);
  assert.equal(explain.status, 403);
  assert.doesNotMatch(explain.text, /Allowed:|Denied:/);
});

test('user-supplied text is escaped: explain for <script>…, login names, next', async () => {
  const carol = await loggedIn('carol');
  const payload = '<script>x</script>';
  const page = await carol.request('GET', `/admin?${new URLSearchParams({ user: payload, verb: 'send', address: 'queue:ops.x' })}`);
  assert.equal(page.status, 200);
  assert.ok(!page.text.includes(payload), 'the raw script tag is in the page');
  assert.ok(page.text.includes('&lt;script&gt;x&lt;/script&gt;'), 'the text is shown, escaped');

  const attr = '"><img src=x onerror=alert(1)>';
  const login = await new WebClient(gw.url).login(attr, 'x');
  assert.equal(login.status, 401);
  assert.ok(!login.text.includes('<img'), 'an attribute break-out in the user name');
  assert.ok(login.text.includes('&quot;&gt;&lt;img'));
  const login2 = await new WebClient(gw.url).login(payload, 'x');
  assert.ok(!login2.text.includes(payload));

  const nextPage = await new WebClient(gw.url).request('GET', `/login?next=${encodeURIComponent('/"><script>y</script>')}`);
  assert.ok(!nextPage.text.includes('<script>y</script>'));
  assert.equal(hiddenNext(nextPage.text), '/&quot;&gt;&lt;script&gt;y&lt;/script&gt;');
});
