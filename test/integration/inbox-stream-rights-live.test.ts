import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { taskIdFor } from '../../src/people/task-intake.ts';
import { basic } from '../support/attachments.ts';
import { USERS, startTestGateway, testConfig, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Issue 16 goal 4: open inbox streams remember per group whether their user may act there, so a
// task event costs no rule check per stream. What must not change: on an ALREADY OPEN stream, a
// right given through the rules API starts that group's tasks, a right taken away stops them, and
// a task of a group the user may not consume never reaches the stream. A real gateway and
// redis-server; tasks are plain messages to group: addresses (sent as ops), the stream is clerk's.
// A task of clerk's own desk, sent after each probe, marks "everything before it was delivered"
// (one pub/sub channel, one listener: events arrive in order).

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  const base = await testConfig(redis.url);
  gw = await startTestGateway(redis.url, {
    permissions: [
      ...(base.permissions as unknown[]),
      { group: 'ops', allow: [{ address: 'group:**', verbs: ['send'] }] },
      { group: 'clerks', allow: [{ address: 'group:clerks-desk', verbs: ['consume'] }] },
    ],
  });
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

async function signIn(user: keyof typeof USERS): Promise<string> {
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
  return cookie;
}

/** The stream's `event: task` payloads so far. */
async function openStream(cookie: string): Promise<{ events: () => { type: string; taskId?: string }[]; abort(): void }> {
  const ac = new AbortController();
  const res = await fetch(`${gw.url}/inbox/events`, { headers: { cookie, accept: 'text/event-stream' }, redirect: 'manual', signal: ac.signal });
  assert.equal(res.status, 200);
  let text = '';
  void (async () => {
    const reader = res.body!.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        text += Buffer.from(value).toString();
      }
    } catch {
      /* aborted by the test */
    }
  })();
  const events = () => [...text.matchAll(/event: task\ndata: (.*)\n\n/g)].map((m) => JSON.parse(m[1]!) as { type: string; taskId?: string });
  return { events, abort: () => ac.abort() };
}

let seq = 0;
/** A task for `group`, sent as ops; its task id. */
async function taskFor(group: string): Promise<string> {
  const id = `probe-${process.pid}-${++seq}`;
  const to = `group:${group}`;
  const res = await fetch(`${gw.url}/api/messages`, { method: 'POST', headers: { authorization: basic('ops'), 'content-type': 'application/json' }, body: JSON.stringify({ to, id, subject: `probe ${seq}`, body: { seq } }) });
  assert.equal(res.status, 202, await res.text());
  return taskIdFor({ to, id, sender: { kind: 'user', name: 'ops' } });
}

/** Sends a task to `group` then one to clerk's desk; true when the first reached the stream. */
async function reaches(stream: Awaited<ReturnType<typeof openStream>>, group: string): Promise<boolean> {
  const probe = await taskFor(group);
  const marker = await taskFor('clerks-desk');
  await waitFor(async () => stream.events().some((e) => e.taskId === marker), 15_000, 'the marker task on the stream');
  return stream.events().some((e) => e.taskId === probe);
}

test('on an open stream: no right, no task; a right given live brings the group\'s tasks; taken away live, they stop', { timeout: 90_000 }, async () => {
  const stream = await openStream(await signIn('clerk'));
  try {
    assert.equal(await reaches(stream, 'reviewers'), false, 'clerk may not consume group:reviewers: its task must not reach him');
    assert.equal(await reaches(stream, 'reviewers'), false, 'nor the second one (a remembered no)');

    const granted = await fetch(`${gw.url}/api/permissions`, { method: 'POST', headers: { authorization: basic('ops'), 'content-type': 'application/json' }, body: JSON.stringify({ group: 'clerks', address: 'group:reviewers', verbs: ['consume'] }) });
    const grantedText = await granted.text();
    assert.equal(granted.status, 201, grantedText);
    const { rule } = JSON.parse(grantedText) as { rule: { id: string } };
    await waitFor(async () => stream.events().filter((e) => e.type === 'rules-changed').length >= 1, 15_000, 'rules-changed on the stream');
    assert.equal(await reaches(stream, 'reviewers'), true, 'after the grant, group:reviewers tasks reach the open stream');
    assert.equal(await reaches(stream, 'reviewers'), true, 'and keep reaching it (a remembered yes)');

    const revoked = await fetch(`${gw.url}/api/permissions/${encodeURIComponent(rule.id)}`, { method: 'DELETE', headers: { authorization: basic('ops') } });
    assert.equal(revoked.status, 200, await revoked.text());
    await waitFor(async () => stream.events().filter((e) => e.type === 'rules-changed').length >= 2, 15_000, 'rules-changed on the stream after the revocation');
    assert.equal(await reaches(stream, 'reviewers'), false, 'after the revocation, group:reviewers tasks no longer reach the open stream');
    assert.equal(await reaches(stream, 'finance'), false, 'nor does any other group clerk may not consume');
  } finally {
    stream.abort();
  }
});
