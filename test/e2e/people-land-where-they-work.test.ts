// People land where they work (issue 18.4, DESIGN §6), in a real headless Chromium: after login a
// clerk with an open task lands on the inbox, an admin on the console, a user with neither on the
// start page, and an explicit `next` still wins. The task page shows one comment box even when the
// task declares a `Comment` field, and the decision carries the text as the comment and as that
// field. The task's amount and date read as the reader writes them (Accept-Language).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Gateway } from '../../src/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis;
let gw: Gateway;
let browser: Browser;
let taskId: string;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    permissions: [
      // ops administers everything and may send tasks, but works no group's tasks.
      { group: 'ops', allow: [{ address: 'group:**', verbs: ['send'] }] },
      { group: 'clerks', allow: [{ address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  browser = await launchChromium();
  const sent = await api(gw.url, 'POST', '/api/messages', {
    user: 'ops',
    body: {
      to: 'group:payment-approvers',
      body: {
        title: 'Approve payment P-2041',
        actions: ['approve', 'reject'],
        data: { ref: 'P-2041', amount: 12500, iban: 'DE89 3704 0044 0532 0130 00', bookedAt: '2026-11-25T09:21:10Z' },
        fields: { Comment: 'text', checkedAmount: 'number' },
      },
    },
  });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  taskId = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'clerk' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment P-2041')?.id, 20_000, 'the task') as string;
});

after(async () => {
  await browser?.close().catch(() => {});
  await gw?.stop();
  await redis?.dispose();
});

/** Signs `user` in through the form (with `next` when given); returns where the login led. */
async function signIn(user: keyof typeof USERS, opts: { next?: string; locale?: string } = {}): Promise<{ context: BrowserContext; page: Page; landed: string }> {
  const context = await browser.newContext({ locale: opts.locale ?? 'en-GB' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${gw.url}/login${opts.next ? `?next=${enc(opts.next)}` : ''}`);
  await page.fill('#username', user);
  await page.fill('#password', USERS[user]);
  await Promise.all([page.waitForURL((u) => u.pathname !== '/login'), page.getByRole('button', { name: 'Sign in' }).click()]);
  const u = new URL(page.url());
  return { context, page, landed: u.pathname + u.search };
}

test('after login: a user with open tasks lands on the inbox, an admin on the console, anyone else on the start page; an explicit next wins', { timeout: 180_000 }, async () => {
  const clerk = await signIn('clerk');
  try {
    assert.equal(clerk.landed, '/inbox');
    assert.equal(await clerk.page.getByRole('link', { name: 'Approve payment P-2041' }).count(), 1, 'the waiting task is in the list');
  } finally {
    await clerk.context.close();
  }
  const ops = await signIn('ops');
  try {
    assert.equal(ops.landed, '/admin');
  } finally {
    await ops.context.close();
  }
  const nobody = await signIn('nobody');
  try {
    assert.equal(nobody.landed, '/');
    assert.equal((await nobody.page.locator('h1').textContent())?.trim(), 'Hello, nobody');
  } finally {
    await nobody.context.close();
  }
  const wanted = await signIn('ops', { next: `/tasks/${taskId}` });
  try {
    assert.equal(wanted.landed, `/tasks/${taskId}`, 'the page the user asked for, not the console');
  } finally {
    await wanted.context.close();
  }
});

test("the task page: one comment box for the task's Comment field, the decision carries it; amounts and dates in the reader's locale", { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('clerk', { next: `/tasks/${taskId}` });
  try {
    const value = (key: string) => page.locator('table.data th', { hasText: key }).locator('xpath=following-sibling::td');
    assert.equal((await value('amount').textContent())?.trim(), '12,500');
    assert.equal(await value('amount').locator('data').getAttribute('value'), '12500', 'the raw amount stays in the page');
    assert.equal((await value('bookedAt').textContent())?.trim(), '25 Nov 2026, 09:21');
    assert.equal(await value('bookedAt').locator('time').getAttribute('datetime'), '2026-11-25T09:21:10Z');
    assert.equal((await value('iban').textContent())?.trim(), 'DE89 3704 0044 0532 0130 00', 'identifiers stay as typed');

    const form = page.locator('form.decide');
    assert.equal(await form.locator('textarea').count(), 1, 'one comment box');
    assert.equal(await form.getByLabel(/comment/i).count(), 1, 'one control labelled comment');
    assert.equal(await form.locator('[name="field.Comment"]').count(), 0, "the task's own Comment field is not a second box");
    assert.equal(await form.locator('#f-checkedAmount').count(), 1, 'the other fields are there');

    await page.getByLabel(/^Comment/).fill('checked against the invoice');
    await page.fill('#f-checkedAmount', '12500');
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Approve' }).click()]);
    assert.match((await page.locator('p.ok[role=status]').textContent()) ?? '', /Done: decided "approve"/);
  } finally {
    await context.close();
  }
  const decided = await api(gw.url, 'GET', `/api/tasks/${taskId}`, { user: 'clerk' });
  assert.equal(decided.body.status, 'decided');
  assert.equal(decided.body.decision.comment, 'checked against the invoice');
  assert.deepEqual(decided.body.decision.fields, { Comment: 'checked against the invoice', checkedAmount: 12500 });

  // Another reader, another locale: the same amount as a German reader writes it.
  const de = await signIn('clerk', { next: `/tasks/${taskId}`, locale: 'de-DE' });
  try {
    assert.equal((await de.page.locator('table.data th', { hasText: 'amount' }).locator('xpath=following-sibling::td').textContent())?.trim(), '12.500');
  } finally {
    await de.context.close();
  }
});
