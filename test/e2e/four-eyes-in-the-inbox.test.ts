// Four-eyes in a real headless Chromium (DESIGN §4): clerk starts payment-approval (workflows/)
// and opens the task through the web login. Instead of the Approve/Reject buttons the page says
// why (#four-eyes: "you started this request"); a decision posted by hand from that page, with the
// session's own CSRF token, is refused 403 and audited, and the task stays open. ops, a second
// approver, sees the buttons, approves, and the flow goes on with ops's approval. No screenshots.
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

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    // flows.dir is the default, workflows/: payment-approval as shipped.
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
      // clerk may both ask for payments and approve them: four-eyes keeps the two apart.
      { group: 'clerks', allow: [{ address: 'flow:payment-approval', verbs: ['start'] }, { address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  await gw?.stop();
  await redis?.dispose();
});

/** A browser context signed in as `user` through the login form, landing on `next`. */
async function signIn(user: keyof typeof USERS, next: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${gw.url}/login?next=${enc(next)}`);
  await page.fill('#username', user);
  await page.fill('#password', USERS[user]);
  await Promise.all([page.waitForURL((u) => u.pathname === next), page.getByRole('button', { name: 'Sign in' }).click()]);
  return { context, page };
}

test('the requester sees why instead of the buttons, and a hand-made decision is refused and audited; a second approver sees the buttons and approves', { timeout: 180_000 }, async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'clerk', body: { input: { ref: 'FE-1', amount: 250 } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const instanceId = started.body.instanceId as string;
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'clerk' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment FE-1'), 30_000, 'the task') as { id: string };
  const path = `/tasks/${task.id}`;

  const clerk = await signIn('clerk', path);
  try {
    const { page } = clerk;
    assert.equal((await page.locator('h1').textContent())?.trim(), 'Approve payment FE-1');
    const why = page.locator('#four-eyes');
    await why.waitFor({ state: 'visible' });
    assert.match((await why.textContent()) ?? '', /You cannot decide this task: you started this request\. Someone else must decide\./);
    assert.equal(await page.getByRole('button', { name: 'Approve' }).count(), 0, 'no Approve button for the requester');
    assert.equal(await page.getByRole('button', { name: 'Reject' }).count(), 0, 'no Reject button for the requester');
    assert.equal(await page.locator('form.decide').count(), 0);
    assert.equal(await page.locator('#delegate-to').count(), 0, 'no delegation form either');

    // The attack: the decision the page does not offer, posted from the page with its own session and CSRF token.
    const forged = await page.evaluate(async (taskPath) => {
      const csrf = (document.querySelector('input[name=_csrf]') as HTMLInputElement | null)?.value ?? '';
      const res = await fetch(`${taskPath}/decision`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf, action: 'approve' }).toString(), redirect: 'manual' });
      return { status: res.status, text: await res.text(), hadToken: csrf !== '' };
    }, path);
    assert.ok(forged.hadToken, 'the layout carries a CSRF token, so the refusal is not the CSRF check');
    assert.equal(forged.status, 403, forged.text.slice(0, 500));
    assert.match(forged.text, /you started this request/);
    await waitFor(async () => (await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc('user:clerk')}&limit=50`, { user: 'ops' })).body.entries
      .some((e: { target?: string; detail?: string }) => /four_eyes/.test(e.detail ?? '') && (e.target ?? '').includes(task.id)), 5000, 'the audited four-eyes refusal');
    const still = await api(gw.url, 'GET', `/api/tasks/${task.id}`, { user: 'ops' });
    assert.equal(still.body.status, 'open');
    assert.equal(still.body.claimedBy, undefined);
    assert.deepEqual(still.body.history.map((h: { action: string }) => h.action), ['created']);
    assert.equal((await api(gw.url, 'GET', `/api/flows/payment-approval/${instanceId}`, { user: 'ops' })).body.waitingOn?.kind, 'ask');
  } finally {
    await clerk.context.close();
  }

  const ops = await signIn('ops', path);
  try {
    const { page } = ops;
    assert.equal(await page.locator('#four-eyes').count(), 0, 'no four-eyes notice for another approver');
    await page.getByLabel(/^Comment/).fill('second pair of eyes');
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Approve' }).click()]);
    assert.match((await page.locator('p.ok[role=status]').textContent()) ?? '', /Done: decided "approve"/);
  } finally {
    await ops.context.close();
  }
  const decided = await api(gw.url, 'GET', `/api/tasks/${task.id}`, { user: 'ops' });
  assert.equal(decided.body.status, 'decided');
  assert.equal(decided.body.decision.by, 'user:ops');
  assert.equal(decided.body.decision.comment, 'second pair of eyes');
  // The flow took ops's approval and went on to its legacy check (a request nobody answers here).
  const v = await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/flows/payment-approval/${instanceId}`, { user: 'ops' });
    return r.body.waitingOn?.kind === 'request' ? r.body : undefined;
  }, 30_000, 'the flow past its ask');
  assert.equal(v.waitingOn.target, 'queue:legacy.requests');
});
