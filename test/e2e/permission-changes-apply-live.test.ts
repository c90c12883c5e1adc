/**
 * Live permissions (issue 9, DESIGN §5 "live rules", §6): admins map LDAP groups to permissions in
 * the console, the API (and the CLI, see test/integration/permissions-cli.test.ts), and every door of every gateway
 * process follows within a second, without a restart.
 *
 * Real servers only: a private slapd (alice: ops, clerks; bob and dave: payment-approvers, dave
 * also clerks; carol: admins; erin: no group), a private redis-server, TWO gateway processes on that
 * Redis with the same prefix — A in this process (startTestGateway), B its own process
 * (`switchboard start`, spawnGateway) — both with the LDAP directory and the embedded AMQP endpoint,
 * and a real headless Chromium for the console and the inbox. AMQP clients are rhea.
 *
 * Timing: nothing is asserted tighter than a generous deadline (DEADLINE_MS for "within a second");
 * the measured delays are printed as test diagnostics and in a summary at the end.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, test, type TestContext } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, spawnGateway, startTestGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PREFIX = `plive${process.pid}`;
/** "Within a second", with room for a loaded 2-core machine. Measured delays are reported. */
const DEADLINE_MS = 5000;
const dn = (cn: string) => `cn=${cn},ou=groups,${LDAP.base}`;

// The config file's rules: the read-only baseline (ids config-<entry>-<allow>).
const PERMISSIONS = [
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] }, // config-1-1: carol administers everything
  { user: 'dave', allow: [{ address: 'queue:payments.**', verbs: ['admin'] }] }, // config-2-1: delegated admin
  { group: dn('ops'), allow: [{ address: 'group:**', verbs: ['send'] }, { address: 'queue:ops.**', verbs: ['send', 'consume', 'browse'] }] }, // config-3-1, config-3-2
  { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }] }, // config-4-1
];
const CONFIG_RULES = 5;

let redis: TestRedis | undefined;
let ldap: TestLdap | undefined;
let a: Gateway | undefined;
let b: GatewayProcess | undefined;
let bAmqpPort = 0;
let browser: Browser | undefined;
const contexts: BrowserContext[] = [];
const amqpConnections: Connection[] = [];
const measured: Record<string, number | string> = {};

const config = () => ({ directory: ldapDirectoryConfig(ldap!.url), permissions: PERMISSIONS });

async function startB(): Promise<GatewayProcess> {
  bAmqpPort = await freePort();
  return spawnGateway(redis!.url, { ...config(), amqp: { port: bAmqpPort } }, PREFIX);
}

before(async () => {
  redis = await startTestRedis();
  ldap = await startTestLdap();
  a = await startTestGateway(redis.url, { ...config(), redis: { url: redis.url, prefix: PREFIX }, amqp: { port: 0 } });
  b = await startB();
  browser = await launchChromium();
});

after(async () => {
  for (const c of amqpConnections) await closeAmqp(c);
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close().catch(() => {});
  await b?.kill('SIGTERM').catch(() => {});
  await a?.stop();
  await ldap?.dispose();
  await redis?.dispose();
  if (Object.keys(measured).length) console.log(`# measured (ms): ${JSON.stringify(measured)}`);
});

// ───────────────────────────── helpers ─────────────────────────────

const A = () => a!.url;
const B = () => b!.url;
const as = (name: string) => ({ name, password: `${name}-pw` });

function record(t: TestContext, key: string, ms: number): void {
  measured[key] = Math.round(ms);
  t.diagnostic(`${key}: ${Math.round(ms)} ms`);
}

async function send(base: string, user: string, to: string, body: unknown = { n: 1 }): Promise<number> {
  return (await api(base, 'POST', '/api/messages', { user: as(user), body: { to, body } })).status;
}

/** Polls until `user`'s send to `to` answers `want`; returns the ms since `since`. */
async function sendBecomes(base: string, user: string, to: string, want: number, since: number, deadlineMs = DEADLINE_MS): Promise<number> {
  let last = 0;
  for (;;) {
    last = await send(base, user, to);
    if (last === want) return performance.now() - since;
    if (performance.now() - since > deadlineMs) throw new Error(`${user} → ${to} on ${base}: still ${last}, not ${want}, ${deadlineMs} ms after the change`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface RuleSet {
  version: number;
  rules: { id: string; group?: string; user?: string; peer?: string; address: string; verbs: string[]; source: string; createdBy?: string; createdAt?: string }[];
}
async function ruleSet(base: string): Promise<RuleSet> {
  const r = await api<RuleSet>(base, 'GET', '/api/permissions', { user: as('carol') });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Waits until both processes report the same rule set version (and returns it). */
async function converged(): Promise<RuleSet> {
  let last: [RuleSet, RuleSet] | undefined;
  await waitFor(async () => {
    last = [await ruleSet(A()), await ruleSet(B())];
    return last[0].version === last[1].version;
  }, DEADLINE_MS, 'both processes on the same rule set version');
  assert.deepEqual(last![0].rules, last![1].rules, 'both processes hold the same rules');
  return last![0];
}

async function addRule(base: string, user: string, rule: Record<string, unknown>): Promise<RuleSet['rules'][number]> {
  const r = await api(base, 'POST', '/api/permissions', { user: as(user), body: rule });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.rule;
}

async function removeRule(base: string, user: string, id: string): Promise<void> {
  const r = await api(base, 'DELETE', `/api/permissions/${enc(id)}`, { user: as(user) });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function newPage(): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser!.newContext();
  contexts.push(ctx);
  const page = await ctx.newPage();
  page.setDefaultTimeout(30_000);
  return { ctx, page };
}

/** Logs in through the form in a fresh browser context. */
async function login(base: string, user: string): Promise<{ ctx: BrowserContext; page: Page }> {
  const { ctx, page } = await newPage();
  await page.goto(`${base}/login`);
  await page.locator('#username').fill(user);
  await page.locator('#password').fill(`${user}-pw`);
  await Promise.all([page.waitForURL((u) => u.pathname !== '/login'), page.locator('#password').press('Enter')]);
  return { ctx, page };
}

async function amqpConnect(port: number, user: string): Promise<Connection> {
  const container = rhea.create_container({ id: `perm-live-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port, username: user, password: `${user}-pw`, reconnect: false } as ConnectionOptions);
  amqpConnections.push(c);
  for (const ev of ['error', 'session_error', 'sender_error', 'receiver_error', 'connection_error']) c.on(ev, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('disconnected', (ctx: EventContext) => reject(new Error(`disconnected: ${(ctx as { error?: Error }).error?.message ?? 'no reason'}`)));
  });
  return c;
}

function closeAmqp(c: Connection): Promise<void> {
  if (!c.is_open()) return Promise.resolve();
  return new Promise((r) => {
    const t = setTimeout(r, 3000);
    c.once('connection_close', () => { clearTimeout(t); r(); });
    c.once('disconnected', () => { clearTimeout(t); r(); });
    c.close();
  });
}

interface OpenReceiver {
  receiver: Receiver;
  received: Set<string>;
  /** Resolves with the error condition the gateway detached the link with, and when. */
  detached: Promise<{ condition?: string; description?: string; at: number }>;
}

/** Attaches a receiver on `address`; resolves once the gateway admitted it (its attach came back with a source). */
async function openReceiver(c: Connection, address: string): Promise<OpenReceiver> {
  const receiver = c.open_receiver({ source: { address }, autoaccept: false, credit_window: 10 });
  const received = new Set<string>();
  receiver.on('message', (ctx: EventContext) => {
    received.add(String(ctx.message?.message_id));
    (ctx.delivery as Delivery).accept();
  });
  const detached = new Promise<{ condition?: string; description?: string; at: number }>((resolve) => {
    const done = (ctx: EventContext) => {
      const e = (ctx.receiver as unknown as { error?: { condition?: string; description?: string } }).error;
      resolve({ condition: e?.condition, description: e?.description, at: performance.now() });
    };
    receiver.once('receiver_error', done);
    receiver.once('receiver_close', done);
  });
  await Promise.race([
    new Promise<void>((resolve) => receiver.once('receiver_open', () => resolve())),
    detached.then((d) => { throw new Error(`the receiver on ${address} was refused: ${d.condition} ${d.description}`); }),
  ]);
  return { receiver, received, detached };
}

// ───────────────────────────── tests ─────────────────────────────

test('both processes start from the config rules alone, on one rule set version', async () => {
  const s = await converged();
  assert.equal(s.version, 0);
  assert.equal(s.rules.length, CONFIG_RULES);
  assert.ok(s.rules.every((r) => r.source === 'config'));
});

test('carol adds a rule in the console (B): bob\'s 403 becomes 202 on both processes; removing it on the confirm page makes it 403 again on both and detaches his AMQP receivers', { timeout: 180_000 }, async (t) => {
  const ADDR = 'queue:live.approvals';
  for (const base of [A(), B()]) assert.equal(await send(base, 'bob', ADDR), 403, `bob may not send to ${ADDR} on ${base} yet`);
  const before = await converged();

  const { page } = await login(B(), 'carol');
  await page.goto(`${B()}/admin/permissions`);
  assert.equal((await page.locator('h1').textContent())?.trim(), 'Permissions');

  // The group picker fills its datalist from the directory as you type.
  await page.locator('#r-who').click();
  await page.keyboard.type('pay');
  await page.waitForFunction(() => [...document.querySelectorAll('#group-suggestions option')].some((o) => (o as HTMLOptionElement).value === 'payment-approvers'));
  assert.deepEqual(await page.$$eval('#group-suggestions option', (os) => os.map((o) => (o as HTMLOptionElement).value)), ['payment-approvers']);
  await page.keyboard.press('End');
  await page.keyboard.type('ment-approvers');
  assert.equal(await page.locator('#r-who').inputValue(), 'payment-approvers');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('a');
  await page.waitForFunction(() => {
    const vs = [...document.querySelectorAll('#group-suggestions option')].map((o) => (o as HTMLOptionElement).value);
    return vs.includes('admins') && vs.includes('auditors') && !vs.includes('payment-approvers');
  });
  await page.locator('#r-who').fill('payment-approvers');

  // The pattern is checked as you type: invalid, then valid with the known addresses it matches.
  const check = page.locator('#address-check');
  await page.locator('#r-address').click();
  await page.keyboard.type('queue:live-*');
  await page.waitForFunction(() => document.querySelector('#r-address')?.getAttribute('aria-invalid') === 'true');
  assert.match((await check.textContent()) ?? '', /wildcards must be a whole segment/);
  assert.equal(await check.getAttribute('class'), 'error');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('group:*');
  await page.waitForFunction(() => /^Valid\. Matches known addresses: /.test(document.querySelector('#address-check')?.textContent ?? ''));
  assert.match((await check.textContent()) ?? '', /group:payment-approvers/);
  assert.equal(await page.locator('#r-address').getAttribute('aria-invalid'), 'false');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(ADDR);
  await page.waitForFunction(() => /^Valid\. It matches no address known right now\.$/.test(document.querySelector('#address-check')?.textContent ?? ''));

  await page.locator('input[name="verbs"][value="send"]').check();
  await page.locator('input[name="verbs"][value="consume"]').check();
  // Effective on both processes without a restart: each is polled from the moment of the click.
  const t0 = performance.now();
  const polls = Promise.all([sendBecomes(A(), 'bob', ADDR, 202, t0), sendBecomes(B(), 'bob', ADDR, 202, t0)]);
  await Promise.all([page.waitForURL(/\/admin\/permissions\?done=/), page.getByRole('button', { name: 'Add rule' }).click()]);
  const done = (await page.locator('[role="status"]').textContent()) ?? '';
  const id = /Done: added (r[0-9a-f]+)\./.exec(done)?.[1];
  assert.ok(id, `the console says what it added: ${done}`);
  const [onA, onB] = await polls;
  record(t, 'console add → 202 on A (other process)', onA);
  record(t, 'console add → 202 on B (console process)', onB);
  const after = await converged();
  assert.equal(after.version, before.version + 1);
  const rule = after.rules.find((r) => r.id === id);
  assert.deepEqual({ ...rule, createdAt: undefined }, { id, group: 'payment-approvers', address: ADDR, verbs: ['send', 'consume'], source: 'console', createdBy: 'user:carol', createdAt: undefined });
  // The console lists it under its group, with its source and author, and a remove link.
  await page.reload();
  const row = page.locator('tr', { has: page.locator(`td:text-is("${id}")`) });
  assert.match((await row.textContent()) ?? '', /queue:live\.approvals.*send, consume.*console by user:carol/s);
  assert.equal(await page.locator('h3', { hasText: 'Group payment-approvers' }).count(), 1);

  // bob consumes over AMQP on both processes, with the consume right from that rule.
  const receivers: OpenReceiver[] = [];
  for (const port of [a!.amqpPort!, bAmqpPort]) receivers.push(await openReceiver(await amqpConnect(port, 'bob'), ADDR));
  const probe = `probe-${Date.now()}`;
  assert.equal((await api(A(), 'POST', '/api/messages', { user: as('bob'), body: { to: ADDR, id: probe, body: { probe: true } } })).status, 202);
  await waitFor(async () => receivers.some((r) => r.received.has(probe)), 15_000, 'the probe to reach one of bob\'s receivers');

  // Remove it through the console's confirmation page.
  await row.getByRole('link', { name: 'Remove…' }).click();
  await page.waitForURL(`${B()}/admin/permissions/${id}/remove`);
  assert.equal((await page.locator('h1').textContent())?.trim(), `Remove rule ${id}?`);
  assert.match((await page.locator('main, body').first().textContent()) ?? '', /Group payment-approvers may send, consume on\s+queue:live\.approvals/);
  const t1 = performance.now();
  const offPolls = Promise.all([sendBecomes(A(), 'bob', ADDR, 403, t1), sendBecomes(B(), 'bob', ADDR, 403, t1)]);
  await Promise.all([page.waitForURL(/\/admin\/permissions\?done=/), page.getByRole('button', { name: 'Remove the rule' }).click()]);
  assert.match((await page.locator('[role="status"]').textContent()) ?? '', new RegExp(`Done: removed ${id}\\.`));
  const [offA, offB] = await offPolls;
  record(t, 'console remove → 403 on A (other process)', offA);
  record(t, 'console remove → 403 on B (console process)', offB);

  // The open receiver links are detached with amqp:unauthorized-access, on both processes.
  const deadline = new Promise<never>((_, rej) => setTimeout(() => rej(new Error('a receiver was not detached in time')), DEADLINE_MS).unref());
  const detached = await Promise.race([Promise.all(receivers.map((r) => r.detached)), deadline]);
  for (const d of detached) {
    assert.equal(d.condition, 'amqp:unauthorized-access');
    assert.equal(d.description, `user:bob may no longer consume on ${ADDR}`);
  }
  record(t, 'console remove → AMQP receiver detached on A', detached[0]!.at - t1);
  record(t, 'console remove → AMQP receiver detached on B', detached[1]!.at - t1);
  assert.equal((await converged()).version, before.version + 2);
});

test('the console refuses an unknown group (with the reason, nothing changed) until "force" is ticked; a form without the CSRF token is refused', { timeout: 120_000 }, async () => {
  const before = await converged();
  const { ctx, page } = await login(A(), 'carol');
  await page.goto(`${A()}/admin/permissions`);
  await page.locator('#r-who').fill('night-shift');
  await page.locator('#r-address').fill('queue:night.**');
  await page.locator('input[name="verbs"][value="browse"]').check();
  const [res] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/admin/permissions/add')), page.getByRole('button', { name: 'Add rule' }).click()]);
  assert.equal(res.status(), 400);
  assert.match((await page.locator('[role="alert"]').textContent()) ?? '', /the directory has no group 'night-shift' \(add with force: true if it was just created\)/);
  // The form keeps what was typed.
  assert.equal(await page.locator('#r-who').inputValue(), 'night-shift');
  assert.equal(await page.locator('#r-address').inputValue(), 'queue:night.**');
  assert.equal(await page.locator('input[name="verbs"][value="browse"]').isChecked(), true);
  assert.deepEqual(await ruleSet(A()), before);

  await page.getByLabel('Add even if the directory does not know this name yet').check();
  await Promise.all([page.waitForURL(/done=added/), page.getByRole('button', { name: 'Add rule' }).click()]);
  const added = (await converged()).rules.filter((r) => !before.rules.some((x) => x.id === r.id));
  assert.deepEqual(added.map((r) => [r.group, r.address, r.verbs]), [['night-shift', 'queue:night.**', ['browse']]]);

  // The session is carol's, but a form post without the token is refused and changes nothing.
  const now = await ruleSet(A());
  const forged = await ctx.request.post(`${A()}/admin/permissions/add`, { form: { kind: 'group', who: 'clerks', address: 'queue:forged.*', verbs: 'send' }, maxRedirects: 0 });
  assert.equal(forged.status(), 403);
  const forgedRemove = await ctx.request.post(`${A()}/admin/permissions/${added[0]!.id}/remove`, { form: {}, maxRedirects: 0 });
  assert.equal(forgedRemove.status(), 403);
  assert.deepEqual(await ruleSet(A()), now);
  await removeRule(A(), 'carol', added[0]!.id);
});

test('the API refuses bad patterns, unknown verbs, two selectors and unknown names with 400 and duplicates with 409; the rule set is unchanged after each', { timeout: 120_000 }, async () => {
  const before = await converged();
  const history = (await api(A(), 'GET', '/api/permissions/history', { user: as('carol') })).body.changes.length;
  const ok = { group: 'payment-approvers', address: 'queue:refusals.*', verbs: ['send'] };
  const cases: [Record<string, unknown>, number, RegExp][] = [
    [{ ...ok, address: 'queue:orders-*' }, 400, /invalid address 'queue:orders-\*': segment 'orders-\*': wildcards must be a whole segment/],
    [{ ...ok, address: 'nats:orders' }, 400, /unknown scheme 'nats'/],
    [{ ...ok, address: 'queue:**.eu' }, 400, /'\*\*' may only be the last segment/],
    [{ ...ok, address: 'queue:a..b' }, 400, /empty segment/],
    [{ ...ok, address: '' }, 400, /expected a pattern like/],
    [{ ...ok, address: 42 }, 400, /'address' must be an address pattern/],
    [{ ...ok, verbs: ['send', 'fly'] }, 400, /unknown verb "fly" \(expected send, consume, browse, start, admin\)/],
    [{ ...ok, verbs: [] }, 400, /'verbs' must be a non-empty list/],
    [{ ...ok, verbs: 'send' }, 400, /'verbs' must be a non-empty list/],
    [{ ...ok, user: 'bob' }, 400, /a rule names exactly one of group, user or peer/],
    [{ address: ok.address, verbs: ok.verbs }, 400, /a rule names exactly one of group, user or peer/],
    [{ ...ok, group: 'night-owls' }, 400, /the directory has no group 'night-owls' \(add with force: true if it was just created\)/],
    [{ user: 'zed', address: ok.address, verbs: ok.verbs }, 400, /the directory has no user 'zed'/],
    [{ peer: 'bank-z', address: ok.address, verbs: ok.verbs }, 400, /no peer 'bank-z' in the network map/],
    [{ group: dn('ops'), address: 'group:**', verbs: ['send'] }, 409, /the same rule exists already \(config-3-1, from config\)/],
  ];
  for (const [body, status, message] of cases) {
    for (const base of [A(), B()]) {
      const r = await api(base, 'POST', '/api/permissions', { user: as('carol'), body });
      assert.equal(r.status, status, `${JSON.stringify(body)} on ${base}: ${JSON.stringify(r.body)}`);
      if (status === 409) assert.equal(r.body.error.code, 'conflict');
      assert.match(r.body.error.message, message);
      assert.deepEqual(await ruleSet(base), before, `nothing changed after ${JSON.stringify(body)}`);
    }
  }
  // A malformed JSON body is a 400 too.
  const raw = await api(A(), 'POST', '/api/permissions', { user: as('carol'), rawBody: '{"group": ' });
  assert.equal(raw.status, 400);

  // With force, a group the directory does not know (yet) is accepted; the same again is a 409.
  const forced = await api(B(), 'POST', '/api/permissions', { user: as('carol'), body: { ...ok, group: 'night-owls', force: true } });
  assert.equal(forced.status, 201, JSON.stringify(forced.body));
  const user = await api(B(), 'POST', '/api/permissions', { user: as('carol'), body: { user: 'zed', address: ok.address, verbs: ok.verbs, force: true } });
  assert.equal(user.status, 201, JSON.stringify(user.body));
  const mid = await converged();
  assert.equal(mid.version, before.version + 2);
  for (const base of [A(), B()]) {
    const again = await api(base, 'POST', '/api/permissions', { user: as('carol'), body: { ...ok, group: 'night-owls', verbs: ['send', 'send'], force: true } });
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.match(again.body.error.message, new RegExp(`the same rule exists already \\(${forced.body.rule.id}, from console\\)`));
    assert.deepEqual(await ruleSet(base), mid);
  }
  assert.equal((await api(A(), 'GET', '/api/permissions/history', { user: as('carol') })).body.changes.length, history + 2, 'refusals are not recorded as changes');
  await removeRule(A(), 'carol', forced.body.rule.id);
  await removeRule(A(), 'carol', user.body.rule.id);
});

test('deleting a config rule → 409 saying it lives in the config file; an unknown id → 404; nothing changes', async () => {
  const before = await converged();
  for (const base of [A(), B()]) {
    const r = await api(base, 'DELETE', '/api/permissions/config-1-1', { user: as('carol') });
    assert.equal(r.status, 409);
    assert.equal(r.body.error.message, "rule 'config-1-1' lives in the configuration file; change it there");
    const missing = await api(base, 'DELETE', '/api/permissions/r0000deadbeef', { user: as('carol') });
    assert.equal(missing.status, 404);
  }
  // The console offers no remove link for config rules, and its confirm page refuses the same way.
  const { page } = await login(B(), 'carol');
  await page.goto(`${B()}/admin/permissions`);
  const configRow = page.locator('tr', { has: page.locator('td:text-is("config-1-1")') });
  assert.match((await configRow.textContent()) ?? '', /config/);
  assert.equal(await configRow.getByRole('link', { name: 'Remove…' }).count(), 0);
  await page.goto(`${B()}/admin/permissions/config-1-1/remove`);
  const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.getByRole('button', { name: 'Remove the rule' }).click()]);
  assert.equal(res.status(), 409);
  assert.match((await page.locator('[role="alert"]').textContent()) ?? '', /lives in the configuration file/);
  assert.deepEqual(await converged(), before);
});

test('a delegated admin (dave: admin on queue:payments.**) adds rules inside that pattern and gets 403 outside it, on ** and for others\' rules', { timeout: 120_000 }, async (t) => {
  const before = await converged();
  assert.equal(await send(A(), 'alice', 'queue:payments.eu'), 403);
  const t0 = performance.now();
  const inside = await addRule(B(), 'dave', { group: 'clerks', address: 'queue:payments.eu', verbs: ['send'] });
  assert.equal(inside.createdBy, 'user:dave');
  record(t, 'delegated add on B → 202 on A', await sendBecomes(A(), 'alice', 'queue:payments.eu', 202, t0));
  // admin may be handed on inside the pattern, too.
  const sub = await addRule(A(), 'dave', { user: 'bob', address: 'queue:payments.eu.**', verbs: ['admin', 'browse'] });

  for (const address of ['queue:orders.**', 'queue:**', '**', 'queue:payments/**', 'queue:*.eu', 'group:payment-approvers', 'mq:legacy/payments.**']) {
    for (const base of [A(), B()]) {
      const r = await api(base, 'POST', '/api/permissions', { user: as('dave'), body: { group: 'clerks', address, verbs: ['send'] } });
      assert.equal(r.status, 403, `${address}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /user:dave may not admin on .*\(you may manage rules inside queue:payments\.\*\*\)/);
    }
  }
  // A rule carol made outside dave's scope: dave can neither remove it nor revert past it.
  const carols = await addRule(A(), 'carol', { group: 'clerks', address: 'queue:audit.*', verbs: ['browse'] });
  await converged();
  const del = await api(B(), 'DELETE', `/api/permissions/${carols.id}`, { user: as('dave') });
  assert.equal(del.status, 403);
  const mid = await converged();
  const revert = await api(A(), 'POST', '/api/permissions/revert', { user: as('dave'), body: { version: before.version } });
  assert.equal(revert.status, 403, JSON.stringify(revert.body));
  assert.deepEqual(await converged(), mid);
  // dave's console: allowed in, told his scope, a remove link only on rules he may manage.
  const { page } = await login(A(), 'dave');
  const res = await page.goto(`${A()}/admin/permissions`);
  assert.equal(res?.status(), 200);
  assert.match((await page.locator('main, body').first().textContent()) ?? '', /You may manage rules inside: queue:payments\.\*\*\./);
  const rowOf = (id: string) => page.locator('tr', { has: page.locator(`td:text-is("${id}")`) });
  assert.equal(await rowOf(inside.id).getByRole('link', { name: 'Remove…' }).count(), 1);
  assert.equal(await rowOf(carols.id).getByRole('link', { name: 'Remove…' }).count(), 0);
  // Within scope, dave removes his own rule and it is gone everywhere.
  await removeRule(A(), 'dave', inside.id);
  await sendBecomes(B(), 'alice', 'queue:payments.eu', 403, performance.now());
  await removeRule(A(), 'dave', sub.id);
  await removeRule(B(), 'carol', carols.id);
  assert.equal((await converged()).rules.length, before.rules.length);
});

test('non-admins get 403 from the permission API and the console', { timeout: 120_000 }, async () => {
  const before = await converged();
  const consoleRules = before.rules.filter((r) => r.source === 'console');
  const victim = await addRule(A(), 'carol', { group: 'payment-approvers', address: 'queue:victim.*', verbs: ['browse'] });
  for (const user of ['bob', 'erin']) {
    for (const base of [A(), B()]) {
      const calls: [string, string, unknown?][] = [
        ['GET', '/api/permissions'],
        ['GET', '/api/permissions/history'],
        ['POST', '/api/permissions', { group: 'payment-approvers', address: 'queue:**', verbs: ['send', 'consume'] }],
        ['POST', '/api/permissions', { user, address: '**', verbs: ['admin'] }],
        ['DELETE', `/api/permissions/${victim.id}`],
        ['GET', `/api/who-can?address=${enc('queue:victim.x')}&verb=browse`],
        ['GET', `/api/can?user=bob&verb=send&address=${enc('queue:victim.x')}`],
      ];
      for (const [method, path, body] of calls) {
        const r = await api(base, method, path, { user: as(user), ...(body ? { body } : {}) });
        assert.equal(r.status, 403, `${user} ${method} ${path} on ${base}: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error.code, 'forbidden');
      }
    }
  }
  const { ctx, page } = await login(B(), 'erin');
  const res = await page.goto(`${B()}/admin/permissions`);
  assert.equal(res?.status(), 403);
  assert.match((await page.locator('main, body').first().textContent()) ?? '', /Managing permissions needs an admin permission/);
  assert.equal(await page.locator('form#add-rule').count(), 0);
  for (const path of ['/admin/permissions/groups?q=pay', '/admin/permissions/check?address=queue:*', `/admin/permissions/${victim.id}/remove`]) {
    const r = await ctx.request.get(`${B()}${path}`, { maxRedirects: 0 });
    assert.equal(r.status(), 403, path);
    assert.doesNotMatch(await r.text(), /payment-approvers|queue:victim/);
  }
  const after = await converged();
  assert.deepEqual(after.rules.filter((r) => r.source === 'console').map((r) => r.id), [...consoleRules.map((r) => r.id), victim.id]);
  await removeRule(B(), 'carol', victim.id);
  assert.equal((await converged()).rules.length, before.rules.length);
});

test('history shows each change with version, author and action; revert (API and console) restores the earlier set and access follows on both processes', { timeout: 180_000 }, async (t) => {
  const X = 'queue:hist.x';
  const P = 'queue:payments.hist';
  const r0 = await addRule(A(), 'carol', { group: 'payment-approvers', address: 'queue:hist.marker', verbs: ['browse'] });
  const v0 = (await converged()).version;
  const r1 = await addRule(B(), 'carol', { group: 'payment-approvers', address: X, verbs: ['send'] });
  const r2 = await addRule(A(), 'dave', { group: 'clerks', address: P, verbs: ['send'] });
  await removeRule(B(), 'carol', r1.id);
  assert.equal((await converged()).version, v0 + 3);

  for (const base of [A(), B()]) {
    const { changes } = (await api(base, 'GET', '/api/permissions/history', { user: as('carol') })).body;
    assert.deepEqual(changes.slice(0, 4).map((c: any) => [c.version, c.by, c.action, c.op, c.rule.id]), [
      [v0 + 3, 'user:carol', 'remove', 'remove', r1.id],
      [v0 + 2, 'user:dave', 'add', 'add', r2.id],
      [v0 + 1, 'user:carol', 'add', 'add', r1.id],
      [v0, 'user:carol', 'add', 'add', r0.id],
    ]);
    for (const c of changes.slice(0, 4)) {
      assert.ok(Date.now() - Date.parse(c.at) < 600_000, `a recent time: ${c.at}`);
      assert.match(c.from, /127\.0\.0\.1/);
    }
    assert.deepEqual(changes[1].rule, r2, 'the change records the whole rule');
  }
  assert.equal(await send(A(), 'bob', X), 403);
  assert.equal(await send(A(), 'alice', P), 202);

  // Revert through the API to right after r1 was added: r1 back (same id), r2 gone.
  const t0 = performance.now();
  const rv = await api(A(), 'POST', '/api/permissions/revert', { user: as('carol'), body: { version: v0 + 1 } });
  assert.equal(rv.status, 200, JSON.stringify(rv.body));
  assert.deepEqual(rv.body.added.map((r: any) => r.id), [r1.id]);
  assert.deepEqual(rv.body.removed.map((r: any) => r.id), [r2.id]);
  const [bobA, bobB] = await Promise.all([sendBecomes(A(), 'bob', X, 202, t0), sendBecomes(B(), 'bob', X, 202, t0)]);
  await Promise.all([sendBecomes(A(), 'alice', P, 403, t0), sendBecomes(B(), 'alice', P, 403, t0)]);
  record(t, 'API revert on A → effect on A', bobA);
  record(t, 'API revert on A → effect on B', bobB);
  const afterRevert = await converged();
  assert.equal(afterRevert.version, v0 + 5);
  assert.deepEqual(afterRevert.rules.filter((r) => [r0.id, r1.id, r2.id].includes(r.id)).map((r) => r.id), [r0.id, r1.id]);
  const { changes } = (await api(B(), 'GET', '/api/permissions/history', { user: as('carol') })).body;
  assert.deepEqual(changes.slice(0, 2).map((c: any) => [c.version, c.by, c.action, c.op, c.rule.id]), [[v0 + 5, 'user:carol', 'revert', 'add', r1.id], [v0 + 4, 'user:carol', 'revert', 'remove', r2.id]]);
  const bad = await api(A(), 'POST', '/api/permissions/revert', { user: as('carol'), body: { version: 10_000 } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /there is no version 10000 yet/);
  assert.equal((await api(A(), 'POST', '/api/permissions/revert', { user: as('carol'), body: { version: 'v1' } })).status, 400);

  // Revert in the console to v0 (only r0): the confirm dialog first — dismissed, nothing happens.
  const { page } = await login(B(), 'carol');
  await page.goto(`${B()}/admin/permissions`);
  const historyRow = page.locator('tr', { has: page.locator(`form.revert[data-version="${v0}"]`) });
  assert.match((await historyRow.textContent()) ?? '', new RegExp(`${v0}.*user:carol.*add: added ${r0.id}`, 's'));
  page.once('dialog', (d) => void d.dismiss());
  await historyRow.getByRole('button', { name: 'Revert to this version' }).click();
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await converged()).version, v0 + 5, 'a dismissed confirmation reverts nothing');
  let message = '';
  page.once('dialog', (d) => { message = d.message(); void d.accept(); });
  const t1 = performance.now();
  const offPolls = Promise.all([sendBecomes(A(), 'bob', X, 403, t1), sendBecomes(B(), 'bob', X, 403, t1)]);
  await Promise.all([page.waitForURL(/done=/), historyRow.getByRole('button', { name: 'Revert to this version' }).click()]);
  assert.match(message, new RegExp(`Revert the console rules to version ${v0}\\?`));
  assert.match((await page.locator('[role="status"]').textContent()) ?? '', new RegExp(`reverted to version ${v0}: 0 added, 1 removed`));
  const [offA, offB] = await offPolls;
  record(t, 'console revert on B → effect on A', offA);
  record(t, 'console revert on B → effect on B', offB);
  const end = await converged();
  assert.deepEqual(end.rules.filter((r) => [r0.id, r1.id, r2.id].includes(r.id)).map((r) => r.id), [r0.id]);
  await removeRule(A(), 'carol', r0.id);
});

test('who-can lists the granting rules with the members of each group from LDAP (API and console); /api/can still explains one user', { timeout: 120_000 }, async () => {
  const W = 'queue:whocan.x';
  const rule = await addRule(A(), 'carol', { group: 'payment-approvers', address: 'queue:whocan.*', verbs: ['consume', 'browse'] });
  await converged();
  for (const base of [A(), B()]) {
    const r = await api(base, 'GET', `/api/who-can?address=${enc(W)}&verb=consume`, { user: as('carol') });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { address: W, verb: 'consume', grants: [{ group: 'payment-approvers', verbs: ['consume', 'browse'], rule: rule.id, source: 'console', members: ['bob', 'dave'] }] });
    // A group named by DN in the config: its members too.
    const g = await api(base, 'GET', `/api/who-can?address=${enc('group:payment-approvers')}&verb=send`, { user: as('carol') });
    assert.deepEqual(g.body.grants, [{ group: dn('ops'), verbs: ['send'], rule: 'config-3-1', source: 'config', members: ['alice'] }]);
    const none = await api(base, 'GET', `/api/who-can?address=${enc(W)}&verb=send`, { user: as('carol') });
    assert.deepEqual(none.body.grants, []);
    const admin = await api(base, 'GET', `/api/who-can?address=${enc('queue:payments.eu')}&verb=admin`, { user: as('carol') });
    assert.deepEqual(admin.body.grants.map((x: any) => [x.group ?? `user ${x.user}`, x.rule, x.members]), [['admins', 'config-1-1', ['carol']], ['user dave', 'config-2-1', undefined]]);
    const can = await api(base, 'GET', `/api/can?user=bob&verb=consume&address=${enc(W)}`, { user: as('carol') });
    assert.equal(can.status, 200);
    assert.equal(can.body.allowed, true);
    assert.equal(can.body.rule.id, rule.id);
    const cannot = await api(base, 'GET', `/api/can?user=erin&verb=consume&address=${enc(W)}`, { user: as('carol') });
    assert.equal(cannot.body.allowed, false);
  }
  // dave may ask inside his scope only.
  assert.equal((await api(B(), 'GET', `/api/who-can?address=${enc('queue:payments.eu')}&verb=send`, { user: as('dave') })).status, 200);
  assert.equal((await api(B(), 'GET', `/api/who-can?address=${enc(W)}&verb=consume`, { user: as('dave') })).status, 403);
  assert.equal((await api(B(), 'GET', `/api/who-can?address=${enc(W)}&verb=fly`, { user: as('carol') })).status, 400);

  // The console's who-can view, through its form.
  const { page } = await login(B(), 'carol');
  await page.goto(`${B()}/admin/permissions`);
  await page.locator('#wc-address').fill(W);
  await page.locator('#wc-verb').selectOption('consume');
  await Promise.all([page.waitForURL(/wcAddress=/), page.getByRole('button', { name: 'Show' }).click()]);
  const grantRow = page.locator('#who-can ~ table').first().locator('tr', { hasText: 'group payment-approvers' });
  assert.match((await grantRow.textContent()) ?? '', new RegExp(`consume, browse.*${rule.id} \\(console\\).*bob, dave`, 's'));
  await removeRule(B(), 'carol', rule.id);
  await page.reload();
  assert.match((await page.locator('main, body').first().textContent()) ?? '', /Nobody may consume on\s+queue:whocan\.x \(default deny\)/);
});

test('an open inbox stream stops showing a group\'s task when the user loses consume on the group (rule removed on the other process), and shows it again when it comes back', { timeout: 180_000 }, async (t) => {
  const rule = await addRule(B(), 'carol', { group: 'payment-approvers', address: 'group:payment-approvers', verbs: ['consume', 'browse'] });
  const title = `Approve live payment ${Date.now()}`;
  const sent = await api(A(), 'POST', '/api/messages', { user: as('alice'), body: { to: 'group:payment-approvers', body: { title, actions: ['approve', 'reject'], data: { amount: 42 } } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await waitFor(async () => (await api(A(), 'GET', '/api/tasks', { user: as('bob') })).body.tasks?.some((x: any) => x.title === title), 15_000, 'the task in bob\'s task list');

  const { page } = await login(A(), 'bob');
  await page.goto(`${A()}/inbox`);
  const task = page.locator('#task-list', { hasText: title });
  await task.waitFor();
  await page.waitForFunction(() => document.querySelector('#live-status')?.textContent === 'New tasks appear here by themselves.');
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });

  const t0 = performance.now();
  await removeRule(B(), 'carol', rule.id);
  await page.locator('#task-list', { hasText: title }).waitFor({ state: 'detached', timeout: DEADLINE_MS * 2 });
  record(t, 'rule removed on B → task gone from the open inbox on A', performance.now() - t0);
  assert.equal(navigations, 0, 'the list was refreshed in place by the stream, not by reloading the page');
  assert.match((await page.locator('#task-list').textContent()) ?? '', /Nothing waits for you/);
  assert.equal((await api(A(), 'GET', '/api/tasks', { user: as('bob') })).body.tasks.some((x: any) => x.title === title), false);

  const t1 = performance.now();
  const back = await addRule(B(), 'carol', { group: 'payment-approvers', address: 'group:payment-approvers', verbs: ['consume'] });
  await page.locator('#task-list', { hasText: title }).waitFor({ timeout: DEADLINE_MS * 2 });
  record(t, 'rule added on B → task back in the open inbox on A', performance.now() - t1);
  assert.equal(navigations, 0);
  await removeRule(A(), 'carol', back.id);
});

test('console rules survive kill -9 of a gateway process: restarted, it applies them at once (and one added meanwhile)', { timeout: 180_000 }, async (t) => {
  const K = 'queue:durable.k';
  const kept = await addRule(B(), 'carol', { group: 'payment-approvers', address: K, verbs: ['send'] });
  assert.equal(await send(B(), 'bob', K), 202);
  const pid = b!.pid;
  const code = await b!.kill('SIGKILL');
  assert.equal(code, null, 'killed by a signal, no clean exit');
  b = undefined;
  // While B is down, a change on A.
  const meanwhile = await addRule(A(), 'carol', { group: 'payment-approvers', address: 'queue:durable.m', verbs: ['send'] });
  const t0 = performance.now();
  b = await startB();
  assert.notEqual(b.pid, pid);
  record(t, 'restart of B after kill -9 (spawn → ready)', performance.now() - t0);
  assert.equal(await send(B(), 'bob', K), 202, 'the rule from before the kill applies on the restarted process');
  assert.equal(await send(B(), 'bob', 'queue:durable.m'), 202, 'the rule added while it was down applies too');
  const s = await converged();
  assert.ok(s.rules.some((r) => r.id === kept.id) && s.rules.some((r) => r.id === meanwhile.id));
  // And the restarted process takes part in changes again.
  const t1 = performance.now();
  await removeRule(A(), 'carol', kept.id);
  record(t, 'remove on A → 403 on restarted B', await sendBecomes(B(), 'bob', K, 403, t1));
  await removeRule(B(), 'carol', meanwhile.id);
  await sendBecomes(A(), 'bob', 'queue:durable.m', 403, performance.now());
});

test('a non-admin cannot revert (not even to the current version), and a group named by an unknown DN is refused like an unknown cn', async () => {
  const before = await converged();
  const revert = await api(A(), 'POST', '/api/permissions/revert', { user: as('erin'), body: { version: before.version } });
  assert.equal(revert.status, 403, JSON.stringify(revert.body));
  for (const group of [dn('no-such-group'), 'x=y']) {
    const r = await api(A(), 'POST', '/api/permissions', { user: as('carol'), body: { group, address: 'queue:dn-check', verbs: ['send'] } });
    assert.equal(r.status, 400, `${group}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, /the directory has no group/);
  }
  const known = await addRule(A(), 'carol', { group: dn('payment-approvers'), address: 'queue:dn-check', verbs: ['send'] });
  await removeRule(A(), 'carol', known.id);
  assert.equal((await converged()).rules.length, before.rules.length);
});
