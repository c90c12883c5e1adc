/**
 * Issue 15.2: the core paths of the gateway, each once through its real door, on a real
 * 3-master Redis Cluster (the rest of the suite runs them on one redis-server, so `npm test` runs
 * them both ways). One gateway, redis.cluster.nodes, a password:
 * - HTTP API: send, dedup (a resend is a duplicate), peek-lock receive and ack; a route moving
 *   messages from one queue to another, each exactly once;
 * - a flow with a timer (ctx.sleep), an ask whose task is escalated at its due date by the people
 *   follow-ups, decided over the API, then a webhook and an e-mail through their outboxes;
 * - flow runs sharded (12 shards on a cluster): instances' timers land in more than one
 *   `{flow-runs.<i>.<n>}` queue, each in the queue of its instance's shard, none in `{flow-runs}`;
 * - a webhook answering 400: the message is in dlq:webhook:… and replays from there;
 * - web login (session store on the cluster), the login limiter, API tokens (create, use,
 *   revoke), a console permission rule that applies at once.
 * Every server is stopped by PID.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { shardOf, shardTag } from '../../src/store/redis.ts';
import { assertExactlyOnce, drain, sendAll } from '../support/counting-sink.ts';
import { api, enc, testConfig, waitFor } from '../support/gateway.ts';
import { startTestCluster, type TestCluster } from '../support/redis-cluster.ts';

const PASSWORD = 'core-paths-pw-1234';
const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'cluster-trip',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    await ctx.sleep('1s');
    const d = await ctx.ask('group:cl-approvers', { title: 'Approve ' + input.ref, actions: ['approve', 'reject'], due: '1s', escalateTo: 'group:cl-seniors' });
    await ctx.send('webhook:crm', { ref: input.ref, action: d.action });
    await ctx.send('email:boss@example.com', { subject: 'Trip ' + input.ref, text: 'decided: ' + d.action });
    return { action: d.action, by: d.by };
  },
});
`;

const NAP = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'cluster-nap',
  input: z.object({ n: z.number() }),
  async run(ctx) {
    await ctx.sleep('10m');
    return 'rested';
  },
});
`;

let cluster: TestCluster;
let gw: Gateway;
let flowsDir: string;
let hooks: Server;
let smtp: SMTPServer;
const posted: { path: string; body: string }[] = [];
const mails: { to: string; subject: string }[] = [];
const started = Date.now();

before(async () => {
  cluster = await startTestCluster({ masters: 3, password: PASSWORD });
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-cl-flows-'));
  writeFileSync(join(flowsDir, 'cluster-trip.ts'), FLOW);
  writeFileSync(join(flowsDir, 'cluster-nap.ts'), NAP);
  const hookPort = await freePort();
  hooks = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      posted.push({ path: req.url ?? '', body });
      res.statusCode = req.url === '/refuse' ? 400 : 200;
      res.end();
    });
  });
  await new Promise<void>((r) => hooks.listen(hookPort, '127.0.0.1', () => r()));
  const smtpPort = await freePort();
  smtp = new SMTPServer({
    authOptional: true, disabledCommands: ['STARTTLS'], logger: false,
    onData: (stream, session, cb) => void simpleParser(stream).then((m) => { mails.push({ to: session.envelope.rcptTo.map((r) => r.address).join(','), subject: m.subject ?? '' }); cb(); }, cb),
  });
  await new Promise<void>((r) => smtp.listen(smtpPort, '127.0.0.1', () => r()));

  const raw = await testConfig('unused', {
    redis: { cluster: { nodes: cluster.urls }, password: '${REDIS_PASSWORD}', prefix: 'core' },
    routes: [{ from: 'queue:cl.in', to: 'queue:cl.out' }],
    queues: { limits: [{ address: 'queue:cl.bounded', maxDepth: 10 }] },
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
    email: { smtp: `smtp://127.0.0.1:${smtpPort}`, from: 'switchboard@example.com', backoff: '200ms', maxAttempts: 5 },
    webhooks: {
      crm: { url: `http://127.0.0.1:${hookPort}/crm`, secret: 'crm-secret-1234567890', backoff: '100ms', maxAttempts: 3 },
      refusing: { url: `http://127.0.0.1:${hookPort}/refuse`, secret: 'refuse-secret-1234567890', backoff: '100ms', maxAttempts: 3 },
    },
    people: { reminders: [] },
    http: { port: 0, host: '127.0.0.1', loginLimits: { perUser: 3, perIp: 100, window: '15m' } },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'webhook:**', verbs: ['send', 'browse'] }, { address: 'group:cl-approvers', verbs: ['consume'] }, { address: 'group:cl-seniors', verbs: ['consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  const config = parseConfig(stringify(raw), 'core-paths.yaml', { REDIS_PASSWORD: PASSWORD });
  gw = await startGateway({ config, log: createLogger('warn') });
});

after(async () => {
  await gw?.stop();
  await new Promise<void>((r) => (hooks ? hooks.close(() => r()) : r()));
  await new Promise<void>((r) => (smtp ? smtp.close(() => r()) : r()));
  await cluster?.stop();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

test('queues, dedup and a route on the cluster: every id exactly once, a resend is a duplicate', { timeout: 120_000 }, async () => {
  const ids = Array.from({ length: 60 }, (_, i) => `cl-${i}`);
  await sendAll(gw.url, 'queue:cl.in', ids);
  const again = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:cl.in', id: 'cl-7', body: {} } });
  assert.equal(again.status, 202, JSON.stringify(again.body));
  assert.equal(again.body.duplicate, true);
  const counts = new Map<string, number>();
  await waitFor(async () => { await drain(gw.url, 'queue:cl.out', counts); return counts.size >= ids.length; }, 60_000, 'the route to move every message');
  await new Promise((r) => setTimeout(r, 500));
  await drain(gw.url, 'queue:cl.out', counts);
  assertExactlyOnce(ids, counts);
});

test('a bounded queue on the cluster: 40 sends at once store exactly its maxDepth of 10, the rest are 503', { timeout: 60_000 }, async () => {
  const sends = await Promise.all(Array.from({ length: 40 }, (_, i) => api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:cl.bounded', id: `b-${i}`, body: {} } })));
  const statuses = sends.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 202).length, 10, JSON.stringify(statuses));
  assert.equal(statuses.filter((s) => s === 503).length, 30, JSON.stringify(statuses));
  assert.match(sends.find((r) => r.status === 503)!.body.error.message, /the queue is full \(10 messages, maxDepth 10\)/);
  const counts = new Map<string, number>();
  await drain(gw.url, 'queue:cl.bounded', counts);
  assert.equal(counts.size, 10);
});

test('a flow with a timer and an ask, escalated by the follow-ups, decided over the API, then a webhook and an e-mail', { timeout: 120_000 }, async () => {
  const start = await api(gw.url, 'POST', '/api/flows/cluster-trip', { user: 'ops', body: { input: { ref: 'T-1' } } });
  assert.equal(start.status, 202, JSON.stringify(start.body));
  // The ask goes to cl-approvers, is due after 1 s, and the follow-up job moves it to cl-seniors.
  const task = await waitFor(async () => {
    const r = await api(gw.url, 'GET', '/api/tasks', { user: 'ops' });
    return (r.body.tasks as { id: string; title: string; group?: string }[]).find((t) => t.title === 'Approve T-1' && t.group === 'cl-seniors');
  }, 30_000, 'the task, escalated to cl-seniors') as { id: string };
  const decided = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  const view = await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/flows/cluster-trip/${start.body.instanceId}`, { user: 'ops' });
    return ['completed', 'failed'].includes(r.body.status) ? r.body : undefined;
  }, 30_000, 'the flow to finish');
  assert.equal(view.status, 'completed', JSON.stringify(view));
  assert.deepEqual(view.result, { action: 'approve', by: 'user:ops' });
  await waitFor(async () => posted.some((p) => p.path === '/crm' && JSON.parse(p.body).ref === 'T-1'), 20_000, 'the webhook POST');
  await waitFor(async () => mails.some((m) => m.to === 'boss@example.com' && m.subject === 'Trip T-1'), 20_000, 'the e-mail');
});

test('flow runs are sharded: timers of 12 instances sit in more than one {flow-runs.<i>.<n>} queue, each in its instance\'s shard', { timeout: 60_000 }, async () => {
  const ids: string[] = [];
  for (let n = 0; n < 12; n++) {
    const r = await api(gw.url, 'POST', '/api/flows/cluster-nap', { user: 'ops', body: { input: { n } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    ids.push(r.body.instanceId as string);
  }
  // Each instance parks in ctx.sleep('10m'): its timer is a delayed job `t-<id>-<step>` in its queue.
  const queueOf = new Map<string, string>();
  await waitFor(async () => {
    for (const port of cluster.masters()) {
      for (const key of cluster.cli(port, '--scan', '--pattern', 'core:{flow-runs*}:t-*').split('\n').filter(Boolean)) {
        const id = ids.find((i) => key.includes(`}:t-${i}-`));
        if (id) queueOf.set(id, key.slice(key.indexOf('{') + 1, key.indexOf('}')));
      }
    }
    return queueOf.size === ids.length;
  }, 30_000, 'a timer job of every instance');
  for (const id of ids) assert.equal(queueOf.get(id), shardTag('flow-runs', shardOf(id, 12)), `the queue of instance ${id}`);
  const queues = new Set(queueOf.values());
  assert.ok(queues.size > 1, `flow runs in more than one queue: ${[...queues].join(', ')}`);
  assert.ok(!queues.has('flow-runs'), 'no run in the unsharded {flow-runs}');
});

test('a webhook that answers 400: the message is dead-lettered, and replays from the DLQ', { timeout: 60_000 }, async () => {
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'webhook:refusing', id: 'dl-1', body: { n: 1 } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const dlq = await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/dlq/${enc('webhook:refusing')}`, { user: 'ops' });
    return r.status === 200 && r.body.depth === 1 ? r.body : undefined;
  }, 20_000, 'the dead letter');
  assert.equal(dlq.messages[0].id, 'dl-1');
  const calls = posted.filter((p) => p.path === '/refuse').length;
  const replay = await api(gw.url, 'POST', `/api/dlq/${enc('webhook:refusing')}/replay`, { user: 'ops', body: {} });
  assert.equal(replay.status, 200, JSON.stringify(replay.body));
  await waitFor(async () => posted.filter((p) => p.path === '/refuse').length > calls, 20_000, 'the replayed POST');
});

test('web login with its session on the cluster, the login limiter, tokens and a console rule', { timeout: 60_000 }, async () => {
  // Web login: CSRF token and session from GET /login, then POST /login.
  const cookies = new Map<string, string>();
  const web = async (method: string, path: string, form?: Record<string, string>) => {
    const res = await fetch(gw.url + path, {
      method, redirect: 'manual',
      headers: { accept: 'text/html', ...(cookies.size ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}), ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      ...(form ? { body: new URLSearchParams(form).toString() } : {}),
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      cookies.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1));
    }
    return { status: res.status, text: await res.text() };
  };
  const page = await web('GET', '/login');
  assert.equal(page.status, 200);
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
  const login = await web('POST', '/login', { _csrf: csrf, username: 'ops', password: 'ops-pw', next: '/' });
  assert.equal(login.status, 303, login.text);
  const home = await web('GET', '/');
  assert.equal(home.status, 200);
  assert.match(home.text, /Hello, ops/);

  // Login limiter: three wrong passwords for clerk, then even the right one is refused for now.
  for (let i = 0; i < 3; i++) assert.equal((await api(gw.url, 'GET', '/api/tokens', { user: { name: 'clerk', password: 'wrong' } })).status, 401);
  const limited = await api(gw.url, 'GET', '/api/tokens', { user: 'clerk' });
  assert.equal(limited.status, 429, JSON.stringify(limited.body));

  // Tokens: create, use, revoke.
  const t = await api(gw.url, 'POST', '/api/tokens', { user: 'ops', body: { name: 'cluster' } });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const bearer = { authorization: `Bearer ${t.body.token}` };
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc('queue:cl.out')}`, { headers: bearer })).status, 200);
  assert.equal((await api(gw.url, 'DELETE', `/api/tokens/${t.body.id}`, { user: 'ops' })).status, 200);
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc('queue:cl.out')}`, { headers: bearer })).status, 401);

  // A console rule: nobody may send to queue:cl.open once it is added (stored and published on the cluster).
  assert.equal((await api(gw.url, 'POST', '/api/messages', { user: 'nobody', body: { to: 'queue:cl.open', body: 1 } })).status, 403);
  const rule = await api(gw.url, 'POST', '/api/permissions', { user: 'ops', body: { user: 'nobody', address: 'queue:cl.open', verbs: ['send'] } });
  assert.equal(rule.status, 201, JSON.stringify(rule.body));
  await waitFor(async () => (await api(gw.url, 'POST', '/api/messages', { user: 'nobody', body: { to: 'queue:cl.open', body: 1 } })).status === 202, 10_000, 'the rule to apply');
});

test('run time of the core paths on a cluster', () => {
  const ms = Date.now() - started;
  console.log(`# core paths on a 3-master cluster: ${(ms / 1000).toFixed(1)} s including cluster start`);
});
