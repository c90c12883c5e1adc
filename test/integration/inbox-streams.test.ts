import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { USERS, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 13.5: live inbox streams (server-sent events) are capped per user (http.inboxStreamsPerUser,
// 5 by default): a sixth is refused 429 with the reason and the five stay open; logout ends that
// session's streams at once; a session ended elsewhere (its store entry gone) ends its streams
// within the session check. The console's live pages (queues, connections) count against the
// same cap and end with the session the same way.

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

/** A signed-in web session: its cookie and a CSRF token for its forms. */
async function signIn(user: keyof typeof USERS): Promise<{ cookie: string; csrf: string }> {
  const page = await fetch(`${gw.url}/login`, { redirect: 'manual' });
  let cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
  const login = await fetch(`${gw.url}/login`, {
    method: 'POST', redirect: 'manual',
    headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: csrf, username: user, password: USERS[user], next: '/' }).toString(),
  });
  assert.equal(login.status, 303, await login.text());
  cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ') || cookie;
  const home = await fetch(`${gw.url}/`, { headers: { cookie }, redirect: 'manual' });
  const token = /name="_csrf" value="([^"]+)"/.exec(await home.text())?.[1] ?? csrf;
  return { cookie, csrf: token };
}

interface Stream {
  status: number;
  text: string;
  /** Resolves when the server ends the stream, with everything it sent. */
  ended: Promise<string>;
  abort(): void;
}

async function openStream(cookie: string, path = '/inbox/events'): Promise<Stream> {
  const ac = new AbortController();
  const res = await fetch(gw.url + path, { headers: { cookie, accept: 'text/event-stream' }, redirect: 'manual', signal: ac.signal });
  if (res.status !== 200) return { status: res.status, text: await res.text(), ended: Promise.resolve(''), abort: () => ac.abort() };
  let text = '';
  const ended = (async () => {
    const reader = res.body!.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += Buffer.from(value).toString();
      }
    } catch {
      return text; // aborted by the test
    }
  })();
  return { status: 200, get text() { return text; }, ended, abort: () => ac.abort() };
}

const settled = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

test('a user may hold 5 live streams; the sixth is refused 429 with the reason; closing one makes room', async () => {
  const s = await signIn('ops');
  const streams: Stream[] = [];
  for (let i = 0; i < 5; i++) {
    const st = await openStream(s.cookie);
    assert.equal(st.status, 200, `stream ${i + 1}`);
    streams.push(st);
  }
  const sixth = await openStream(s.cookie);
  assert.equal(sixth.status, 429);
  assert.match(sixth.text, /already has 5 live inbox streams open/);
  // Another session of the same user counts too: the cap is per user.
  const other = await signIn('ops');
  assert.equal((await openStream(other.cookie)).status, 429);
  for (const st of streams) assert.equal(await settled(st.ended, 100), false, 'the five stay open');

  streams[0]!.abort();
  await streams[0]!.ended;
  const again = await waitFor(async () => {
    const st = await openStream(s.cookie);
    if (st.status === 200) return st;
    return undefined;
  }, 5000, 'room for a new stream');
  streams[0] = again!;
  for (const st of streams) st.abort();
});

test('logout ends that session’s streams at once, and only that session’s', async () => {
  const a = await signIn('clerk');
  const b = await signIn('clerk');
  const mine = [await openStream(a.cookie), await openStream(a.cookie)];
  const theirs = await openStream(b.cookie);
  for (const st of [...mine, theirs]) assert.equal(st.status, 200);

  const out = await fetch(`${gw.url}/logout`, { method: 'POST', redirect: 'manual', headers: { cookie: a.cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: a.csrf }).toString() });
  assert.equal(out.status, 303);
  for (const st of mine) {
    assert.equal(await settled(st.ended, 2000), true, 'the stream ended with the session');
    assert.match(await st.ended, /event: end\ndata: \{"reason":"signed out"\}/);
  }
  assert.equal(await settled(theirs.ended, 200), false, 'the other session keeps its stream');
  // The ended session cannot open another one.
  const after = await openStream(a.cookie);
  assert.equal(after.status, 303);
  theirs.abort();
});

test('the console live pages share the cap with the inbox and end at logout', async () => {
  const s = await signIn('ops');
  const paths = ['/admin/queues/live', '/admin/connections/live', '/inbox/events', '/admin/connections/live', '/admin/queues/live'];
  const streams: Stream[] = [];
  for (const path of paths) {
    const st = await openStream(s.cookie, path);
    assert.equal(st.status, 200, path);
    streams.push(st);
  }
  for (const path of ['/admin/connections/live', '/admin/queues/live', '/inbox/events']) {
    const refused = await openStream(s.cookie, path);
    assert.equal(refused.status, 429, path);
    assert.match(refused.text, /already has 5 live (inbox )?streams open/);
  }
  // The first rows come at once, read for this user.
  await waitFor(async () => /event: connections\ndata: \[.*"kind":"directory"/.test(streams[1]!.text), 10_000, 'the first connections event');
  const out = await fetch(`${gw.url}/logout`, { method: 'POST', redirect: 'manual', headers: { cookie: s.cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: s.csrf }).toString() });
  assert.equal(out.status, 303);
  for (const st of streams) {
    assert.equal(await settled(st.ended, 5000), true, 'every stream ended with the session');
    assert.match(await st.ended, /event: end\ndata: \{"reason":"signed out"\}/);
  }
  assert.equal((await openStream(s.cookie, '/admin/queues/live')).status, 303, 'the ended session is sent to the login page');
});

test('a session that ends elsewhere (gone from the store) ends its streams within the session check', async () => {
  const s = await signIn('nobody');
  const st = await openStream(s.cookie);
  assert.equal(st.status, 200);
  // Another process logging the session out deletes it from Redis; nothing tells this process.
  const { Redis } = await import('ioredis');
  const r = new Redis(redis.url);
  try {
    const keys = (await r.keys('*:sess:*'));
    assert.ok(keys.length > 0);
    await r.del(...keys);
  } finally {
    r.disconnect();
  }
  assert.equal(await settled(st.ended, 15_000), true, 'the stream noticed its session is gone');
  assert.match(await st.ended, /"reason":"session ended"/);
});

test('a stream whose client left while its session was being read holds no place: five such leave the user all five', async () => {
  // A page left at once: the browser closes the connection while the login check still waits
  // for the session from Redis. The stream handler then runs for a connection already closed,
  // whose 'close' has fired; it must open nothing. (A stream opened then was never closed: it
  // kept its place under the cap for good, and its timers kept the process alive.)
  const s = await signIn('nobody');
  const { Redis } = await import('ioredis');
  const { request } = await import('node:http');
  const admin = new Redis(redis.url);
  try {
    const port = Number(new URL(gw.url).port);
    for (let i = 0; i < 5; i++) {
      // Every client's commands wait for 600 ms, the session read included: the window in
      // which the client leaves, made as wide as a test can see.
      await admin.call('CLIENT', 'PAUSE', '600', 'ALL');
      const req = request({ host: '127.0.0.1', port, path: '/inbox/events', headers: { cookie: s.cookie, accept: 'text/event-stream' } });
      req.on('error', () => undefined); // destroyed below, on purpose
      req.end();
      await new Promise((r) => setTimeout(r, 200));
      req.destroy();
      // Past the pause: the session is read and the handler has run for the closed connection.
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(await admin.ping(), 'PONG');
    }
  } finally {
    admin.disconnect();
  }
  const streams: Stream[] = [];
  for (let i = 0; i < 5; i++) {
    const st = await openStream(s.cookie);
    assert.equal(st.status, 200, `stream ${i + 1} after five left early: ${st.text}`);
    streams.push(st);
  }
  const sixth = await openStream(s.cookie);
  assert.equal(sixth.status, 429, 'the cap still counts the streams that are open');
  for (const st of streams) st.abort();
});
