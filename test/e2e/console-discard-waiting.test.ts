// The console discards a queue's waiting message (issue 18.3) in real Chromium: an administrator
// of the queue opens it, confirms, and it is gone (audited); the confirmation page alone changes
// nothing; a message a consumer takes before the confirmation is not discarded (409, said on the
// page, still delivered). Hostile tries change nothing: a user without admin (403, audited), a
// form without its CSRF token, a forged token, and the id of another queue's message (404).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Gateway } from '../../src/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { api, enc, startTestGateway, USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const QUEUE = 'queue:orders.eu';
const OTHER = 'queue:invoices.in';

let redis: TestRedis;
let gw: Gateway;
let browser: Browser;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    permissions: [
      // ops administers everything (admins); clerk may look at orders (browse) but not administer them.
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] },
      { group: 'clerks', allow: [{ address: 'queue:orders.*', verbs: ['browse', 'consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  browser = await launchChromium();
  for (const id of ['o-1', 'o-2', 'o-3', 'o-4']) assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { id, to: QUEUE, body: { order: id } } })).status, 202);
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { id: 'i-1', to: OTHER, body: { invoice: 1 } } })).status, 202);
});

after(async () => {
  await browser?.close().catch(() => {});
  await gw?.stop();
  await redis?.dispose();
});

async function signIn(user: keyof typeof USERS): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${gw.url}/login`);
  await page.fill('#username', user);
  await page.fill('#password', USERS[user]);
  await Promise.all([page.waitForURL((u) => u.pathname !== '/login'), page.getByRole('button', { name: 'Sign in' }).click()]);
  return { context, page };
}

const waiting = async (address: string) => ((await api(gw.url, 'GET', `/api/queues/${enc(address)}?limit=100`, { user: 'ops' })).body.messages as { id: string }[]).map((m) => m.id).sort();
const audit = async (action: string) => (await api(gw.url, 'GET', `/api/audit?action=${enc(action)}&limit=50`, { user: 'ops' })).body.entries as { actor: string; target?: string; detail?: string }[];
const discardUrl = (address: string, id: string) => `${gw.url}/admin/queues/${enc(address)}/messages/${enc(id)}/discard`;

test('an administrator discards a waiting message after a confirmation; it is gone and the discard is audited', { timeout: 120_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/queues/${enc(QUEUE)}`);
    assert.match(await page.locator('#waiting + p').textContent() ?? '', /in flight\) cannot be discarded/);
    await Promise.all([page.waitForURL('**/messages/o-2/discard'), page.getByRole('link', { name: 'Discard o-2' }).click()]);
    assert.match(await page.getByRole('heading', { level: 1 }).textContent() ?? '', /Discard message o-2\?/);
    assert.match(await page.locator('main').textContent() ?? '', /If a consumer takes it before you confirm, it is in flight and is not discarded/);
    assert.deepEqual(await waiting(QUEUE), ['o-1', 'o-2', 'o-3', 'o-4'], 'the confirmation page alone changes nothing');
    await Promise.all([page.waitForURL(`**/admin/queues/${enc(QUEUE)}?done=*`), page.getByRole('button', { name: 'Discard' }).click()]);
    assert.match(await page.getByRole('status').textContent() ?? '', /discarded o-2/);
    assert.equal(await page.locator('tr[data-message="o-2"]').count(), 0);
    assert.deepEqual(await waiting(QUEUE), ['o-1', 'o-3', 'o-4']);
    assert.ok((await audit('message.discarded')).some((e) => e.actor === 'user:ops' && e.target === QUEUE && e.detail?.includes('o-2')));
  } finally {
    await context.close();
  }
});

test('a message a consumer takes before the confirmation is not discarded: the page says it is in flight, and it is still delivered', { timeout: 120_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    await page.goto(discardUrl(QUEUE, 'o-1'));
    // A consumer takes o-1 (the head of the queue) between the confirmation page and the click.
    const taken = await api(gw.url, 'POST', `/api/queues/${enc(QUEUE)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 60 } });
    assert.equal(taken.body.messages[0].id, 'o-1');
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === 'POST'), page.getByRole('button', { name: 'Discard' }).click()]);
    assert.equal(res.status(), 409);
    assert.match(await page.getByRole('heading', { level: 1 }).textContent() ?? '', /in flight/);
    assert.match(await page.getByRole('alert').textContent() ?? '', /being delivered right now .* so it was not discarded/);
    const ack = await api(gw.url, 'POST', `/api/queues/${enc(QUEUE)}/ack`, { user: 'ops', body: { leases: [taken.body.messages[0].lease] } });
    assert.equal(ack.body.acked, 1, 'the consumer acknowledges it as usual');
    assert.ok((await audit('message.discard-refused')).some((e) => e.actor === 'user:ops' && e.detail?.includes('o-1')));
    assert.equal((await audit('message.discarded')).filter((e) => e.detail?.includes('o-1')).length, 0);
  } finally {
    await context.close();
  }
});

test('hostile discards change nothing: no admin (403, audited), no CSRF token, a forged token, another queue\'s message (404)', { timeout: 120_000 }, async () => {
  const before = await waiting(QUEUE);
  const beforeOther = await waiting(OTHER);
  const clerk = await signIn('clerk');
  const ops = await signIn('ops');
  try {
    // The clerk may look at the queue, but sees no Discard and may not discard.
    await clerk.page.goto(`${gw.url}/admin/queues/${enc(QUEUE)}`);
    assert.equal(await clerk.page.getByRole('link', { name: /^Discard/ }).count(), 0);
    assert.equal((await clerk.page.goto(discardUrl(QUEUE, 'o-3')))!.status(), 403);
    await clerk.page.goto(`${gw.url}/`);
    const token = await clerk.page.locator('input[name="_csrf"]').first().inputValue();
    const denied = await clerk.page.request.post(discardUrl(QUEUE, 'o-3'), { form: { _csrf: token }, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(denied.status(), 403);
    assert.match(await denied.text(), /clerk may not admin on queue:orders\.eu/);
    assert.ok((await audit('access.denied')).some((e) => e.actor === 'user:clerk' && e.target === QUEUE && e.detail?.includes('admin denied')));

    // An administrator's browser, but a form without the token, or with a made-up one.
    const none = await ops.page.request.post(discardUrl(QUEUE, 'o-3'), { form: {}, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(none.status(), 403);
    assert.match(await none.text(), /did not come from this site/);
    const forged = await ops.page.request.post(discardUrl(QUEUE, 'o-3'), { form: { _csrf: 'forged-token-0123456789' }, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);

    // The id of a message waiting in another queue, named through this one: not found here.
    await ops.page.goto(`${gw.url}/`);
    const opsToken = await ops.page.locator('input[name="_csrf"]').first().inputValue();
    const other = await ops.page.request.post(discardUrl(QUEUE, 'i-1'), { form: { _csrf: opsToken }, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(other.status(), 404);
    assert.match(await other.text(), /No message &#39;i-1&#39; waiting in queue:orders\.eu/);

    assert.deepEqual(await waiting(QUEUE), before, 'nothing was discarded');
    assert.deepEqual(await waiting(OTHER), beforeOther);
    assert.equal((await audit('message.discarded')).filter((e) => e.detail?.includes('o-3') || e.detail?.includes('i-1')).length, 0);
  } finally {
    await clerk.context.close();
    await ops.context.close();
  }
});
