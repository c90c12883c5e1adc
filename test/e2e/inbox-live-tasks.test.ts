import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The web inbox end to end in a real headless Chromium, against a real slapd (LDAP users bob and
// dave are payment approvers, alice is in ops and starts flows) and a real redis-server: log in
// through the form, a task from ctx.ask appears live (server-sent events, no reload), decide it
// with typed fields and a comment and the flow completes with the decision; the group race in two
// browser contexts; a task claimed by another member leaves the inbox live; XSS and CSRF
// attempts; keyboard only; phone width; the expired-session page; the README screenshot.

const ROOT = resolve(import.meta.dirname, '..', '..');
const PREFIX = `ie2e${process.pid}`;

const PERMISSIONS = [
  { group: `cn=payment-approvers,ou=groups,${LDAP.base}`, allow: [{ address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
  { group: `cn=ops,ou=groups,${LDAP.base}`, allow: [{ address: 'group:**', verbs: ['send'] }, { address: 'person:**', verbs: ['send'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: 'e2e-approval',
  input: z.object({ ref: z.string(), amount: z.number(), beneficiary: z.string().default('ACME GmbH'), due: z.string().optional() }),
  async run(ctx, input) {
    const decision = await ctx.ask('group:payment-approvers', {
      title: \`Approve payment \${input.ref}\`,
      description: \`Pay \${input.amount} EUR to \${input.beneficiary}.\`,
      data: { ref: input.ref, amount: input.amount, beneficiary: input.beneficiary, iban: 'DE89 3704 0044 0532 0130 00' },
      actions: ['approve', 'reject'],
      fields: { checkedAmount: 'number', payOn: 'date', priority: { choice: ['normal', 'urgent'] } },
      ...(input.due ? { due: input.due } : {}),
    });
    return decision;
  },
});
`;

const ALICE = { name: 'alice', password: 'alice-pw' };
const BOB = { name: 'bob', password: 'bob-pw' };
const DAVE = { name: 'dave', password: 'dave-pw' };

let redis: TestRedis;
let ldap: TestLdap;
let gw: Gateway;
let flowsDir: string;
let browser: Browser;
let client: Redis;

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-inbox-e2e-flows-'));
  // "type": "module": without it tsx compiles a .ts file outside an ESM package as CommonJS, whose
  // require() bypasses the flow loader's resolve hook and 'switchboard' is not found (a loader bug
  // already reported with test/integration/flows-ctx.test.ts).
  writeFileSync(join(flowsDir, 'package.json'), '{"type": "module"}\n');
  writeFileSync(join(flowsDir, 'e2e-approval.ts'), FLOW);
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  ldap = await startTestLdap();
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    directory: ldapDirectoryConfig(ldap.url),
    permissions: PERMISSIONS,
    flows: { dir: flowsDir },
  });
  browser = await launchChromium();
});

after(async () => {
  // The browser first: its open event streams would otherwise hold the HTTP server open.
  await browser?.close().catch(() => {});
  await gw?.stop();
  client?.disconnect();
  await ldap?.dispose();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

/** waitFor, typed: resolves with the first value that is not undefined (or false). */
async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  return (await waitFor(fn, timeoutMs, what)) as T;
}

// --- helpers ---------------------------------------------------------------------------------

interface Started {
  instanceId: string;
  taskId: string;
}

/** Starts the flow as alice (ops: start) and waits until its task exists; returns both ids. */
async function startApproval(ref: string, amount: number, extra: Record<string, unknown> = {}): Promise<Started> {
  const r = await api(gw.url, 'POST', '/api/flows/e2e-approval', { user: ALICE, body: { input: { ref, amount, ...extra } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const instanceId = r.body.instanceId as string;
  const taskId = await until(async () => {
    const v = await api(gw.url, 'GET', `/api/flows/e2e-approval/${instanceId}`, { user: ALICE });
    return v.body.status === 'waiting' ? taskOf(ref) : undefined;
  }, 30_000, `the task of ${ref}`);
  return { instanceId, taskId };
}

/** The id of the open task titled for `ref`, as bob sees it over the API. */
async function taskOf(ref: string): Promise<string | undefined> {
  const r = await api(gw.url, 'GET', '/api/tasks', { user: BOB });
  return (r.body.tasks as { id: string; title: string }[]).find((t) => t.title === `Approve payment ${ref}`)?.id;
}

async function flowResult(instanceId: string): Promise<Record<string, unknown>> {
  return until(async () => {
    const v = await api(gw.url, 'GET', `/api/flows/e2e-approval/${instanceId}`, { user: ALICE });
    return v.body.status === 'completed' || v.body.status === 'failed' ? v.body : undefined;
  }, 30_000, `flow ${instanceId} to finish`);
}

async function taskAs(user: { name: string; password: string }, id: string) {
  const r = await api(gw.url, 'GET', `/api/tasks/${enc(id)}`, { user });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** A new browser context signed in as `user` through the login form, on /inbox. */
async function signIn(user: string, options: Parameters<Browser['newContext']>[0] = {}): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${gw.url}/login?next=${enc('/inbox')}`);
  await page.fill('#username', user);
  await page.fill('#password', `${user}-pw`);
  await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Sign in' }).click()]);
  return { context, page };
}

/** Opens /inbox and waits until the live stream is connected (and its first refresh is done). */
async function openInbox(page: Page): Promise<void> {
  const stream = page.waitForResponse((r) => new URL(r.url()).pathname === '/inbox/events' && r.status() === 200);
  const firstRefresh = page.waitForResponse((r) => new URL(r.url()).pathname === '/inbox/list');
  await page.goto(`${gw.url}/inbox`);
  await stream;
  await firstRefresh;
  // A marker that a reload or a navigation would wipe out.
  await page.evaluate(() => { (window as unknown as { __sameDocument: number }).__sameDocument = 42; });
}

async function sameDocument(page: Page): Promise<boolean> {
  return page.evaluate(() => (window as unknown as { __sameDocument?: number }).__sameDocument === 42);
}

const row = (page: Page, taskId: string) => page.locator(`#task-list tr[data-task="${taskId}"]`);

async function noHorizontalScroll(page: Page, what: string): Promise<void> {
  const { scrollWidth, clientWidth } = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth }));
  assert.ok(scrollWidth <= 375 + 2, `${what}: page is ${scrollWidth}px wide in a 375px viewport (client ${clientWidth}px)`);
}

// --- tests -----------------------------------------------------------------------------------

test('bob signs in, a task from ctx.ask appears live (no reload); he fills the form and approves; the flow completes with the decision', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('bob');
  try {
    await openInbox(page);
    const r = await api(gw.url, 'POST', '/api/flows/e2e-approval', { user: ALICE, body: { input: { ref: 'E2E-1', amount: 1250.5 } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const instanceId = r.body.instanceId as string;

    const link = page.locator('#task-list a', { hasText: 'Approve payment E2E-1' });
    await link.waitFor({ state: 'visible', timeout: 30_000 });
    assert.ok(await sameDocument(page), 'the task arrived without a reload of the page');
    assert.equal(new URL(page.url()).pathname, '/inbox');
    assert.match((await page.locator('#task-list').textContent()) ?? '', /group payment-approvers/);

    await link.click();
    await page.waitForURL(/\/tasks\/[A-Za-z0-9_-]+$/);
    const taskId = new URL(page.url()).pathname.split('/').pop()!;
    assert.equal((await page.locator('h1').textContent())?.trim(), 'Approve payment E2E-1');
    // Data as a readable table, not JSON.
    assert.equal((await page.locator('table.data th', { hasText: 'beneficiary' }).locator('xpath=following-sibling::td').textContent())?.trim(), 'ACME GmbH');
    assert.equal((await page.locator('table.data th', { hasText: 'amount' }).locator('xpath=following-sibling::td').textContent())?.trim(), '1,250.5', 'formatted for the reader (en-GB)');
    // Labelled form fields of the right kinds.
    assert.equal(await page.getByLabel('checkedAmount').getAttribute('type'), 'number');
    assert.equal(await page.getByLabel('payOn').getAttribute('type'), 'date');
    assert.deepEqual(await page.getByLabel('priority').locator('option').allTextContents(), ['—', 'normal', 'urgent']);

    await page.getByLabel('checkedAmount').fill('1250.5');
    await page.getByLabel('payOn').fill('2026-12-31');
    await page.getByLabel('priority').selectOption('urgent');
    await page.getByLabel(/^Comment/).fill('Checked against the invoice');
    const before = Date.now();
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Approve' }).click()]);
    assert.match((await page.locator('p.ok[role=status]').textContent()) ?? '', /Done: decided "approve"/);
    assert.equal(await row(page, taskId).count(), 0, 'the decided task is no longer in the inbox');

    const view = await flowResult(instanceId);
    assert.equal(view.status, 'completed', JSON.stringify(view));
    const result = view.result as Record<string, unknown>;
    assert.deepEqual(Object.keys(result).sort(), ['action', 'at', 'by', 'comment', 'fields']);
    assert.equal(result.action, 'approve');
    assert.deepEqual(result.fields, { checkedAmount: 1250.5, payOn: '2026-12-31', priority: 'urgent' });
    assert.equal(result.comment, 'Checked against the invoice');
    assert.equal(result.by, 'user:bob');
    const at = Date.parse(result.at as string);
    assert.ok(at >= before && at <= Date.now(), `decided at ${String(result.at)}: when bob clicked`);

    // The task page now shows the decision and its history, with where it came from.
    await page.goto(`${gw.url}/tasks/${taskId}`);
    assert.match((await page.locator('p.ok[role=status]').textContent()) ?? '', /approve\s+by bob .*Checked against the invoice/);
    const decided = page.locator('table.history tr', { hasText: 'decided' });
    assert.match((await decided.textContent()) ?? '', /user:bob\s*decided: approve: Checked against the invoice\s*(::ffff:)?127\.0\.0\.1/);
    assert.equal(await page.locator('form.decide').count(), 0, 'no form on a decided task');
  } finally {
    await context.close();
  }
});

test('README screenshot: the inbox with a few tasks (docs/inbox.png)', { timeout: 180_000 }, async () => {
  await startApproval('P-2041', 12_500, { beneficiary: 'Northwind Traders', due: '4h' });
  await startApproval('P-2042', 980, { beneficiary: 'Contoso Ltd', due: '2d' });
  const note = await api(gw.url, 'POST', '/api/messages', { user: ALICE, body: { to: 'person:bob', subject: 'New payment limits from 1 July', body: { text: 'Single approvals now go up to 20 000 EUR.' } } });
  assert.equal(note.status, 202, JSON.stringify(note.body));
  const { context, page } = await signIn('bob', { viewport: { width: 1000, height: 560 } });
  try {
    await page.goto(`${gw.url}/inbox`);
    await page.locator('#task-list a', { hasText: 'New payment limits from 1 July' }).waitFor();
    const titles = await page.locator('#task-list tbody tr td:first-child a').allTextContents();
    for (const t of ['Approve payment P-2041', 'Approve payment P-2042', 'New payment limits from 1 July']) assert.ok(titles.includes(t), `${t} in ${JSON.stringify(titles)}`);
    // Sorted by due date: P-2041 (4h) before P-2042 (2d); the message without a due date last.
    assert.ok(titles.indexOf('Approve payment P-2041') < titles.indexOf('Approve payment P-2042'), JSON.stringify(titles));
    assert.match((await page.locator('nav.tabs').textContent()) ?? '', /All\s*3[\s\S]*Mine\s*1[\s\S]*My groups\s*2/);
    const file = join(ROOT, 'docs', 'inbox.png');
    mkdirSync(join(ROOT, 'docs'), { recursive: true });
    await page.screenshot({ path: file, fullPage: true });
    const png = readFileSync(file);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG file');
    assert.ok(statSync(file).size > 10_000, 'a real picture, not an empty one');
  } finally {
    await context.close();
  }
});

test('group race: bob and dave click Approve at the same moment; exactly one wins, the other page says who decided (409)', { timeout: 240_000 }, async () => {
  const bob = await signIn('bob');
  const dave = await signIn('dave');
  try {
    for (const round of [1, 2, 3]) {
      const { instanceId, taskId } = await startApproval(`RACE-${round}`, 100 + round);
      const pages = [bob.page, dave.page];
      await Promise.all(pages.map((p) => p.goto(`${gw.url}/tasks/${taskId}`)));
      await Promise.all(pages.map((p, i) => p.getByLabel(/^Comment/).fill(`round ${round} by ${i === 0 ? 'bob' : 'dave'}`)));
      const responses = pages.map((p) => p.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/tasks/${taskId}/decision`));
      await Promise.all(pages.map((p) => p.getByRole('button', { name: 'Approve' }).click()));
      const statuses = await Promise.all(responses.map(async (r) => (await r).status()));
      assert.deepEqual([...statuses].sort(), [303, 409], `round ${round}: ${JSON.stringify(statuses)}`);

      const winner = statuses[0] === 303 ? 'bob' : 'dave';
      const loserPage = pages[statuses[0] === 303 ? 1 : 0]!;
      const winnerPage = pages[statuses[0] === 303 ? 0 : 1]!;
      await winnerPage.waitForURL((u) => u.pathname === '/inbox');
      const alert = loserPage.locator('p.error[role=alert]');
      await alert.waitFor();
      assert.match((await alert.textContent()) ?? '', new RegExp(`has already been decided by user:${winner}`));
      assert.equal((await loserPage.locator('h1').textContent())?.trim(), `Approve payment RACE-${round}`, 'the loser stays on the task page');

      const view = await flowResult(instanceId);
      assert.equal((view.result as { by: string }).by, `user:${winner}`);
      assert.equal((view.result as { comment: string }).comment, `round ${round} by ${winner}`);
      const task = await taskAs(BOB, taskId);
      assert.equal(task.history.filter((h: { action: string }) => h.action === 'decided').length, 1, JSON.stringify(task.history));
    }
  } finally {
    await bob.context.close();
    await dave.context.close();
  }
});

test('a task dave claims disappears from bob’s open inbox live; dave still has it', { timeout: 180_000 }, async () => {
  const { instanceId, taskId } = await startApproval('CLAIM-1', 77);
  const bob = await signIn('bob');
  const dave = await signIn('dave');
  try {
    await openInbox(bob.page);
    await row(bob.page, taskId).waitFor();
    await dave.page.goto(`${gw.url}/tasks/${taskId}`);
    await Promise.all([dave.page.waitForURL(/done=claimed/), dave.page.getByRole('button', { name: /^Claim/ }).click()]);
    assert.match((await dave.page.locator('p.muted').first().textContent()) ?? '', /claimed by dave/);

    await waitFor(async () => (await row(bob.page, taskId).count()) === 0, 20_000, 'the claimed task to leave bob’s inbox');
    assert.ok(await sameDocument(bob.page), 'it left without a reload');

    await dave.page.goto(`${gw.url}/inbox`);
    assert.match((await row(dave.page, taskId).textContent()) ?? '', /claimed by dave/);
    // Bob cannot decide it behind dave's back: 409 naming dave.
    const sneaky = await api(gw.url, 'POST', `/api/tasks/${taskId}/decision`, { user: BOB, body: { action: 'approve' } });
    assert.equal(sneaky.status, 409);
    assert.match(sneaky.body.error.message, /already taken by user:dave/);
    // Dave finishes it.
    const done = await api(gw.url, 'POST', `/api/tasks/${taskId}/decision`, { user: DAVE, body: { action: 'reject', comment: 'duplicate' } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(((await flowResult(instanceId)).result as { action: string }).action, 'reject');
  } finally {
    await bob.context.close();
    await dave.context.close();
  }
});

const XSS_TITLE = 'Pay <script>window.__xss=1</script> now <img src=x onerror="window.__xss=2">';
const XSS_NOTE = '<img src=x onerror="window.__xss=3"><b>bold?</b>';

test('XSS: a title and data with <script> and <img onerror> show as text in the live list and on the task page; nothing runs', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('bob');
  try {
    await openInbox(page);
    const sent = await api(gw.url, 'POST', '/api/messages', {
      user: ALICE,
      body: { to: 'group:payment-approvers', body: { title: XSS_TITLE, description: `Why: ${XSS_NOTE}`, actions: ['approve', 'reject<script>'], data: { note: XSS_NOTE, '<i>key</i>': 'v' } } },
    });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));

    // Live: the list arrives through innerHTML, where an <img onerror> would run.
    const link = page.locator('#task-list a', { hasText: 'window.__xss=1' });
    await link.waitFor({ timeout: 30_000 });
    assert.ok(await sameDocument(page));
    assert.equal((await link.textContent())?.trim(), XSS_TITLE, 'the title is shown as the literal text');
    const injected = () => page.evaluate(() => ({
      xss: (window as unknown as { __xss?: number }).__xss,
      imgs: document.querySelectorAll('main img').length,
      scripts: [...document.querySelectorAll('script')].filter((s) => (s.textContent ?? '').includes('__xss')).length,
      bold: document.querySelectorAll('main b, main i').length,
    }));
    assert.deepEqual(await injected(), { xss: undefined, imgs: 0, scripts: 0, bold: 0 });

    // A full page load of the inbox, then the task page.
    await page.goto(`${gw.url}/inbox`);
    assert.deepEqual(await injected(), { xss: undefined, imgs: 0, scripts: 0, bold: 0 });
    await Promise.all([page.waitForURL(/\/tasks\//), page.locator('#task-list a', { hasText: 'window.__xss=1' }).click()]);
    assert.equal((await page.locator('h1').textContent())?.trim(), XSS_TITLE);
    assert.equal(await page.title(), `${XSS_TITLE} · Switchboard`);
    assert.equal((await page.locator('table.data th', { hasText: 'note' }).locator('xpath=following-sibling::td').textContent())?.trim(), XSS_NOTE);
    assert.equal(await page.locator('table.data th', { hasText: '<i>key</i>' }).count(), 1, 'a data key is text too');
    assert.ok(((await page.locator('main').textContent()) ?? '').includes(`Why: ${XSS_NOTE}`));
    assert.equal(await page.getByRole('button', { name: 'Reject<script>' }).count(), 1, 'an action name is text on its button');
    assert.deepEqual(await injected(), { xss: undefined, imgs: 0, scripts: 0, bold: 0 });
  } finally {
    await context.close();
  }
});

test('CSRF: a form posted from another origin or without the token is refused with 403 and the task stays open', { timeout: 180_000 }, async () => {
  const { instanceId, taskId } = await startApproval('CSRF-1', 5000);
  const attackerPort = await freePort();
  const target = `${gw.url}/tasks/${taskId}/decision`;
  const attacker: Server = createServer((req, res) => {
    const withToken = req.url?.includes('forged') ? '<input name="_csrf" value="forged-token">' : '';
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><title>Win a prize</title><form id="f" method="post" action="${target}">${withToken}<input name="action" value="approve"><input name="comment" value="pwned"></form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise<void>((r) => attacker.listen(attackerPort, '127.0.0.1', () => r()));
  const { context, page } = await signIn('bob');
  try {
    for (const path of ['/no-token', '/forged']) {
      const response = page.waitForResponse((r) => r.request().method() === 'POST' && r.url() === target);
      await page.goto(`http://127.0.0.1:${attackerPort}${path}`);
      const res = await response;
      assert.equal(res.status(), 403, `${path}: the forged decision got ${res.status()}`);
      await page.waitForURL(target);
      assert.match((await page.locator('p.error[role=alert]').textContent()) ?? '', /did not come from this site/);
    }

    // Bob's own cookie, but no token or a wrong one, straight over HTTP.
    const cookie = (await context.cookies()).filter((c) => c.name === 'sb.sid').map((c) => `${c.name}=${c.value}`).join('; ');
    assert.ok(cookie);
    for (const form of [{ action: 'approve' }, { action: 'approve', _csrf: 'x'.repeat(40) }] as Record<string, string>[]) {
      const r = await fetch(target, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' }, body: new URLSearchParams(form).toString() });
      assert.equal(r.status, 403, JSON.stringify(form));
    }
    const still = await taskAs(BOB, taskId);
    assert.equal(still.status, 'open');
    assert.ok(!still.history.some((h: { action: string }) => h.action === 'decided'), JSON.stringify(still.history));

    // The same decision from bob's own page (with its token) goes through: the 403s were the token.
    await page.goto(`${gw.url}/tasks/${taskId}`);
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Reject' }).click()]);
    assert.equal(((await flowResult(instanceId)).result as { action: string }).action, 'reject');
  } finally {
    await context.close();
    await new Promise<void>((r) => attacker.close(() => r()));
  }
});

test('keyboard only: Tab to the task, Enter, type the amount and a comment, Tab to Approve, Enter', { timeout: 180_000 }, async () => {
  const { instanceId, taskId } = await startApproval('KEYS-1', 310);
  const { context, page } = await signIn('bob');
  try {
    // Loaded and live (its first refresh replaces the list, which would take the focus with it).
    await openInbox(page);
    const tabTo = async (what: string, test: () => Promise<boolean>) => {
      for (let i = 0; i < 80; i++) {
        if (await test()) return;
        await page.keyboard.press('Tab');
      }
      assert.fail(`Tab never reached ${what}`);
    };
    await tabTo('the task link', () => page.evaluate((id) => document.activeElement?.getAttribute('href') === `/tasks/${id}`, taskId));
    // Focus is visible: the focused link has an outline.
    assert.notEqual(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle), 'none');
    await Promise.all([page.waitForURL(`${gw.url}/tasks/${taskId}`), page.keyboard.press('Enter')]);

    await tabTo('the amount field', () => page.evaluate(() => document.activeElement?.id === 'f-checkedAmount'));
    await page.keyboard.type('310');
    await tabTo('the comment', () => page.evaluate(() => document.activeElement?.id === 'comment'));
    await page.keyboard.type('Approved with the keyboard');
    await tabTo('the Approve button', () => page.evaluate(() => (document.activeElement as HTMLButtonElement | null)?.value === 'approve'));
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.keyboard.press('Enter')]);

    const result = (await flowResult(instanceId)).result as Record<string, unknown>;
    assert.equal(result.action, 'approve');
    assert.equal(result.comment, 'Approved with the keyboard');
    assert.deepEqual(result.fields, { checkedAmount: 310 });
    assert.equal(result.by, 'user:bob');
  } finally {
    await context.close();
  }
});

test('phone width (375px): the inbox and a task page have no horizontal scroll', { timeout: 180_000 }, async () => {
  const { taskId } = await startApproval('PHONE-1', 42_000, { beneficiary: 'Fabrikam Incorporated International Holdings', due: '1h' });
  const { context, page } = await signIn('bob', { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  try {
    await page.goto(`${gw.url}/inbox`);
    await row(page, taskId).waitFor();
    assert.ok((await page.locator('#task-list tbody tr').count()) >= 2, 'several tasks listed');
    await noHorizontalScroll(page, '/inbox');
    await page.goto(`${gw.url}/tasks/${taskId}`);
    assert.equal(await page.locator('form.decide').count(), 1);
    await noHorizontalScroll(page, `/tasks/${taskId}`);
    // The Approve button is on screen horizontally and big enough to tap.
    const box = await page.getByRole('button', { name: 'Approve' }).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375 && box.height >= 32, JSON.stringify(box));
  } finally {
    await context.close();
  }
});

test('expired session: the session deleted server side → the next page is the login saying the session expired; signing in goes back', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('bob');
  try {
    await page.goto(`${gw.url}/inbox`);
    const cookie = (await context.cookies()).find((c) => c.name === 'sb.sid');
    assert.ok(cookie);
    const signed = decodeURIComponent(cookie.value);
    assert.match(signed, /^s:/);
    const sid = signed.slice(2, signed.lastIndexOf('.'));
    assert.equal(await client.del(`${PREFIX}:sess:${sid}`), 1, 'the session was in Redis');

    await page.goto(`${gw.url}/inbox?show=groups`);
    const url = new URL(page.url());
    assert.equal(url.pathname, '/login');
    assert.equal(url.searchParams.get('expired'), '1');
    assert.equal(url.searchParams.get('next'), '/inbox?show=groups');
    assert.equal((await page.locator('h1').textContent())?.trim(), 'Sign in');
    assert.equal((await page.locator('p.ok[role=status]').textContent())?.trim(), 'Your session has expired. Please sign in again.');

    await page.fill('#username', 'bob');
    await page.fill('#password', 'bob-pw');
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Sign in' }).click()]);
    assert.equal(new URL(page.url()).search, '?show=groups');
    assert.match((await page.locator('header .me').textContent()) ?? '', /Signed in as\s+bob/);
  } finally {
    await context.close();
  }
});
