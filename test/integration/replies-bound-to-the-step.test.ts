// A waiting step accepts only its own answer (DESIGN §3): a planted task, a replayed decision, a
// forged reply and a reply from the wrong responder are each tried by a user who may send to the
// flow instance, and each is refused (403 reply_refused, audited) or comes to nothing, while the
// flow goes on waiting for the real answer, which then completes it. Flow files are written to a
// temp folder (they import only 'switchboard' and 'zod'); a real redis-server; the HTTP API as the world.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { answers } from '../../src/flows/context.ts';
import type { JournalEntry } from '../../src/flows/store.ts';
import { api, enc, startTestGateway, waitFor, type USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PREFIX = `rbts${process.pid}`;
const GROUP = 'group:bound-approvers';
type User = keyof typeof USERS;

const FLOWS: Record<string, string> = {
  'bound-ask.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'bound-ask',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const first = await ctx.ask('${GROUP}', { title: 'First ' + input.ref, actions: ['approve', 'reject'] });
    const second = await ctx.ask('${GROUP}', { title: 'Second ' + input.ref, actions: ['approve', 'reject'] });
    return { first: first.action + ' by ' + first.by, second: second.action + ' by ' + second.by };
  },
});
`,
  'bound-request.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'bound-request',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const one = await ctx.request('queue:work', { ref: input.ref, part: 1 }, { timeout: '10m' });
    const two = await ctx.request('queue:work', { ref: input.ref, part: 2 }, { timeout: '10m' });
    return { one: one.body, two: two.body };
  },
});
`,
  'bound-other.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'bound-other',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const r = await ctx.request('flow:bound-echo', { ref: input.ref }, { timeout: '10m' });
    return { body: r.body, sender: r.sender };
  },
});
`,
  'bound-echo.ts': `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'bound-echo',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const go = await ctx.receive();
    return { echo: input.ref, go: go.body };
  },
});
`,
};

let redis: TestRedis;
let gw: Gateway;
let client: Redis;
let flowsDir: string;

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-replies-bound-'));
  writeFileSync(join(flowsDir, 'package.json'), '{"type": "module"}\n');
  for (const [file, text] of Object.entries(FLOWS)) writeFileSync(join(flowsDir, file), text);
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s' },
    permissions: [
      // ops: the attacker and the approver; may send to any flow instance, and to the group.
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse', 'send'] }, { address: GROUP, verbs: ['send', 'consume', 'browse'] }] },
      { group: 'clerks', allow: [{ address: 'flow:*', verbs: ['start'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
      { user: 'nobody', allow: [{ address: GROUP, verbs: ['consume'] }] },
    ],
  });
});

after(async () => {
  await gw?.stop();
  await client?.quit();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

// --- helpers ---------------------------------------------------------------------------------

const FINISHED = ['completed', 'failed', 'cancelled'];

async function start(name: string, input: unknown, user: User = 'ops', id?: string): Promise<string> {
  const r = await api(gw.url, 'POST', `/api/flows/${name}`, { user, body: { input, ...(id ? { id } : {}) } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.instanceId as string;
}

async function view(name: string, id: string): Promise<any> {
  const r = await api(gw.url, 'GET', `/api/flows/${name}/${id}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Waits until the instance has `status` (and `extra`), failing at once if it finished otherwise. */
async function reach(name: string, id: string, status: string, extra: (v: any) => boolean = () => true): Promise<any> {
  const v = await waitFor(async () => {
    const b = await view(name, id);
    return (b.status === status && extra(b)) || (FINISHED.includes(b.status) && b.status !== status) ? b : undefined;
  }, 30_000, `${name}/${id} to be ${status}`);
  assert.equal(v.status, status, JSON.stringify(v));
  return v;
}

const kinds = (v: any) => v.steps.map((s: any) => `${s.kind} ${s.target}`);
const waitingOnStep = (n: number) => (v: any) => v.waitingOn?.step === n;

/** The instance's journal as Redis holds it: a stand-in for a token that leaked (logs, a mis-sent copy). */
async function journal(id: string): Promise<Map<number, JournalEntry>> {
  const h = await client.hgetall(`${PREFIX}:flow:{${id}}:journal`);
  return new Map(Object.entries(h).map(([n, v]) => [Number(n), JSON.parse(v) as JournalEntry]));
}

async function openTask(title: string, user: User = 'ops'): Promise<any> {
  return waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user })).body.tasks.find((t: { title: string }) => t.title === title), 20_000, `the task '${title}'`);
}

/** Sends as `user` to the flow instance, as any client could. */
function sendTo(to: string, id: string, body: unknown, more: Record<string, unknown> = {}, user: User = 'ops') {
  return api(gw.url, 'POST', '/api/messages', { user, body: { to, id, body, ...more } });
}

async function assertRefusedReply(r: Awaited<ReturnType<typeof sendTo>>, address: string, id: string, actor = 'user:ops'): Promise<void> {
  assert.equal(r.status, 403, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'reply_refused');
  assert.match(r.body.error.message, /claims to answer a step of .* the step keeps waiting/);
  await waitFor(async () => (await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc(actor)}&limit=200`, { user: 'ops' })).body.entries
    .some((e: { target?: string; detail?: string }) => e.target === address && (e.detail ?? '').startsWith(`http door, message ${id}: `) && /claims to answer/.test(e.detail ?? '')), 5000, `the audited refusal of ${id}`);
}

// --- (a) a planted task ------------------------------------------------------------------------

test('planted task: instance ids cannot be known in advance; a task planted with a guessed or the real step id is another task, and deciding it does not answer the flow', { timeout: 90_000 }, async () => {
  // The id is random: not the start id the caller chose, and different for each start.
  const chosen = await start('bound-ask', { ref: 'chosen' }, 'clerk', 'my-own-id');
  assert.notEqual(chosen, 'my-own-id');
  assert.match(chosen, /^[A-Za-z0-9_-]{22}$/, '128 random bits, base64url');
  assert.equal(await start('bound-ask', { ref: 'chosen' }, 'clerk', 'my-own-id'), chosen, 'the same starter and start id: the same instance');
  assert.notEqual(await start('bound-ask', { ref: 'chosen' }, 'ops', 'my-own-id'), chosen, "another starter's start id never finds clerk's instance");

  // Planted before the flow exists: a guess at `<instanceId>:0`, with replyTo and correlation aimed at it.
  const guess = 'AAAAAAAAAAAAAAAAAAAAAA';
  const early = await sendTo(GROUP, `${guess}:0`, { title: 'Planted early', actions: ['approve', 'reject'] }, { replyTo: `flow:bound-ask/${guess}`, correlationId: `${guess}:0` });
  assert.equal(early.status, 202, JSON.stringify(early.body));

  const id = await start('bound-ask', { ref: 'P-1' }, 'clerk');
  assert.notEqual(id, guess);
  await reach('bound-ask', id, 'waiting', waitingOnStep(0));
  const real = await openTask('First P-1');
  const token = (await journal(id)).get(0)!.correlation!;
  assert.equal((await journal(id)).get(0)!.task, real.id, 'the step is bound to the task the inbox made');

  // Planted after: the starter knows the instance id now, and plants with the exact step id
  // (`<instanceId>:0`), once without the token and once with a token that leaked.
  // (The same id again from the same sender is a duplicate: accepted, no second task.)
  for (const [title, msgId, correlationId] of [['Planted no token', `${id}:0`, `${id}:0`], ['Planted leaked token', `${id}:0.1`, token]] as const) {
    const r = await sendTo(GROUP, msgId, { title, actions: ['approve', 'reject'] }, { replyTo: `flow:bound-ask/${id}`, correlationId });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(r.body.duplicate, false);
    const planted = await openTask(title);
    assert.notEqual(planted.id, real.id, "a message's own id never becomes another task's id");
    assert.notEqual(planted.id, `${id}:0`);
    const decided = await api(gw.url, 'POST', `/api/tasks/${planted.id}/decision`, { user: 'nobody', body: { action: 'approve' } });
    assert.equal(decided.status, 200, JSON.stringify(decided.body));
    // The inbox delivers that decision to the instance: the pipeline refuses it (wrong task or token) and audits it.
    // (The inbox hands decisions over as system:inbox, on behalf of the user who decided.)
    await waitFor(async () => (await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc('system:inbox')}&limit=200`, { user: 'ops' })).body.entries
      .some((e: { target?: string; detail?: string }) => e.target === `flow:bound-ask/${id}` && (e.detail ?? '').startsWith(`inbox door, message task:${planted.id}:decision: `) && /from user:nobody claims to answer/.test(e.detail ?? '')), 10_000, `the refused delivery of the decision on ${title}`);
  }
  const again = await sendTo(GROUP, `${id}:0`, { title: 'Planted twice', actions: ['approve'] }, { replyTo: `flow:bound-ask/${id}`, correlationId: token });
  assert.deepEqual([again.status, again.body.duplicate], [202, true]);
  const still = await view('bound-ask', id);
  assert.equal(still.status, 'waiting');
  assert.equal(still.waitingOn.step, 0);
  assert.equal((await api(gw.url, 'GET', `/api/tasks/${real.id}`, { user: 'ops' })).body.status, 'open', "the flow's own task is untouched");

  // The flow's own task, decided: the flow takes that decision and goes on to its second ask.
  const ok = await api(gw.url, 'POST', `/api/tasks/${real.id}/decision`, { user: 'ops', body: { action: 'reject' } });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  await reach('bound-ask', id, 'waiting', waitingOnStep(1));
  const second = await openTask('Second P-1');
  assert.equal((await api(gw.url, 'POST', `/api/tasks/${second.id}/decision`, { user: 'nobody', body: { action: 'approve' } })).status, 200);
  const done = await reach('bound-ask', id, 'completed');
  assert.deepEqual(done.result, { first: 'reject by user:ops', second: 'approve by user:nobody' });
});

// --- (b) a replayed decision --------------------------------------------------------------------

test('replayed decision: the decision body re-sent to the instance with a guessed or the leaked correlation id (and a claimed task header) is 403 reply_refused, audited; the flow still waits', { timeout: 60_000 }, async () => {
  const id = await start('bound-ask', { ref: 'R-1' });
  await reach('bound-ask', id, 'waiting', waitingOnStep(0));
  const first = await openTask('First R-1');
  const decided = await api(gw.url, 'POST', `/api/tasks/${first.id}/decision`, { user: 'ops', body: { action: 'approve', comment: 'ok' } });
  assert.equal(decided.status, 200);
  await reach('bound-ask', id, 'waiting', waitingOnStep(1));
  const second = await openTask('Second R-1');
  const j = await journal(id);
  const decision = (j.get(0)!.result as { body: unknown }).body;
  const address = `flow:bound-ask/${id}`;

  const attempts: [string, Record<string, unknown>][] = [
    ['replay-guess-0', { correlationId: `${id}:0` }],
    ['replay-guess-1', { correlationId: `${id}:1` }],
    ['replay-token-0', { correlationId: j.get(0)!.correlation }],
    // The step that waits now, with its real token and the task header the inbox would set:
    // the header arrives only as switchboard-claimed-task from a client door, and the sender is not the inbox's.
    ['replay-token-1', { correlationId: j.get(1)!.correlation, headers: { 'switchboard-task': second.id } }],
  ];
  for (const [msgId, more] of attempts) await assertRefusedReply(await sendTo(address, msgId, decision, more), address, msgId);

  // Deciding the first task again through the inbox: 409, naming who decided it.
  const again = await api(gw.url, 'POST', `/api/tasks/${first.id}/decision`, { user: 'nobody', body: { action: 'reject' } });
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.match(again.body.error.message, /already been decided by user:ops/);

  const v = await view('bound-ask', id);
  assert.equal(v.status, 'waiting');
  assert.equal(v.waitingOn.step, 1);
  assert.equal((await api(gw.url, 'GET', `/api/tasks/${second.id}`, { user: 'ops' })).body.status, 'open');
  assert.equal((await api(gw.url, 'POST', `/api/tasks/${second.id}/decision`, { user: 'nobody', body: { action: 'reject' } })).status, 200);
  assert.deepEqual((await reach('bound-ask', id, 'completed')).result, { first: 'approve by user:ops', second: 'reject by user:nobody' });
});

// --- (c) a forged reply ------------------------------------------------------------------------

/** Takes the flow's request for `part` off queue:work as a consumer would (peek-lock). */
async function takeRequest(id: string, part: number): Promise<any> {
  return waitFor(async () => {
    const r = await api(gw.url, 'POST', `/api/queues/${enc('queue:work')}/receive`, { user: 'ops', body: { max: 10, leaseSeconds: 60 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.messages.find((m: any) => m.id === `${id}:${part}`);
  }, 20_000, `request ${part} of ${id} on queue:work`);
}

test('forged reply: the step id as correlation id, or a wrong nonce, is 403 reply_refused, audited; the real reply from queue:work completes the flow', { timeout: 60_000 }, async () => {
  const id = await start('bound-request', { ref: 'F-1' });
  const req = await takeRequest(id, 0);
  assert.equal(req.replyTo, `flow:bound-request/${id}`);
  assert.match(req.correlationId, new RegExp(`^${id}:0:[0-9a-f]{32}$`));
  await reach('bound-request', id, 'waiting', waitingOnStep(0));

  const nonce = req.correlationId.slice(-32) as string;
  const wrongNonce = (nonce[0] === 'f' ? '0' : 'f') + nonce.slice(1);
  const forgeries: [string, string][] = [
    ['forged-no-nonce', `${id}:0`],
    ['forged-zero-nonce', `${id}:0:${'0'.repeat(32)}`],
    ['forged-one-char-off', `${id}:0:${wrongNonce}`],
    ['forged-next-step', `${id}:1:${nonce}`],
  ];
  for (const [msgId, correlationId] of forgeries) await assertRefusedReply(await sendTo(req.replyTo, msgId, { answer: 'forged' }, { correlationId }), req.replyTo, msgId);
  const still = await view('bound-request', id);
  assert.equal(still.status, 'waiting');
  assert.equal(still.waitingOn.step, 0);

  // The real reply, with the token the request carries.
  const r1 = await sendTo(req.replyTo, `reply-${id}-0`, { answer: 'one' }, { correlationId: req.correlationId });
  assert.equal(r1.status, 202, JSON.stringify(r1.body));
  assert.equal((await api(gw.url, 'POST', `/api/queues/${enc('queue:work')}/ack`, { user: 'ops', body: { leases: [req.lease] } })).status, 200);
  await reach('bound-request', id, 'waiting', waitingOnStep(1));
  const req2 = await takeRequest(id, 1);
  const r2 = await sendTo(req2.replyTo, `reply-${id}-1`, { answer: 'two' }, { correlationId: req2.correlationId });
  assert.equal(r2.status, 202, JSON.stringify(r2.body));
  await api(gw.url, 'POST', `/api/queues/${enc('queue:work')}/ack`, { user: 'ops', body: { leases: [req2.lease] } });
  assert.deepEqual((await reach('bound-request', id, 'completed')).result, { one: { answer: 'one' }, two: { answer: 'two' } });
});

/** Starts bound-request, answers its first request for real, and waits on the second. */
async function answeredOnce(ref: string): Promise<{ id: string; req: any }> {
  const id = await start('bound-request', { ref });
  const req = await takeRequest(id, 0);
  assert.equal((await sendTo(req.replyTo, `reply-${id}-0`, { answer: 'one' }, { correlationId: req.correlationId })).status, 202);
  await api(gw.url, 'POST', `/api/queues/${enc('queue:work')}/ack`, { user: 'ops', body: { leases: [req.lease] } });
  await reach('bound-request', id, 'waiting', waitingOnStep(1));
  return { id, req };
}

test('replayed reply: the first reply sent again (same token, new id) while the flow waits on its second request does not answer the second step; the result is the real replies', { timeout: 60_000 }, async () => {
  const { id, req } = await answeredOnce('F-2');
  const before = await view('bound-request', id);
  await sendTo(req.replyTo, `replay-${id}-0`, { answer: 'one again' }, { correlationId: req.correlationId });
  // Whatever the door said, the run it may have woken ends where it was: waiting on step 1.
  await new Promise((r) => setTimeout(r, 500));
  const still = await reach('bound-request', id, 'waiting', (v) => v.updatedAt !== before.updatedAt || v.status === 'waiting');
  assert.equal(still.waitingOn.step, 1);
  assert.deepEqual(kinds(still), ['request queue:work', 'request queue:work']);
  const req2 = await takeRequest(id, 1);
  assert.equal((await sendTo(req2.replyTo, `reply-${id}-1`, { answer: 'two' }, { correlationId: req2.correlationId })).status, 202);
  await api(gw.url, 'POST', `/api/queues/${enc('queue:work')}/ack`, { user: 'ops', body: { leases: [req2.lease] } });
  assert.deepEqual((await reach('bound-request', id, 'completed')).result, { one: { answer: 'one' }, two: { answer: 'two' } });
});

test('replayed reply to a step that has its answer already is refused (403 reply_refused, audited), as DESIGN §3 says of anything that answers no waiting step', {
  timeout: 60_000,
}, async () => {
  const { id, req } = await answeredOnce('F-3');
  await assertRefusedReply(await sendTo(req.replyTo, `replay-${id}-0`, { answer: 'one again' }, { correlationId: req.correlationId }), req.replyTo, `replay-${id}-0`);
});

// --- (d) a reply from the wrong responder --------------------------------------------------------

test('wrong responder: a request to flow:bound-echo takes its answer only from that flow; a user with the right token is refused; the echo flow itself completes it', { timeout: 60_000 }, async () => {
  const id = await start('bound-other', { ref: 'W-1' });
  await reach('bound-other', id, 'waiting', waitingOnStep(0));
  const token = (await journal(id)).get(0)!.correlation!;
  assert.match(token, new RegExp(`^${id}:0:[0-9a-f]{32}$`));
  const address = `flow:bound-other/${id}`;
  await assertRefusedReply(await sendTo(address, 'wrong-responder-1', { echo: 'W-1', go: 'forged' }, { correlationId: token }), address, 'wrong-responder-1');
  assert.equal((await view('bound-other', id)).status, 'waiting');

  // The echo instance the request started waits for a go; given it, its result answers the request.
  const echo = await waitFor(async () => (await api(gw.url, 'GET', '/api/flows?name=bound-echo&limit=50', { user: 'ops' })).body.instances.find((i: any) => i.status === 'waiting'), 20_000, 'the waiting echo instance');
  assert.equal((await sendTo(`flow:bound-echo/${echo.instanceId}`, 'go-1', 'go')).status, 202);
  const v = await reach('bound-other', id, 'completed');
  assert.deepEqual(v.result, { body: { echo: 'W-1', go: 'go' }, sender: { kind: 'flow', name: 'bound-echo' } });
});

test('wrong responder for a broker: a request to mq:legacy/… is answered only by broker:legacy, whatever the token (the rule the instance applies)', () => {
  const entry: JournalEntry = { n: 0, kind: 'request', target: 'mq:legacy/payments.execute', at: new Date().toISOString(), done: false, correlation: 'abc:0:nonce' };
  const reply = (sender: { kind: string; name: string }) => ({ correlationId: 'abc:0:nonce', sender: sender as never, headers: {} });
  assert.equal(answers(entry, reply({ kind: 'broker', name: 'legacy' })), true);
  for (const s of [{ kind: 'user', name: 'legacy' }, { kind: 'broker', name: 'other' }, { kind: 'peer', name: 'legacy' }, { kind: 'webhook', name: 'legacy' }]) {
    assert.equal(answers(entry, reply(s)), false, `${s.kind}:${s.name} must not answer a request to mq:legacy`);
  }
  assert.equal(answers({ ...entry, target: 'peer:bank-b/trades' }, reply({ kind: 'peer', name: 'bank-b' })), true);
  assert.equal(answers({ ...entry, target: 'peer:bank-b/trades' }, reply({ kind: 'peer', name: 'bank-c' })), false);
});
