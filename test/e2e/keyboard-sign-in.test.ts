import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { startTestGateway } from '../support/gateway.ts';
import { ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The web login in a real headless Chromium, keyboard only, against a real slapd and redis-server:
// sign in, see the home page, the session cookie's flags as the browser sees them, sign out.
// The login's HTTP rules (CSRF, fixation, redirects, escaping) are in test/integration/web-login.test.ts.

let redis: TestRedis;
let ldap: TestLdap;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  ldap = await startTestLdap();
  gw = await startTestGateway(redis.url, { directory: ldapDirectoryConfig(ldap.url) });
});
after(async () => {
  await gw?.stop();
  await ldap?.dispose();
  await redis?.dispose();
});

test('in headless Chromium: sign in with the keyboard, see the home page, sign out', { timeout: 180_000 }, async () => {
  const browser = await launchChromium();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(60_000);
    await page.goto(`${gw.url}/`);
    assert.equal(new URL(page.url()).pathname, '/login');
    assert.equal(await page.title(), 'Sign in · Switchboard');

    await page.locator('#username').focus();
    await page.keyboard.type('alice');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'password', 'Tab moves from the user name to the password');
    await page.keyboard.type('alice-pw');
    await Promise.all([page.waitForURL(`${gw.url}/`), page.keyboard.press('Enter')]);

    assert.equal((await page.locator('h1').textContent())?.trim(), 'Hello, alice');
    assert.match((await page.locator('header .me').textContent()) ?? '', /Signed in as\s+alice/);
    const [cookie] = (await context.cookies()).filter((c) => c.name === 'sb.sid');
    assert.ok(cookie, 'a session cookie');
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, 'Lax');
    assert.equal(await page.evaluate(() => document.cookie.includes('sb.sid')), false, 'scripts cannot read the session cookie');

    await page.getByRole('button', { name: 'Sign out' }).focus();
    await Promise.all([page.waitForURL(/\/login$/), page.keyboard.press('Enter')]);
    assert.equal((await page.locator('h1').textContent())?.trim(), 'Sign in');

    await page.goto(`${gw.url}/`);
    assert.equal(new URL(page.url()).pathname, '/login', 'signed out for real');
  } finally {
    await browser.close();
  }
});
