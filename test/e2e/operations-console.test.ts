// The operations console at /admin (issue 18.3, DESIGN §6) in a real headless Chromium: an admin
// sees the queues with live numbers, views a dead letter and replays it after a confirmation
// (audited), searches flow instances by business key (ctx.tag) and cancels one, exports the audit
// trail as CSV; the flows and connections pages follow state changes live (an instance that
// completes, a webhook that starts retrying) without a reload; a business user without admin or browse is refused (403 page, audited, nothing
// changed); a form without its CSRF token is refused; the whole replay is done with the
// keyboard; a phone-sized screen shows the pages without sideways scrolling. The README's
// console screenshots are taken here.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Gateway } from '../../src/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const DOCS = resolve(import.meta.dirname, '..', '..', 'docs');
const QUEUE = 'queue:orders.eu';

let redis: TestRedis;
let gw: Gateway;
let browser: Browser;
let flowsDir: string;
let deadId: string;

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'invoice',
  input: z.object({ ref: z.string().min(1) }),
  async run(ctx, input) {
    await ctx.tag('ref', input.ref);
    await ctx.send('queue:invoices.out', { ref: input.ref });
    const m = await ctx.receive({ timeout: '1h' });
    return { ref: input.ref, got: m.body };
  },
});
`;

before(async () => {
  redis = await startTestRedis();
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-console-flows-'));
  writeFileSync(join(flowsDir, 'invoice.ts'), FLOW);
  gw = await startTestGateway(redis.url, {
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
    // Nobody listens on this port: once sent to, the webhook retries, as the connections page shows live.
    webhooks: { crm: { url: `http://127.0.0.1:${await freePort()}/hook`, secret: 'a-shared-secret-of-enough-length', backoff: '60s', maxAttempts: 5 } },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'send'] }, { address: 'webhook:crm', verbs: ['send'] }] },
      // A business user: may send orders and work tasks, but neither administers nor browses anything.
      { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'group:approvers', verbs: ['consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  browser = await launchChromium();
  // A dead letter: three 1 s leases that expire (queues.maxAttempts is 3 in test gateways).
  deadId = `order-${Date.now()}`;
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { id: deadId, to: QUEUE, body: { order: 'O-77', amount: 125.5 } } })).status, 202);
  await waitFor(async () => {
    await api(gw.url, 'POST', `/api/queues/${enc(QUEUE)}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 1 } });
    const d = await api(gw.url, 'GET', `/api/dlq/${enc(QUEUE)}`, { user: 'ops' });
    return d.body.depth === 1;
  }, 60_000, 'the order to be dead-lettered');
  for (let i = 0; i < 3; i++) assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: QUEUE, body: { order: `O-${100 + i}` } } })).status, 202);
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:invoices.in', body: { n: 1 } } })).status, 202);
});

after(async () => {
  await browser?.close().catch(() => {});
  await gw?.stop();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

async function signIn(user: keyof typeof USERS, options: Parameters<Browser['newContext']>[0] = {}): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1200, height: 800 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${gw.url}/login`);
  await page.fill('#username', user);
  await page.fill('#password', USERS[user]);
  await Promise.all([page.waitForURL((u) => u.pathname !== '/login'), page.getByRole('button', { name: 'Sign in' }).click()]);
  return { context, page };
}

const dlqDepth = async () => (await api(gw.url, 'GET', `/api/dlq/${enc(QUEUE)}`, { user: 'ops' })).body.depth as number;
const audit = async (action: string) => (await api(gw.url, 'GET', `/api/audit?action=${enc(action)}&limit=50`, { user: 'ops' })).body.entries as { actor: string; target?: string; detail?: string }[];

test('a business user without admin or browse is refused the console: a 403 page, audited, and a replay with a valid form token changes nothing', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('clerk');
  try {
    for (const path of ['/admin/queues', '/admin/flows', '/admin/connections', '/admin/audit', `/admin/queues/${enc(QUEUE)}`]) {
      const res = await page.goto(gw.url + path);
      assert.equal(res!.status(), 403, path);
      assert.equal(await page.getByRole('heading', { name: 'Not allowed' }).count(), 1, path);
    }
    assert.ok((await audit('access.denied')).some((e) => e.actor === 'user:clerk' && (e.target === '/admin/queues' || e.target === QUEUE)), 'the refusal is in the audit trail');
    // A real CSRF token of the clerk's own session (the sign-out form), posted to the replay.
    await page.goto(`${gw.url}/`);
    const token = await page.locator('input[name="_csrf"]').first().inputValue();
    const before = await dlqDepth();
    const res = await page.request.post(`${gw.url}/admin/queues/${enc(QUEUE)}/dead/${enc(deadId)}/replay`, { form: { _csrf: token }, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(res.status(), 403);
    assert.match(await res.text(), /may not send on queue:orders\.eu/);
    assert.equal(await dlqDepth(), before, 'nothing was replayed');
    assert.ok((await audit('access.denied')).some((e) => e.actor === 'user:clerk' && e.detail?.includes('send denied on queue:orders.eu')));
  } finally {
    await context.close();
  }
});

test('a form posted without its CSRF token is refused and changes nothing', { timeout: 120_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    const before = await dlqDepth();
    const res = await page.request.post(`${gw.url}/admin/queues/${enc(QUEUE)}/dead/${enc(deadId)}/discard`, { form: {}, headers: { accept: 'text/html' }, maxRedirects: 0 });
    assert.equal(res.status(), 403);
    assert.match(await res.text(), /did not come from this site/);
    assert.equal(await dlqDepth(), before);
  } finally {
    await context.close();
  }
});

test('an admin sees the queues live, and views and replays a dead letter with the keyboard alone after a confirmation; the replay is audited', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/queues`);
    const row = page.locator(`tr[data-address="${QUEUE}"]`);
    assert.equal(await row.locator('[data-k="depth"]').textContent(), '3');
    assert.equal(await row.locator('[data-k="deadLetters"]').textContent(), '1');
    assert.notEqual((await row.locator('[data-k="oldest"]').textContent())?.trim(), '—', 'the oldest message has an age');
    await page.screenshot({ path: join(DOCS, 'console-queues.png'), fullPage: true });
    // Live: a new message shows up in the table without a reload.
    assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: QUEUE, body: { order: 'O-200' } } })).status, 202);
    await page.waitForFunction((a) => document.querySelector(`tr[data-address="${a}"] [data-k="depth"]`)?.textContent === '4', QUEUE, { timeout: 30_000 });

    // Keyboard only: Tab to the queue's link, Enter; Tab to the dead letter's Replay…, Enter; Tab to the button, Enter.
    const tabTo = async (name: string) => {
      for (let i = 0; i < 60; i++) {
        await page.keyboard.press('Tab');
        const focused = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? '');
        if (focused === name) return;
      }
      assert.fail(`Tab never reached '${name}'`);
    };
    await tabTo(QUEUE);
    await Promise.all([page.waitForURL(`**/admin/queues/${enc(QUEUE)}`), page.keyboard.press('Enter')]);
    await tabTo(deadId);
    await Promise.all([page.waitForURL(`**/dead/${enc(deadId)}`), page.keyboard.press('Enter')]);
    assert.match(await page.locator('pre.body').textContent() ?? '', /"order": "O-77"/, 'the dead letter is viewable');
    assert.ok((await page.locator('td.overdue').textContent())?.length, 'its reason is shown');
    await tabTo('Replay…');
    await Promise.all([page.waitForURL('**/replay'), page.keyboard.press('Enter')]);
    assert.match(await page.getByRole('heading', { level: 1 }).textContent() ?? '', /Replay dead letter/);
    assert.equal(await dlqDepth(), 1, 'the confirmation page alone changes nothing');
    await tabTo('Replay');
    await Promise.all([page.waitForURL(`**/admin/queues/${enc(QUEUE)}?done=*`), page.keyboard.press('Enter')]);
    assert.match(await page.getByRole('status').textContent() ?? '', /replayed/);
    assert.equal(await dlqDepth(), 0);
    const browse = await api(gw.url, 'GET', `/api/queues/${enc(QUEUE)}?limit=50`, { user: 'ops' });
    assert.ok(browse.body.messages.some((m: { id: string }) => m.id === deadId), 'the replayed order waits in its queue again');
    assert.ok((await audit('deadletter.replayed')).some((e) => e.actor === 'user:ops' && e.target === `dlq:${QUEUE}` && e.detail?.includes(deadId)));
  } finally {
    await context.close();
  }
});

test('flows are searched by business key (ctx.tag), shown as a timeline and cancelled after a confirmation', { timeout: 180_000 }, async () => {
  const ids: Record<string, string> = {};
  for (const ref of ['INV-1', 'INV-2', 'INV-3']) {
    const r = await api(gw.url, 'POST', '/api/flows/invoice', { user: 'ops', body: { input: { ref } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    ids[ref] = r.body.instanceId;
  }
  for (const id of Object.values(ids)) await waitFor(async () => (await api(gw.url, 'GET', `/api/flows/invoice/${id}`, { user: 'ops' })).body.status === 'waiting', 30_000, 'the instance to wait');
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/flows`);
    await page.fill('#f-tag', 'ref=INV-2');
    await Promise.all([page.waitForURL('**/admin/flows?*'), page.getByRole('button', { name: 'Search' }).click()]);
    const rows = page.locator('#instances tbody tr');
    assert.equal(await rows.count(), 1, 'exactly the instance tagged ref=INV-2');
    assert.equal(await rows.first().locator('a').textContent(), ids['INV-2']);
    await page.goto(`${gw.url}/admin/flows?flow=invoice&status=waiting&startedBy=ops`);
    assert.equal(await rows.count(), 3);
    await page.screenshot({ path: join(DOCS, 'console-flows.png'), fullPage: true });
    await page.goto(`${gw.url}/admin/flows?tag=ref%3DINV-2`);
    await Promise.all([page.waitForURL(`**/admin/flows/invoice/${ids['INV-2']}`), rows.first().locator('a').click()]);
    const timeline = await page.locator('ol.timeline').textContent() ?? '';
    assert.match(timeline, /0\. tag ref/);
    assert.match(timeline, /1\. send queue:invoices\.out/);
    assert.match(timeline, /2\. receive\s+— waiting/);
    assert.equal(await page.locator('a.tag').textContent(), 'ref=INV-2');
    await page.screenshot({ path: join(DOCS, 'console-flow.png'), fullPage: true });
    await Promise.all([page.waitForURL('**/cancel'), page.getByRole('link', { name: 'Cancel…' }).click()]);
    assert.equal((await api(gw.url, 'GET', `/api/flows/invoice/${ids['INV-2']}`, { user: 'ops' })).body.status, 'waiting', 'the confirmation page alone changes nothing');
    await Promise.all([page.waitForURL('**?done=cancelled'), page.getByRole('button', { name: 'Cancel' }).click()]);
    assert.equal(await page.locator('strong.status').textContent(), 'cancelled');
    assert.equal((await api(gw.url, 'GET', `/api/flows/invoice/${ids['INV-2']}`, { user: 'ops' })).body.status, 'cancelled');
    assert.equal((await api(gw.url, 'GET', `/api/flows/invoice/${ids['INV-1']}`, { user: 'ops' })).body.status, 'waiting', 'the others go on');
    assert.ok((await audit('flow.cancelled')).some((e) => e.actor === 'user:ops' && e.target === `flow:invoice/${ids['INV-2']}`));
    // A bad search field is a clear message, not an error page.
    const bad = await page.goto(`${gw.url}/admin/flows?tag=no-equals-sign`);
    assert.equal(bad!.status(), 400);
    assert.match(await page.getByRole('alert').textContent() ?? '', /name=value/);
  } finally {
    await context.close();
  }
});

test('the audit trail is searched and exported as CSV; connections show their state', { timeout: 120_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/audit?action=${enc('deadletter.*')}`);
    assert.ok(await page.locator('#audit tbody tr').count() >= 1);
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#export-csv').click()]);
    const csv = readFileSync((await download.path())!, 'utf8');
    const lines = csv.trim().split('\r\n');
    assert.equal(lines[0], 'at,action,actor,ip,target,detail');
    assert.ok(lines.slice(1).every((l) => l.split(',')[1]!.startsWith('deadletter.')), 'only what was searched');
    assert.ok(lines.some((l) => l.includes('deadletter.replayed') && l.includes(deadId)));
    assert.ok((await audit('audit.exported')).some((e) => e.actor === 'user:ops'), 'the export itself is audited');
    await page.goto(`${gw.url}/admin/connections`);
    assert.match(await page.locator('#connections').textContent() ?? '', /directory\s*file\s*ok/);
  } finally {
    await context.close();
  }
});

test('the flows page is live: an instance that completes changes its row without a reload; bad live requests are refused', { timeout: 180_000 }, async () => {
  const started = await api(gw.url, 'POST', '/api/flows/invoice', { user: 'ops', body: { input: { ref: 'LIVE-1' } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const id = started.body.instanceId as string;
  await waitFor(async () => (await api(gw.url, 'GET', `/api/flows/invoice/${id}`, { user: 'ops' })).body.status === 'waiting', 30_000, 'the instance to wait');
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/flows?flow=invoice&status=waiting`);
    const cell = page.locator(`tr[data-instance="invoice/${id}"] [data-k="status"]`);
    assert.equal(await cell.textContent(), 'waiting');
    await page.waitForFunction(() => document.getElementById('instances')?.hasAttribute('data-updated'), undefined, { timeout: 30_000 });
    assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: `flow:invoice/${id}`, body: { paid: true } } })).status, 202);
    await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'completed', `tr[data-instance="invoice/${id}"] [data-k="status"]`, { timeout: 60_000 });
    assert.equal(await cell.getAttribute('class'), 'status status-completed');
    assert.match(await page.locator('#live-status').textContent() ?? '', /Live, updated/);
    // Hostile streams: a malformed instance, or more rows than a page lists, is a clear 400.
    const bad = await page.request.get(`${gw.url}/admin/flows/live?i=${enc('invoice/../x')}`, { headers: { accept: 'text/html' } });
    assert.equal(bad.status(), 400);
    assert.match(await bad.text(), /each i is an instance as flow\/id/i);
    const many = await page.request.get(`${gw.url}/admin/flows/live?${Array.from({ length: 51 }, (_, i) => `i=invoice/x${i}`).join('&')}`, { headers: { accept: 'text/html' } });
    assert.equal(many.status(), 400);
    assert.match(await many.text(), /at most 50 instances/i);
  } finally {
    await context.close();
  }
});

test('the connections page is live: a webhook that starts retrying changes its row without a reload', { timeout: 180_000 }, async () => {
  const { context, page } = await signIn('ops');
  try {
    await page.goto(`${gw.url}/admin/connections`);
    const row = page.locator('tr[data-key="webhook:crm"]');
    assert.equal(await row.locator('[data-k="state"]').textContent(), 'ok');
    assert.equal(await row.locator('[data-k="outbox"]').textContent(), '0 waiting, 0 dead');
    assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', body: { event: 'live' } } })).status, 202);
    await page.waitForFunction(() => document.querySelector('tr[data-key="webhook:crm"] [data-k="state"]')?.textContent === 'retrying', undefined, { timeout: 60_000 });
    assert.equal(await row.locator('[data-k="state"]').getAttribute('class'), 'overdue');
    assert.equal(await row.locator('[data-k="outbox"]').textContent(), '1 waiting, 0 dead');
    assert.notEqual(await row.locator('[data-k="lastError"]').textContent(), '—', 'the last error is shown');
    await page.screenshot({ path: join(DOCS, 'console-connections.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

test('on a phone-sized screen the console pages fit the width and stay usable', { timeout: 120_000 }, async () => {
  const { context, page } = await signIn('ops', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  try {
    for (const path of ['/admin/queues', `/admin/queues/${enc(QUEUE)}`, '/admin/flows', '/admin/audit', '/admin/connections']) {
      await page.goto(gw.url + path);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${path} scrolls sideways by ${overflow}px`);
    }
    await page.goto(`${gw.url}/admin/queues`);
    assert.ok(await page.locator(`tr[data-address="${QUEUE}"] a`).isVisible());
    await page.screenshot({ path: join(DOCS, 'console-phone.png'), fullPage: true });
  } finally {
    await context.close();
  }
});
