// What the console and the dashboard read (issue 18.3 and 18.6): ctx.tag journals a business key
// once (awaited or not) and indexes it, so a search by tag finds the instance without a scan, also after the flow
// replays its journal; a bad tag fails the instance with a clear error; /metrics shows the age of
// a queue's oldest message, flow outcomes, task ages against their due dates and the open tasks
// by due date (on time, late, none); the audit search reads by time range and filters.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { AuditLog } from '../../src/auth/audit.ts';
import type { Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

let redis: TestRedis;
let gw: Gateway;
let dir: string;
let client: Redis;
const PREFIX = `ct${Math.random().toString(36).slice(2, 8)}`;

const HEADER = `import { defineFlow } from 'switchboard';\nimport { z } from 'zod';\n`;
const FLOWS: Record<string, string> = {
  'tagged.ts': `${HEADER}
export default defineFlow({
  name: 'tagged',
  input: z.object({ ref: z.string(), fail: z.boolean().optional() }),
  async run(ctx, input) {
    // Without await, as DESIGN §3 writes it: the step is numbered at the call.
    ctx.tag('ref', input.ref);
    const m = await ctx.receive({ timeout: '1h' });
    await ctx.tag('customer', String((m.body as { customer: string }).customer));
    if (input.fail) throw new Error('asked to fail');
    return { ok: true };
  },
});
`,
  'bad-tag.ts': `${HEADER}
export default defineFlow({
  name: 'bad-tag',
  input: z.object({}),
  async run(ctx) {
    await ctx.tag('no spaces allowed', 'x');
    return {};
  },
});
`,
};

before(async () => {
  redis = await startTestRedis();
  dir = mkdtempSync(join(tmpdir(), 'sb-console-tags-'));
  for (const [f, src] of Object.entries(FLOWS)) writeFileSync(join(dir, f), src);
  client = new Redis(redis.url);
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    // Nobody listens on this port: the webhook's outbox retries, as the connections page shows.
    webhooks: { crm: { url: `http://127.0.0.1:${await freePort()}/hook`, secret: 'a-shared-secret-of-enough-length', backoff: '60s', maxAttempts: 5 } },
    // No sticky instances: every wake replays the journal from the first step.
    flows: { dir, lockTimeout: '3s', stalledCheck: '1s', stickyInstances: 0 },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'send'] }, { address: 'group:**', verbs: ['send'] }, { address: 'webhook:crm', verbs: ['send'] }] },
      { group: 'clerks', allow: [{ address: 'group:approvers', verbs: ['consume', 'browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});

after(async () => {
  client?.disconnect();
  await gw?.stop();
  await redis?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const status = async (flow: string, id: string) => (await api(gw.url, 'GET', `/api/flows/${flow}/${id}`, { user: 'ops' })).body;
const metrics = async () => (await fetch(`${gw.url}/metrics`)).text();

type Page = ((path: string) => Promise<{ status: number; html: string }>) & { post(path: string, form: Record<string, string>): Promise<{ status: number; html: string }>; firstEvent(path: string): Promise<{ event: string; data: unknown }> };

/** Signs in through the login form (its CSRF token and session cookie); returns a GET (and POST) for pages. */
async function signIn(user: keyof typeof USERS): Promise<Page> {
  const login = await fetch(`${gw.url}/login`);
  let cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await login.text())![1]!;
  const res = await fetch(`${gw.url}/login`, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ username: user, password: USERS[user], _csrf: csrf, next: '/' }) });
  assert.equal(res.status, 303);
  cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const get = async (path: string) => {
    const r = await fetch(gw.url + path, { headers: { cookie, accept: 'text/html' }, redirect: 'manual' });
    return { status: r.status, html: await r.text() };
  };
  const post = async (path: string, form: Record<string, string>) => {
    const r = await fetch(gw.url + path, { method: 'POST', headers: { cookie, accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form), redirect: 'manual' });
    return { status: r.status, html: await r.text() };
  };
  // A live stream never ends on its own: read up to its first event, then hang up.
  const firstEvent = async (path: string) => {
    const ac = new AbortController();
    const r = await fetch(gw.url + path, { headers: { cookie, accept: 'text/event-stream' }, signal: ac.signal });
    assert.equal(r.status, 200, path);
    const reader = r.body!.getReader();
    let text = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ${path} ended before its first event`);
        text += Buffer.from(value).toString('utf8');
        const m = /event: (\w+)\ndata: (.*)\n\n/.exec(text);
        if (m) return { event: m[1]!, data: JSON.parse(m[2]!) as unknown };
      }
    } finally {
      ac.abort();
    }
  };
  return Object.assign(get, { post, firstEvent });
}

/** Instance ids in the console's search results. */
const instanceIds = (html: string) => [...html.matchAll(/href="\/admin\/flows\/[\w-]+\/([\w-]+)"/g)].map((m) => m[1]);

test('ctx.tag is journaled once and indexed: the search finds the instance by tag, also after replays, and the flow outcomes are counted', { timeout: 120_000 }, async () => {
  const ids: string[] = [];
  for (const [ref, fail] of [['R-1', false], ['R-2', true], ['R-3', false]] as const) {
    const r = await api(gw.url, 'POST', '/api/flows/tagged', { user: 'ops', body: { input: { ref, fail } } });
    assert.equal(r.status, 202);
    ids.push(r.body.instanceId);
  }
  for (const id of ids) await waitFor(async () => (await status('tagged', id)).status === 'waiting', 30_000, 'waiting');
  // Two messages to each wake them; without sticky instances every run replays tag steps.
  for (const [i, customer] of [[0, 'acme'], [1, 'globex']] as const) {
    assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: `flow:tagged/${ids[i]}`, body: { customer } } })).status, 202);
  }
  await waitFor(async () => (await status('tagged', ids[0]!)).status === 'completed', 30_000, 'R-1 to complete');
  await waitFor(async () => (await status('tagged', ids[1]!)).status === 'failed', 30_000, 'R-2 to fail');
  const page = await signIn('ops');
  const search = async (q: string) => {
    const r = await page(`/admin/flows?${q}`);
    assert.equal(r.status, 200, r.html);
    return instanceIds(r.html);
  };
  assert.deepEqual(await search('tag=ref%3DR-1'), [ids[0]]);
  assert.deepEqual(await search('tag=customer%3Dglobex'), [ids[1]]);
  assert.deepEqual(await search('tag=ref%3DR-404'), []);
  // Filters on top of the tag index: status, starter, flow, dates.
  assert.deepEqual(await search('tag=ref%3DR-2&status=completed'), []);
  assert.deepEqual(await search('tag=ref%3DR-2&status=failed'), [ids[1]]);
  assert.deepEqual(await search('flow=tagged&status=waiting'), [ids[2]]);
  assert.equal((await search('flow=tagged&startedBy=ops')).length, 3);
  assert.equal((await search('flow=tagged&startedBy=clerk')).length, 0);
  const today = new Date().toISOString().slice(0, 10);
  assert.equal((await search(`flow=tagged&from=${today}&to=${today}`)).length, 3);
  assert.equal((await search('flow=tagged&to=2020-01-01')).length, 0, 'none created before 2020');
  const bad = await page('/admin/flows?from=yesterday');
  assert.equal(bad.status, 400);
  assert.match(bad.html, /&#39;from&#39; must be a date like 2026-12-01|'from' must be a date like 2026-12-01/);
  const view = await status('tagged', ids[0]!);
  assert.deepEqual(view.tags, { ref: 'R-1', customer: 'acme' });
  assert.equal(view.steps.filter((s: { kind: string }) => s.kind === 'tag').length, 2, 'each tag journaled once despite the replays');
  // The index holds each instance once.
  const members = await client.zrange(`${PREFIX}:flow-tag:ref=R-1`, 0, -1);
  assert.deepEqual(members, [`tagged/${ids[0]}`]);

  assert.equal((await api(gw.url, 'POST', `/api/flows/tagged/${ids[2]}/cancel`, { user: 'ops' })).status, 200);
  const text = await metrics();
  for (const outcome of ['completed', 'failed', 'cancelled']) assert.match(text, new RegExp(`switchboard_flow_outcomes_total\\{flow="tagged",outcome="${outcome}"\\} 1\\b`), outcome);
});

test('a bad tag name fails the instance with a clear error naming it', { timeout: 60_000 }, async () => {
  const r = await api(gw.url, 'POST', '/api/flows/bad-tag', { user: 'ops', body: { input: {} } });
  assert.equal(r.status, 202);
  const v = await waitFor(async () => {
    const s = await status('bad-tag', r.body.instanceId);
    return s.status === 'failed' ? s : undefined;
  }, 30_000, 'bad-tag to fail');
  assert.match(v.error.message, /ctx\.tag: 'no spaces allowed' is not a tag name/);
});

test('/metrics shows the age of the oldest waiting message per queue, and task ages at decision against their due dates', { timeout: 60_000 }, async () => {
  const q = 'queue:ages.demo';
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: q, body: { n: 1 } } })).status, 202);
  await new Promise((r) => setTimeout(r, 1500));
  const age = Number(/switchboard_queue_oldest_message_age_seconds\{address="queue:ages\.demo"\} ([\d.]+)/.exec(await metrics())?.[1]);
  assert.ok(age >= 1 && age < 120, `oldest age ${age}`);
  const stats = await gw.router.queueStats(q, SYSTEM_CALLER);
  assert.equal(stats.address, q);
  assert.equal(stats.depth, 1);
  assert.ok(stats.inPerSecond > 0, 'the accepted message counts in the rate');
  // Taken away: the age goes back to 0.
  const got = await api(gw.url, 'POST', `/api/queues/${enc(q)}/receive`, { user: 'ops', body: { max: 1 } });
  await api(gw.url, 'POST', `/api/queues/${enc(q)}/ack`, { user: 'ops', body: { leases: [got.body.messages[0].lease] } });
  assert.match(await metrics(), /switchboard_queue_oldest_message_age_seconds\{address="queue:ages\.demo"\} 0\b/);

  for (const [title, due] of [['on time', '1h'], ['no due date', undefined]] as const) {
    const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'group:approvers', body: { title, actions: ['ok'], ...(due ? { due } : {}) } } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const id = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'clerk' })).body.tasks.find((t: { title: string }) => t.title === title)?.id, 20_000, title) as string;
    assert.equal((await api(gw.url, 'POST', `/api/tasks/${id}/decision`, { user: 'clerk', body: { action: 'ok' } })).status, 200);
  }
  const text = await metrics();
  assert.match(text, /switchboard_task_decision_age_seconds_count\{due="on_time"\} 1\b/);
  assert.match(text, /switchboard_task_decision_age_seconds_count\{due="none"\} 1\b/);
  assert.doesNotMatch(text, /switchboard_task_decision_age_seconds_count\{due="late"\} [1-9]/);
});

test('the audit search reads a time range with filters, newest first', { timeout: 30_000 }, async () => {
  const t0 = Date.now();
  const audit = new AuditLog(client, PREFIX, createLogger('error'));
  for (let i = 0; i < 5; i++) await audit.record({ action: i % 2 ? 'console.test.odd' : 'console.test.even', actor: 'user:ops', target: `thing-${i}`, detail: i === 3 ? 'the Needle is here' : 'hay' });
  const even = await audit.search({ action: 'console.test.even', limit: 10, since: t0 });
  assert.deepEqual(even.map((e) => e.target), ['thing-4', 'thing-2', 'thing-0']);
  assert.deepEqual((await audit.search({ action: 'console.test.*', text: 'needle', limit: 10 })).map((e) => e.target), ['thing-3']);
  assert.equal((await audit.search({ action: 'console.test.*', limit: 10, until: t0 - 1 })).length, 0);
  assert.equal((await audit.search({ action: 'console.test.*', limit: 2 })).length, 2);
});

test('a user who may browse only their group sees none of the rest: queues, dead-letter actions, flows, the audit trail and the directory are refused or hidden, audited, unchanged', { timeout: 60_000 }, async () => {
  const q = 'queue:secret.orders';
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { id: 'secret-1', to: q, body: { n: 1 } } })).status, 202);
  const started = await api(gw.url, 'POST', '/api/flows/tagged', { user: 'ops', body: { input: { ref: 'SECRET' } } });
  const id = started.body.instanceId as string;
  await waitFor(async () => (await status('tagged', id)).status === 'waiting', 30_000, 'waiting');
  const clerk = await signIn('clerk');
  const list = await clerk('/admin/queues');
  assert.equal(list.status, 200, 'browse on its group opens the console');
  assert.doesNotMatch(list.html, /secret\.orders/, 'a queue it may not browse is not listed');
  for (const path of [`/admin/queues/${enc(q)}`, `/admin/queues/${enc(q)}/messages/secret-1`, `/admin/queues/${enc(q)}/dead/secret-1/discard`, '/admin/audit', '/admin/audit.csv']) {
    assert.equal((await clerk(path)).status, 403, path);
  }
  const token = /name="_csrf" value="([^"]+)"/.exec(list.html)![1]!;
  const refused = await clerk.post(`/admin/queues/${enc(q)}/dead/secret-1/discard`, { _csrf: token });
  assert.equal(refused.status, 403);
  assert.match(refused.html, /User:clerk may not consume on queue:secret\.orders/);
  const denied = (await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc('user:clerk')}&limit=50`, { user: 'ops' })).body.entries as { target?: string; detail?: string }[];
  assert.ok(denied.some((e) => e.target === q && e.detail === `consume denied on ${q} (http door, discardDeadLetters)`), 'the refused discard is audited');
  assert.ok(denied.some((e) => e.target === '**' && e.detail === 'admin denied on **'), 'the refused audit page is audited');
  // Flows it did not start and may not browse: not listed, 404 (ids cannot be probed), cancel refused, nothing changed.
  assert.deepEqual(instanceIds((await clerk('/admin/flows?flow=tagged')).html), []);
  assert.equal((await clerk(`/admin/flows/tagged/${id}`)).status, 404);
  assert.equal((await clerk.post(`/admin/flows/tagged/${id}/cancel`, { _csrf: token })).status, 404);
  assert.equal((await status('tagged', id)).status, 'waiting');
  // Its live flows stream, asked for that instance by id, leaves it out; the starter's shows it.
  assert.deepEqual(await clerk.firstEvent(`/admin/flows/live?i=tagged/${id}`), { event: 'instances', data: [] });
  const seen = (await (await signIn('ops')).firstEvent(`/admin/flows/live?i=tagged/${id}&i=tagged/no-such-instance`)).data as { instanceId: string; status: string }[];
  assert.deepEqual(seen.map((r) => [r.instanceId, r.status]), [[id, 'waiting']], 'a missing instance is left out too');
  // Nor do its live connections carry the directory.
  const live = await clerk.firstEvent('/admin/connections/live');
  assert.equal(live.event, 'connections');
  assert.ok(!(live.data as { kind: string }[]).some((c) => c.kind === 'directory'));
  const conns = await clerk('/admin/connections');
  assert.equal(conns.status, 200);
  assert.doesNotMatch(conns.html, /<td data-label="Kind">directory/, 'the directory needs admin on **');
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc(q)}`, { user: 'ops' })).body.depth, 1, 'the queue is as it was');
});

test('the connections page shows a webhook that cannot deliver: retrying, its outbox, the next retry and the last error; and the directory', { timeout: 60_000 }, async () => {
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:crm', body: { event: 'x' } } })).status, 202);
  const ops = await signIn('ops');
  const row = (await waitFor(async (): Promise<string | undefined> => {
    const html = (await ops('/admin/connections')).html;
    const m = /<td data-label="Kind">webhook<\/td>([\s\S]*?)<\/tr>/.exec(html);
    return m && /retrying/.test(m[1]!) ? m[1]! : undefined;
  }, 30_000, 'the webhook to be retrying'))!;
  assert.match(row, /crm/);
  assert.match(row, /1 waiting, 0 dead/);
  const next = /data-label="Next retry"[^>]*>([^<]+)</.exec(row)![1]!;
  assert.ok(Date.parse(`${next.replace(' ', 'T')}Z`) > Date.now() + 10_000, `the next retry (${next}) is the 60 s backoff away`);
  assert.doesNotMatch(/data-label="Last error"[^>]*>([^<]+)</.exec(row)![1]!, /^—$/, 'the last error is shown');
  assert.match((await ops('/admin/connections')).html, /<td data-label="Kind">directory<\/td>\s*<th scope="row" data-label="Name">file<\/th>\s*<td data-label="State" data-k="state" class="">ok/);
});

test('/metrics counts open tasks by due date: a new task counts at once, a past due date counts as late, a decision takes it away', { timeout: 90_000 }, async () => {
  const open = async () => {
    const text = await metrics();
    const n = (due: string) => Number(new RegExp(`switchboard_tasks_open\\{due="${due}"\\} (\\d+)`).exec(text)?.[1] ?? NaN);
    return { on_time: n('on_time'), late: n('late'), none: n('none') };
  };
  const base = await open();
  for (const v of Object.values(base)) assert.ok(Number.isInteger(v), `every series is there: ${JSON.stringify(base)}`);
  const hour = 3_600_000;
  const tasks = [
    ['open-late-1', new Date(Date.now() - hour).toISOString()],
    ['open-late-2', new Date(Date.now() - 2 * hour).toISOString()],
    ['open-on-time', '2h'],
    ['open-undated', undefined],
  ] as const;
  const ids: Record<string, string> = {};
  for (const [title, due] of tasks) {
    const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'group:approvers', body: { title, actions: ['ok'], ...(due ? { due } : {}) } } });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    ids[title] = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'clerk' })).body.tasks.find((t: { title: string }) => t.title === title)?.id, 20_000, title) as string;
  }
  assert.deepEqual(await open(), { on_time: base.on_time + 1, late: base.late + 2, none: base.none + 1 });
  const decide = async (title: string) => assert.equal((await api(gw.url, 'POST', `/api/tasks/${ids[title]}/decision`, { user: 'clerk', body: { action: 'ok' } })).status, 200);
  await decide('open-late-1');
  await decide('open-undated');
  assert.deepEqual(await open(), { on_time: base.on_time + 1, late: base.late + 1, none: base.none });
  // Deciding twice is refused and counts nothing twice.
  assert.equal((await api(gw.url, 'POST', `/api/tasks/${ids['open-late-1']}/decision`, { user: 'clerk', body: { action: 'ok' } })).status, 409);
  await decide('open-late-2');
  await decide('open-on-time');
  assert.deepEqual(await open(), base);
  // Scrape cost: the gauge reads its per-shard index, never a keyspace scan.
  assert.equal(await client.zcard(`${PREFIX}:{tasks}:open-by-due`), base.on_time + base.late + base.none);
});
