import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { hashPassword } from '../../src/auth/password.ts';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { LDAP, ldapDirectoryConfig, startTestLdap, type TestLdap } from '../support/ldap.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// People's tasks by e-mail and over the API, with a real SMTP server in this process
// (smtp-server + mailparser), a real redis-server and, for the LDAP case, a real slapd:
// a new task mails the person or every member of the group with a link that opens the task;
// email:<addr> is an address like any other; a down SMTP server delays mails (retried with
// backoff) but never the task; due tasks escalate and both sides are told; reminders. Then the
// rules: claim, release, delegate (only to someone with the right), who may act (403/404),
// typed fields checked on the server, and the audit trail on every task.

const FROM = 'switchboard@example.com';
const IP = /^(::ffff:)?127\.0\.0\.1$/;

// --- a real SMTP server in process ------------------------------------------------------------

interface Mail {
  rcpt: string[];
  mailFrom: string;
  from: string;
  subject: string;
  text: string;
  headers: Map<string, unknown>;
}

class Mailbox {
  readonly mails: Mail[] = [];
  private server?: SMTPServer;
  constructor(readonly port: number) {}

  async start(): Promise<void> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData: (stream, session, callback) => {
        simpleParser(stream).then((m) => {
          const from = session.envelope.mailFrom;
          this.mails.push({
            rcpt: session.envelope.rcptTo.map((r) => r.address),
            mailFrom: from ? from.address : '',
            from: m.from?.text ?? '',
            subject: m.subject ?? '',
            text: m.text ?? '',
            headers: m.headers as Map<string, unknown>,
          });
          callback();
        }, (err: Error) => callback(err));
      },
    });
    server.on('error', () => { /* a client that goes away; nothing to do */ });
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(this.port, '127.0.0.1', () => ok());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  to(addr: string, subject?: string): Mail[] {
    return this.mails.filter((m) => m.rcpt.includes(addr) && (subject === undefined || m.subject === subject));
  }

  /** Waits for a mail to `addr` with `subject` and returns it. */
  async receive(addr: string, subject: string, timeoutMs = 30_000): Promise<Mail> {
    return until(async () => this.to(addr, subject)[0], timeoutMs, `a mail to ${addr}: "${subject}"`);
  }
}

/** The task link in a notice: `<base>/tasks/<id>`. */
function linkIn(mail: Mail, base: string): string {
  const m = new RegExp(`${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/tasks/([A-Za-z0-9_-]+)`).exec(mail.text);
  assert.ok(m, `no link to ${base}/tasks/… in:\n${mail.text}`);
  return m[0];
}

// --- a browser-like client for the pages ------------------------------------------------------

class WebClient {
  readonly cookies = new Map<string, string>();
  constructor(private readonly base: string) {}

  async request(method: string, url: string, form?: Record<string, string>): Promise<{ status: number; location: string | null; text: string }> {
    const headers: Record<string, string> = { accept: 'text/html' };
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    let body: string | undefined;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(url.startsWith('http') ? url : this.base + url, { method, headers, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return { status: res.status, location: res.headers.get('location'), text: await res.text() };
  }

  async login(user: string, password: string): Promise<void> {
    const page = await this.request('GET', '/login');
    const r = await this.request('POST', '/login', { _csrf: csrfOf(page.text), username: user, password, next: '/' });
    assert.equal(r.status, 303, `login as ${user}: ${r.status}`);
  }

  /** Posts a form of the task page (its CSRF token included). */
  async taskForm(id: string, what: 'claim' | 'release' | 'delegate' | 'decision', form: Record<string, string> = {}) {
    const page = await this.request('GET', `/tasks/${enc(id)}`);
    assert.equal(page.status, 200, page.text);
    return this.request('POST', `/tasks/${enc(id)}/${what}`, { _csrf: csrfOf(page.text), ...form });
  }
}

function csrfOf(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'no CSRF token in the page');
  return m[1]!;
}

function alertOf(html: string): string {
  const raw = /<p class="error" role="alert">([^<]*)<\/p>/.exec(html)?.[1] ?? '';
  return raw.replaceAll('&#39;', "'").replaceAll('&quot;', '"').replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');
}

// --- the gateways -----------------------------------------------------------------------------

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';

export default defineFlow({
  name: 'mail-ask',
  input: z.object({
    to: z.string(), title: z.string(), fields: z.record(z.string(), z.any()).optional(),
    due: z.string().optional(), escalateTo: z.string().optional(), notify: z.string().optional(),
  }),
  async run(ctx, input) {
    const d = await ctx.ask(input.to, {
      title: input.title, data: { requestedBy: 'test' }, actions: ['approve', 'reject'], fields: input.fields ?? {},
      ...(input.due ? { due: input.due } : {}), ...(input.escalateTo ? { escalateTo: input.escalateTo } : {}),
    });
    if (input.notify) await ctx.send('email:' + input.notify, { subject: 'Decision on ' + input.title + ': ' + d.action, text: d.by + ' decided ' + d.action + (d.comment ? ': ' + d.comment : '') });
    return d;
  },
});
`;

// name → [groups, email?]
const PEOPLE: Record<string, [string[], string?]> = {
  ops: [['ops'], 'ops@example.com'],
  ann: [['approvers'], 'ann@example.com'],
  ben: [['approvers'], 'ben@example.com'],
  dan: [['approvers']], // a member without an e-mail address: skipped, not an error
  cat: [['leads'], 'cat@example.com'],
  aud: [['auditors'], 'aud@example.com'],
  eve: [[], 'eve@example.com'], // not a member, but a rule lets her act on the group's tasks
  nob: [[], 'nob@example.com'],
};
type Who = { name: string; password: string };
const user = (name: string): Who => ({ name, password: `${name}-pw` });
const [OPS, ANN, BEN, CAT, AUD, EVE, NOB] = [user('ops'), user('ann'), user('ben'), user('cat'), user('aud'), user('eve'), user('nob')];

const PERMISSIONS = [
  { group: 'ops', allow: [{ address: '**', verbs: ['send'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
  { group: 'approvers', allow: [{ address: 'group:approvers', verbs: ['consume', 'browse'] }] },
  { group: 'auditors', allow: [{ address: 'group:approvers', verbs: ['browse'] }] },
  { user: 'eve', allow: [{ address: 'group:approvers', verbs: ['consume'] }] },
];

let redis: TestRedis;
let ldap: TestLdap;
let flowsDir: string;
let mailbox: Mailbox; // up all along
let lateMailbox: Mailbox; // starts only in the SMTP-down test
let gw: Gateway; // file directory, SMTP up, reminders 1s before due
let gwDown: Gateway; // SMTP not listening at first
let gwLdap: Gateway; // LDAP directory
let base: string;
let baseDown: string;
let baseLdap: string;
const DOWN_PREFIX = `imaildown${process.pid}`;
let client: Redis;

async function gateway(prefix: string, smtpPort: number, extra: Record<string, unknown>): Promise<{ gw: Gateway; base: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const g = await startTestGateway(redis.url, {
    http: { port, host: '127.0.0.1', baseUrl: url },
    redis: { url: redis.url, prefix },
    email: { smtp: `smtp://127.0.0.1:${smtpPort}`, from: FROM, backoff: '200ms', maxAttempts: 30 },
    flows: { dir: flowsDir },
    ...extra,
  });
  assert.equal(g.url, url);
  return { gw: g, base: url };
}

before(async () => {
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-inbox-email-flows-'));
  // "type": "module": see the loader note in test/e2e/inbox-live-tasks.test.ts.
  writeFileSync(join(flowsDir, 'package.json'), '{"type": "module"}\n');
  writeFileSync(join(flowsDir, 'mail-ask.ts'), FLOW);
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  ldap = await startTestLdap();
  mailbox = new Mailbox(await freePort());
  await mailbox.start();
  lateMailbox = new Mailbox(await freePort());
  const users = await Promise.all(Object.entries(PEOPLE).map(async ([name, [groups, email]]) => ({ name, passwordHash: await hashPassword(`${name}-pw`), groups, ...(email ? { email } : {}) })));
  const fileDirectory = { type: 'file', users };
  ({ gw, base } = await gateway(`imail${process.pid}`, mailbox.port, { directory: fileDirectory, permissions: PERMISSIONS, people: { reminders: ['1s'] } }));
  // Its retry warnings are expected: only errors in the test output.
  ({ gw: gwDown, base: baseDown } = await gateway(DOWN_PREFIX, lateMailbox.port, { directory: fileDirectory, permissions: PERMISSIONS, log: { level: 'error' } }));
  ({ gw: gwLdap, base: baseLdap } = await gateway(`imailldap${process.pid}`, mailbox.port, {
    directory: ldapDirectoryConfig(ldap.url),
    permissions: [
      { group: `cn=ops,ou=groups,${LDAP.base}`, allow: [{ address: '**', verbs: ['send'] }] },
      { group: `cn=payment-approvers,ou=groups,${LDAP.base}`, allow: [{ address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
    ],
  }));
});

after(async () => {
  await gw?.stop();
  await gwDown?.stop();
  await gwLdap?.stop();
  await mailbox?.stop();
  await lateMailbox?.stop();
  client?.disconnect();
  await ldap?.dispose();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

/** waitFor, typed: resolves with the first value that is not undefined (or false). */
async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs: number, what: string): Promise<T> {
  return (await waitFor(fn, timeoutMs, what)) as T;
}

// --- helpers ----------------------------------------------------------------------------------

/** A task sent as a message by ops (send on **); returns its id once `as` sees it. */
async function newTask(to: string, spec: Record<string, unknown>, as: Who, url = base): Promise<string> {
  const r = await api(url, 'POST', '/api/messages', { user: OPS, body: { to, body: { actions: ['approve', 'reject'], ...spec } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return until(async () => {
    const list = await api(url, 'GET', '/api/tasks', { user: as });
    return (list.body.tasks as { id: string; title: string }[]).find((t) => t.title === spec.title)?.id;
  }, 20_000, `task "${String(spec.title)}" for ${as.name}`);
}

async function startFlow(input: Record<string, unknown>): Promise<string> {
  const r = await api(base, 'POST', '/api/flows/mail-ask', { user: OPS, body: { input } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.instanceId as string;
}

async function flowTask(instanceId: string, as: Who): Promise<string> {
  return until(async () => {
    const v = await api(base, 'GET', `/api/flows/mail-ask/${instanceId}`, { user: OPS });
    if (v.body.status !== 'waiting') return undefined;
    const list = await api(base, 'GET', '/api/tasks', { user: as });
    return (list.body.tasks as { id: string; title: string }[]).find((t) => t.title === v.body.input.title)?.id;
  }, 30_000, `the task of flow ${instanceId}`);
}

async function flowResult(instanceId: string): Promise<Record<string, unknown>> {
  const v = await until(async () => {
    const r = await api(base, 'GET', `/api/flows/mail-ask/${instanceId}`, { user: OPS });
    return ['completed', 'failed'].includes(r.body.status) ? r.body : undefined;
  }, 30_000, `flow ${instanceId} to finish`);
  assert.equal(v.status, 'completed', JSON.stringify(v));
  return v.result;
}

async function task(id: string, as: Who, url = base) {
  const r = await api(url, 'GET', `/api/tasks/${enc(id)}`, { user: as });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

const ids = async (as: Who, url = base) => ((await api(url, 'GET', '/api/tasks', { user: as })).body.tasks as { id: string }[]).map((t) => t.id);

// --- e-mail -----------------------------------------------------------------------------------

test('a new group task (ctx.ask) e-mails every member with an address; the link opens the task for a logged-in member', async () => {
  const title = 'Approve invoice INV-1001';
  const instanceId = await startFlow({ to: 'group:approvers', title });
  const id = await flowTask(instanceId, ANN);
  const subject = `New task: ${title}`;
  const [toAnn, toBen] = await Promise.all([mailbox.receive('ann@example.com', subject), mailbox.receive('ben@example.com', subject)]);
  for (const [mail, who] of [[toAnn, 'ann'], [toBen, 'ben']] as const) {
    assert.equal(mail.mailFrom, FROM);
    assert.match(mail.from, /switchboard@example\.com/);
    assert.match(mail.text, /A new task waits for the group approvers/);
    assert.equal(linkIn(mail, base), `${base}/tasks/${id}`);
    assert.equal(mail.headers.get('x-switchboard-id'), `task:${id}:new:${who}`);
  }
  assert.deepEqual(mailbox.mails.filter((m) => m.subject === subject).flatMap((m) => m.rcpt).sort(), ['ann@example.com', 'ben@example.com'], 'only the members with an address');

  // Follow the link: without a session it goes to the login and back; logged in, the task page.
  const link = linkIn(toAnn, base);
  const anon = new WebClient(base);
  const bounce = await anon.request('GET', link);
  assert.equal(bounce.status, 303);
  assert.equal(bounce.location, `/login?next=${enc(`/tasks/${id}`)}`);
  const ann = new WebClient(base);
  await ann.login('ann', 'ann-pw');
  const page = await ann.request('GET', link);
  assert.equal(page.status, 200);
  assert.match(page.text, new RegExp(`<h1>${title}</h1>`));
  assert.match(page.text, /<form method="post" action="\/tasks\/[^"]+\/decision" class="decide">/);
  // Someone outside the group following a forwarded link sees nothing.
  const nob = new WebClient(base);
  await nob.login('nob', 'nob-pw');
  assert.equal((await nob.request('GET', link)).status, 404);
});

test('a task for one person e-mails that person (and nobody else)', async () => {
  const title = 'Sign the contract C-77';
  const id = await newTask('person:cat', { title, actions: ['sign', 'decline'] }, CAT);
  const mail = await mailbox.receive('cat@example.com', `New task: ${title}`);
  assert.match(mail.text, /A new task waits for cat/);
  assert.equal(linkIn(mail, base), `${base}/tasks/${id}`);
  assert.deepEqual(mailbox.mails.filter((m) => m.subject === `New task: ${title}`).flatMap((m) => m.rcpt), ['cat@example.com']);
  const cat = new WebClient(base);
  await cat.login('cat', 'cat-pw');
  const page = await cat.request('GET', linkIn(mail, base));
  assert.equal(page.status, 200);
  assert.match(page.text, /<button type="submit" name="action" value="sign">Sign<\/button>/);
});

test('email:<addr> is an address: POST /api/messages sends the mail (once per id); without send rights 403', async () => {
  const body = { subject: 'Weekly payments report', text: 'All 42 payments went out.' };
  const r = await api(base, 'POST', '/api/messages', { user: OPS, body: { to: 'email:ops@example.com', id: 'report-2026-w27', body } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.deepEqual(r.body, { id: 'report-2026-w27', duplicate: false });
  const mail = await mailbox.receive('ops@example.com', body.subject);
  assert.equal(mail.mailFrom, FROM);
  assert.equal(mail.text.trim(), body.text);
  assert.equal(mail.headers.get('x-switchboard-id'), 'report-2026-w27');
  // The same id again is accepted as a duplicate and not mailed twice.
  const again = await api(base, 'POST', '/api/messages', { user: OPS, body: { to: 'email:ops@example.com', id: 'report-2026-w27', body } });
  assert.equal(again.status, 202);
  assert.equal(again.body.duplicate, true);
  const denied = await api(base, 'POST', '/api/messages', { user: NOB, body: { to: 'email:ops@example.com', body: { subject: 'from nob', text: 'x' } } });
  assert.equal(denied.status, 403, JSON.stringify(denied.body));
  // A marker mail sent after both: when it has arrived, the ones before it have been handled.
  await api(base, 'POST', '/api/messages', { user: OPS, body: { to: 'email:ops@example.com', body: { subject: 'marker 1', text: '.' } } });
  await mailbox.receive('ops@example.com', 'marker 1');
  assert.equal(mailbox.to('ops@example.com', body.subject).length, 1);
  assert.equal(mailbox.to('ops@example.com', 'from nob').length, 0);
});

test('a flow that asks for it e-mails the requester the decision', async () => {
  const title = 'Approve refund R-55';
  const instanceId = await startFlow({ to: 'group:approvers', title, notify: 'requester@example.com' });
  const id = await flowTask(instanceId, BEN);
  const d = await api(base, 'POST', `/api/tasks/${id}/decision`, { user: BEN, body: { action: 'reject', comment: 'no receipt' } });
  assert.equal(d.status, 200, JSON.stringify(d.body));
  const mail = await mailbox.receive('requester@example.com', `Decision on ${title}: reject`);
  assert.equal(mail.text.trim(), 'user:ben decided reject: no receipt');
  assert.equal((await flowResult(instanceId)).action, 'reject');
});

test('group members from the LDAP directory get the e-mail; the link opens the task for an LDAP user', async () => {
  const title = 'Approve payment LDAP-9';
  const bob = { name: 'bob', password: 'bob-pw' };
  const r = await api(baseLdap, 'POST', '/api/messages', { user: { name: 'alice', password: 'alice-pw' }, body: { to: 'group:payment-approvers', body: { title, actions: ['approve', 'reject'], data: { amount: 9 } } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const subject = `New task: ${title}`;
  const [toBob] = await Promise.all([mailbox.receive('bob@example.com', subject), mailbox.receive('dave@example.com', subject)]);
  const link = linkIn(toBob, baseLdap);
  const id = link.split('/').pop()!;
  assert.ok((await ids(bob, baseLdap)).includes(id));
  const web = new WebClient(baseLdap);
  await web.login('bob', 'bob-pw');
  const page = await web.request('GET', link);
  assert.equal(page.status, 200);
  assert.match(page.text, new RegExp(`<h1>${title}</h1>`));
  assert.match(page.text, /<th scope="row">amount<\/th><td>9<\/td>/);
});

test('SMTP down: the task is created and usable at once; its e-mails are retried with backoff and arrive when the server starts', async () => {
  const title = 'Approve during the mail outage';
  const id = await newTask('group:approvers', { title }, ANN, baseDown);
  // Usable all along: claimed and visible while no mail could be sent.
  const claimed = await api(baseDown, 'POST', `/api/tasks/${id}/claim`, { user: ANN });
  assert.equal(claimed.status, 200, JSON.stringify(claimed.body));
  assert.equal(claimed.body.claimedBy, 'user:ann');

  // The outbox keeps trying: the mail to ann has failed at least twice and waits for its next try.
  const outbox = new Queue('{email-outbox}', { connection: client, prefix: DOWN_PREFIX });
  try {
    const job = await until(async () => {
      const jobs = await outbox.getJobs(['delayed', 'wait', 'active', 'prioritized']);
      return jobs.find((j) => j?.data.to === 'email:ann@example.com' && j.attemptsMade >= 2);
    }, 30_000, 'the mail to ann to be retried twice');
    assert.match(job!.failedReason ?? '', /ECONNREFUSED|connect/i, `last failure: ${job!.failedReason}`);
    assert.deepEqual(job!.opts.backoff, { type: 'exponential', delay: 200 }, 'email.backoff from the config');
    assert.equal((await outbox.getFailed()).length, 0, 'nothing dead-lettered');
  } finally {
    await outbox.close();
  }
  assert.equal(lateMailbox.mails.length, 0);
  const usable = await task(id, ANN, baseDown);
  assert.equal(usable.status, 'open');

  await lateMailbox.start();
  const subject = `New task: ${title}`;
  const [mail] = await Promise.all([lateMailbox.receive('ann@example.com', subject), lateMailbox.receive('ben@example.com', subject)]);
  assert.equal(linkIn(mail, baseDown), `${baseDown}/tasks/${id}`);
  assert.equal(lateMailbox.to('ann@example.com', subject).length, 1, 'retries do not send it twice');
  const decided = await api(baseDown, 'POST', `/api/tasks/${id}/decision`, { user: ANN, body: { action: 'approve' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
});

test('due and escalation: a group task due in 2s is reassigned to its escalateTo (person:cat), history says escalated, the members and cat are e-mailed', async () => {
  const title = 'Approve urgent wire W-3';
  const instanceId = await startFlow({ to: 'group:approvers', title, due: '2s', escalateTo: 'person:cat' });
  const id = await flowTask(instanceId, ANN);
  const open = await task(id, ANN);
  assert.equal(open.group, 'approvers');
  assert.equal(open.escalateTo, 'person:cat');
  assert.ok(open.due, 'a due date');

  const moved = await until(async () => {
    const list = await api(base, 'GET', '/api/tasks', { user: CAT });
    return (list.body.tasks as { id: string; assignee?: string }[]).find((t) => t.id === id);
  }, 30_000, 'the task to reach cat');
  assert.ok(moved);
  assert.equal(moved.assignee, 'cat');
  const full = await task(id, CAT);
  assert.equal(full.group, undefined);
  const escalated = (full.history as { action: string; by: string; detail?: string }[]).find((h) => h.action === 'escalated');
  assert.ok(escalated, JSON.stringify(moved));
  assert.equal(escalated.by, 'system:switchboard');
  assert.match(escalated.detail ?? '', /moved to person:cat/);
  assert.ok(!(await ids(ANN)).includes(id), 'no longer in the group’s inbox');

  const [fromAnn, , toCat] = await Promise.all([
    mailbox.receive('ann@example.com', `Escalated: ${title}`),
    mailbox.receive('ben@example.com', `Escalated: ${title}`),
    mailbox.receive('cat@example.com', `Escalated to you: ${title}`),
  ]);
  assert.match(fromAnn.text, /has been escalated from group approvers to person:cat/);
  assert.equal(linkIn(toCat, base), `${base}/tasks/${id}`);

  // Now cat decides; the group may no longer.
  assert.equal((await api(base, 'POST', `/api/tasks/${id}/decision`, { user: ANN, body: { action: 'approve' } })).status, 404);
  const d = await api(base, 'POST', `/api/tasks/${id}/decision`, { user: CAT, body: { action: 'approve', comment: 'escalated, done' } });
  assert.equal(d.status, 200, JSON.stringify(d.body));
  assert.equal((await flowResult(instanceId)).by, 'user:cat');
});

test('reminders: with people.reminders [1s], a task due in 3s sends a reminder, then an overdue notice', async () => {
  const title = 'Review the supplier list';
  const id = await newTask('person:cat', { title, due: '3s' }, CAT);
  const due = (await task(id, CAT)).due as string;
  const reminder = await mailbox.receive('cat@example.com', `Reminder: ${title} is due ${due}`);
  assert.match(reminder.text, new RegExp(`This task is due ${due.replace(/[.]/g, '\\.')}`));
  assert.equal(linkIn(reminder, base), `${base}/tasks/${id}`);
  const overdue = await mailbox.receive('cat@example.com', `Overdue: ${title}`);
  assert.match(overdue.text, /is still open/);
  assert.equal((await task(id, CAT)).status, 'open', 'no escalation target: it stays with cat');
});

// --- the rules --------------------------------------------------------------------------------

test('claim, release and delegate (web forms): the delegate must have the right; each step is in the history with who, when and from where', async () => {
  const title = 'Approve batch B-12';
  const started = Date.now();
  const id = await newTask('group:approvers', { title }, ANN);
  const ann = new WebClient(base);
  await ann.login('ann', 'ann-pw');
  const ben = new WebClient(base);
  await ben.login('ben', 'ben-pw');

  const claimed = await api(base, 'POST', `/api/tasks/${id}/claim`, { user: ANN });
  assert.equal(claimed.status, 200);
  assert.equal(claimed.body.claimedBy, 'user:ann');
  assert.ok(!(await ids(BEN)).includes(id), 'a claimed group task leaves the other members’ lists');
  assert.ok((await ids(ANN)).includes(id));
  const benDecides = await api(base, 'POST', `/api/tasks/${id}/decision`, { user: BEN, body: { action: 'approve' } });
  assert.equal(benDecides.status, 409);
  assert.match(benDecides.body.error.message, /already taken by user:ann/);
  assert.equal((await api(base, 'POST', `/api/tasks/${id}/claim`, { user: BEN })).status, 409);
  const benReleases = await ben.taskForm(id, 'release');
  assert.equal(benReleases.status, 409);
  assert.match(alertOf(benReleases.text), /already taken by user:ann/);

  const released = await ann.taskForm(id, 'release');
  assert.equal(released.status, 303);
  assert.equal(released.location, '/inbox?done=released');
  assert.ok((await ids(BEN)).includes(id), 'back in the group');
  const again = await ann.taskForm(id, 'release');
  assert.equal(again.status, 409);
  assert.match(alertOf(again.text), /is not claimed by you/);

  // Delegate: only to someone who may act on the task.
  for (const [to, why] of [
    ['nob', "nob may not act on this task (no consume right on group:approvers)"],
    ['aud', "aud may not act on this task (no consume right on group:approvers)"],
    ['ghost', "there is no user 'ghost' in the directory"],
  ]) {
    const r = await ann.taskForm(id, 'delegate', { to: to! });
    assert.equal(r.status, 400, `${to}: ${r.status}`);
    assert.equal(alertOf(r.text), why);
  }
  const still = await task(id, ANN);
  assert.equal(still.group, 'approvers');
  assert.equal(still.assignee, undefined);

  const delegated = await ann.taskForm(id, 'delegate', { to: 'eve' });
  assert.equal(delegated.status, 303);
  assert.equal(delegated.location, `/inbox?done=${enc('delegated to eve')}`);
  const mine = (await api(base, 'GET', '/api/tasks', { user: EVE })).body.tasks.find((t: { id: string }) => t.id === id);
  assert.ok(mine, 'eve has it');
  assert.equal(mine.assignee, 'eve');
  assert.equal(mine.group, undefined);
  assert.equal((await api(base, 'GET', `/api/tasks/${id}`, { user: ANN })).status, 404, 'ann no longer sees it');
  assert.ok(!(await ids(BEN)).includes(id));
  // The delegate is told by e-mail, with the link.
  const notice = await mailbox.receive('eve@example.com', `New task: ${title}`);
  assert.equal(linkIn(notice, base), `${base}/tasks/${id}`);

  const decided = await api(base, 'POST', `/api/tasks/${id}/decision`, { user: EVE, body: { action: 'approve', comment: 'fine by me' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));

  // The audit trail: who, when, what, from where.
  const t = await task(id, EVE);
  const h = t.history as { at: string; by: string; action: string; detail?: string; from?: string }[];
  assert.deepEqual(h.map((e) => [e.action, e.by]), [
    ['created', 'user:ops'], ['claimed', 'user:ann'], ['released', 'user:ann'], ['delegated', 'user:ann'], ['decided', 'user:eve'],
  ]);
  for (const e of h.slice(1)) {
    assert.match(e.from ?? '', IP, `${e.action} records where from: ${JSON.stringify(e)}`);
    assert.ok(Date.parse(e.at) >= started && Date.parse(e.at) <= Date.now(), `${e.action} records when: ${e.at}`);
  }
  assert.equal(h[3]!.detail, 'to eve');
  assert.equal(h[4]!.detail, 'approve: fine by me');
  for (let i = 1; i < h.length; i++) assert.ok(h[i]!.at >= h[i - 1]!.at, 'in order');
  // … and shown on the task page.
  const eve = new WebClient(base);
  await eve.login('eve', 'eve-pw');
  const page = await eve.request('GET', `/tasks/${id}`);
  for (const e of h.slice(1)) {
    const rowRe = new RegExp(`<tr><td>${e.at.replace('T', ' ').slice(0, 19)}</td><td>${e.by}</td><td>${e.action}${e.detail ? `: ${e.detail}` : ''}</td><td>${e.from!.replace(/\./g, '\\.')}</td></tr>`);
    assert.match(page.text, rowRe, `history row for ${e.action}`);
  }
});

test('delegating over the API to a member who was already told of the task e-mails them again', async () => {
  const title = 'Approve batch B-77';
  const id = await newTask('group:approvers', { title }, ANN);
  await mailbox.receive('ben@example.com', `New task: ${title}`);
  const r = await api(base, 'POST', `/api/tasks/${id}/delegate`, { user: ANN, body: { to: 'ben' } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.assignee, 'ben');
  const both = await until(async () => { const m = mailbox.to('ben@example.com', `New task: ${title}`); return m.length >= 2 ? m : undefined; }, 30_000, 'a second notice to ben');
  assert.equal(both.length, 2);
  assert.equal(linkIn(both[1]!, base), `${base}/tasks/${id}`);
  const back = await api(base, 'POST', `/api/tasks/${id}/release`, { user: BEN });
  assert.equal(back.status, 409, 'a delegated task is not claimed, so there is nothing to release');
});

test('who may act: outsiders get 404, browse-only users 403; a person’s task is theirs alone', async () => {
  const groupTask = await newTask('group:approvers', { title: 'Approve the quarterly budget' }, ANN);
  for (const [method, path, body] of [
    ['GET', `/api/tasks/${groupTask}`, undefined],
    ['POST', `/api/tasks/${groupTask}/claim`, undefined],
    ['POST', `/api/tasks/${groupTask}/decision`, { action: 'approve' }],
  ] as const) {
    const r = await api(base, method, path, { user: NOB, ...(body ? { body } : {}) });
    assert.equal(r.status, 404, `nob ${method} ${path}: ${r.status}`);
    assert.match(r.body.error.message, /no task/);
  }
  assert.ok(!(await ids(NOB)).includes(groupTask));

  // aud may browse the group's tasks but not act.
  assert.equal((await task(groupTask, AUD)).title, 'Approve the quarterly budget');
  for (const [path, body] of [[`/api/tasks/${groupTask}/claim`, undefined], [`/api/tasks/${groupTask}/decision`, { action: 'approve' }]] as const) {
    const r = await api(base, 'POST', path, { user: AUD, ...(body ? { body } : {}) });
    assert.equal(r.status, 403, `aud POST ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const audWeb = new WebClient(base);
  await audWeb.login('aud', 'aud-pw');
  const look = await audWeb.request('GET', `/tasks/${groupTask}`);
  assert.equal(look.status, 200);
  assert.match(look.text, /You may look at this task but not act on it\./);
  assert.doesNotMatch(look.text, /class="decide"/);
  const forced = await audWeb.request('POST', `/tasks/${groupTask}/decision`, { _csrf: csrfOf(look.text), action: 'approve' });
  assert.equal(forced.status, 403);
  const nobWeb = new WebClient(base);
  await nobWeb.login('nob', 'nob-pw');
  const hidden = await nobWeb.request('GET', `/tasks/${groupTask}`);
  assert.equal(hidden.status, 404);
  assert.match(hidden.text, /Not found/);

  // A task for cat: only cat.
  const catTask = await newTask('person:cat', { title: 'Approve cat’s own expenses' }, CAT);
  for (const who of [ANN, NOB, AUD]) {
    assert.equal((await api(base, 'GET', `/api/tasks/${catTask}`, { user: who })).status, 404, who.name);
    assert.equal((await api(base, 'POST', `/api/tasks/${catTask}/decision`, { user: who, body: { action: 'approve' } })).status, 404, who.name);
  }
  assert.equal((await api(base, 'GET', '/api/tasks/not%20an%20id', { user: CAT })).status, 400);
  assert.equal((await api(base, 'GET', '/api/tasks/nosuchtask', { user: CAT })).status, 404);
  // Nothing above changed either task.
  for (const [id, who] of [[groupTask, ANN], [catTask, CAT]] as const) {
    const t = await task(id, who);
    assert.equal(t.status, 'open');
    assert.deepEqual(t.history.map((e: { action: string }) => e.action), ['created']);
  }
  const ok = await api(base, 'POST', `/api/tasks/${catTask}/decision`, { user: CAT, body: { action: 'approve' } });
  assert.equal(ok.status, 200);
});

test('fields are checked on the server: a bad number, date, choice, text or unknown field is 400 naming the field', async () => {
  const instanceId = await startFlow({
    to: 'group:approvers', title: 'Approve the typed request T-1',
    fields: { amount: 'number', when: 'date', level: { choice: ['low', 'high'] }, note: 'text' },
  });
  const id = await flowTask(instanceId, ANN);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ action: 'approve', fields: { amount: 'abc' } }, /field 'amount' must be a number, got "abc"/],
    [{ action: 'approve', fields: { amount: true } }, /field 'amount' must be a number/],
    [{ action: 'approve', fields: { when: 'next week' } }, /field 'when' must be a date like 2026-12-31, got "next week"/],
    [{ action: 'approve', fields: { when: '2026-13-45' } }, /field 'when' must be a date/],
    [{ action: 'approve', fields: { level: 'medium' } }, /field 'level' must be one of low, high, got "medium"/],
    [{ action: 'approve', fields: { note: 42 } }, /field 'note' must be text/],
    [{ action: 'approve', fields: { colour: 'red' } }, /unknown field 'colour' \(this task has: amount, when, level, note\)/],
    [{ action: 'approve', fields: ['x'] }, /'fields' must be an object/],
    [{ action: 'maybe' }, /'action' must be one of approve, reject/],
    [{ fields: { amount: 1 } }, /'action' must be one of approve, reject/],
  ];
  for (const [body, message] of bad) {
    const r = await api(base, 'POST', `/api/tasks/${id}/decision`, { user: ANN, body });
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, message);
  }
  // The web form says the same on the task page.
  const ann = new WebClient(base);
  await ann.login('ann', 'ann-pw');
  const form = await ann.taskForm(id, 'decision', { action: 'approve', 'field.amount': '12,5', 'field.level': 'high' });
  assert.equal(form.status, 400);
  assert.equal(alertOf(form.text), `field 'amount' must be a number, got "12,5"`);
  assert.match(form.text, /class="decide"/, 'the form is shown again');
  const t = await task(id, ANN);
  assert.equal(t.status, 'open');
  assert.ok(!t.history.some((e: { action: string }) => e.action === 'decided'));

  const good = await ann.taskForm(id, 'decision', { action: 'approve', 'field.amount': '12.5', 'field.when': '2026-12-31', 'field.level': 'high', 'field.note': 'ok', comment: 'typed' });
  assert.equal(good.status, 303);
  const result = await flowResult(instanceId);
  assert.deepEqual(result.fields, { amount: 12.5, when: '2026-12-31', level: 'high', note: 'ok' });
  assert.equal(result.comment, 'typed');
  assert.equal(result.by, 'user:ann');
});
