import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { api, enc, testConfig, waitFor, type USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Every ctx verb of a durable flow, for real: flow files written to a folder outside the checkout
// (they import only 'switchboard' and 'zod'), a real redis-server, the HTTP API as the world.
// Side effects inside ctx.step are counted in Redis through a client the test hands the flows on
// globalThis (the flows share this process), so "ran once" is a number we can read.

const ROOT = resolve(import.meta.dirname, '..', '..');
const PREFIX = `fctx${process.pid}`;
type User = keyof typeof USERS;

// The test's side of the flows: a Redis client for step side effects and a count of runs.
interface Hooks {
  redis: Redis;
  runs: Record<string, number>;
}
declare global {
  // eslint-disable-next-line no-var
  var __sbFlowsCtx: Hooks | undefined;
}

const HEADER = `import { defineFlow, FlowTimeout } from 'switchboard';
import { z } from 'zod';
const hooks = () => globalThis.__sbFlowsCtx;
`;

const FLOWS: Record<string, string> = {
  'ctx-send.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-send',
  input: z.object({ to: z.string(), text: z.string() }),
  async run(ctx, input) {
    const sent = await ctx.send(input.to, { text: input.text }, { subject: 'greeting', headers: { 'x-test': 'yes' } });
    return { sent: sent.id };
  },
});
`,
  'ctx-request.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-request',
  input: z.object({ question: z.string() }),
  async run(ctx, input) {
    const reply = await ctx.request('queue:ctx.requests', { question: input.question }, { timeout: '5m' });
    return { body: reply.body, sender: reply.sender, correlationId: reply.correlationId ?? null, id: reply.id };
  },
});
`,
  'ctx-request-timeout.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-request-timeout',
  input: z.object({}),
  async run(ctx) {
    try {
      await ctx.request('queue:ctx.nobody-answers', { hello: true }, { timeout: '1s' });
      return { timedOut: false };
    } catch (err) {
      if (!(err instanceof FlowTimeout)) throw err;
      const after = await ctx.send('queue:ctx.after-timeout', { caught: err.code });
      return { timedOut: true, name: err.name, code: err.code, step: err.step, after: after.id };
    }
  },
});
`,
  'ctx-receive.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-receive',
  input: z.object({}),
  async run(ctx) {
    const first = await ctx.receive({ match: { body: { kind: 'wanted' } } });
    const second = await ctx.receive();
    return {
      first: { id: first.id, body: first.body, sender: first.sender, to: first.to },
      second: { id: second.id, body: second.body },
    };
  },
});
`,
  'ctx-receive-timeout.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-receive-timeout',
  input: z.object({}),
  async run(ctx) {
    try {
      const m = await ctx.receive({ timeout: '1s' });
      return { timedOut: false, body: m.body };
    } catch (err) {
      if (!(err instanceof FlowTimeout)) throw err;
      return { timedOut: true, code: err.code, message: err.message };
    }
  },
});
`,
  'ctx-ask.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-ask',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const decision = await ctx.ask('group:ctx-approvers', {
      title: 'Approve ' + input.ref,
      data: { ref: input.ref },
      actions: ['approve', 'reject'],
      fields: { amount: 'number', note: 'text' },
    });
    return { decision };
  },
});
`,
  'ctx-sleep.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-sleep',
  input: z.object({ duration: z.string() }),
  async run(ctx, input) {
    const before = ctx.now();
    await ctx.sleep(input.duration);
    const after = ctx.now();
    return { before: before.toISOString(), after: after.toISOString() };
  },
});
`,
  'ctx-replay.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-replay',
  input: z.object({ key: z.string() }),
  async run(ctx, input) {
    // Not a ctx call on purpose: counts how often the function runs (replays), for the test.
    hooks().runs[ctx.id] = (hooks().runs[ctx.id] ?? 0) + 1;
    const first = await ctx.step('first', () => hooks().redis.incr(input.key + ':first'));
    const at = ctx.now();
    const id = ctx.uuid();
    const seen = await ctx.step('seen', () => ({ at: at.toISOString(), id }));
    ctx.log('ctx-replay before receive', { key: input.key });
    const m = await ctx.receive();
    ctx.log('ctx-replay after receive', { key: input.key });
    const second = await ctx.step('second', () => hooks().redis.incr(input.key + ':second'));
    return { first, second, at: at.toISOString(), id, seen, got: m.body };
  },
});
`,
  'ctx-cancel.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-cancel',
  input: z.object({ key: z.string(), wait: z.enum(['receive', 'sleep']), sleep: z.string().default('3s') }),
  async run(ctx, input) {
    await ctx.step('before', () => hooks().redis.incr(input.key + ':before'));
    if (input.wait === 'receive') await ctx.receive();
    else await ctx.sleep(input.sleep);
    await ctx.step('after', () => hooks().redis.incr(input.key + ':after'));
    await ctx.send('queue:ctx.cancel-out', { key: input.key });
    return { done: true };
  },
});
`,
  'ctx-retry.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-retry',
  input: z.object({ key: z.string() }),
  async run(ctx, input) {
    const prepared = await ctx.step('prepare', () => hooks().redis.incr(input.key + ':prepare'));
    const fixed = await ctx.step('needs-fix', async () => {
      await hooks().redis.incr(input.key + ':attempts');
      const v = await hooks().redis.get(input.key + ':fix');
      if (!v) throw Object.assign(new Error('the fix for ' + input.key + ' is not in yet'), { code: 'not_fixed' });
      return v;
    });
    return { prepared, fixed };
  },
});
`,
  'ctx-slow.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-slow',
  input: z.object({ key: z.string() }),
  async run(ctx, input) {
    await ctx.step('slow', async () => {
      await hooks().redis.set(input.key + ':in-step', '1');
      while (!(await hooks().redis.get(input.key + ':go'))) await new Promise((r) => setTimeout(r, 50));
    });
    const m = await ctx.receive();
    await ctx.send('queue:ctx.after-cancel', { key: input.key, got: m.body });
    return 'finished';
  },
});
`,
  'ctx-long-step.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-long-step',
  input: z.object({ key: z.string() }),
  async run(ctx, input) {
    await ctx.step('long', async () => {
      await hooks().redis.incr(input.key + ':entered');
      while (!(await hooks().redis.get(input.key + ':go'))) await new Promise((r) => setTimeout(r, 50));
    });
    const m = await ctx.receive();
    return { got: m.body };
  },
});
`,
  'ctx-retry-request.ts': `${HEADER}
export default defineFlow({
  name: 'ctx-retry-request',
  input: z.object({ q: z.string() }),
  async run(ctx, input) {
    const reply = await ctx.request('queue:ctx.retry-requests', { q: input.q }, { timeout: '1s' });
    return { answer: reply.body };
  },
});
`,
};

let redis: TestRedis;
let gw: Gateway;
let flowsDir: string;
let client: Redis;
let runs: Queue;
const logLines: string[] = [];

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  globalThis.__sbFlowsCtx = { redis: client, runs: {} };
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-flows-ctx-'));
  // No package.json: flow files are ES modules wherever they lie (the loader says so).
  for (const [file, text] of Object.entries(FLOWS)) writeFileSync(join(flowsDir, file), text);
  // startTestGateway's config, with a logger whose lines we keep (ctx.log is checked below).
  const raw = await testConfig(redis.url, {
    redis: { url: redis.url, prefix: PREFIX },
    // Every wake replays from the first step: these tests prove replay (the sticky cache that
    // usually spares it is bypassed after a crash or on another process, and must not hide it).
    flows: { dir: flowsDir, lockTimeout: '3s', stalledCheck: '1s', stickyInstances: 0 },
    log: { level: 'info' },
    permissions: [
      {
        group: 'ops',
        allow: [
          { address: 'queue:**', verbs: ['send', 'consume', 'browse'] },
          { address: 'flow:**', verbs: ['start', 'browse', 'send'] },
          { address: 'group:ctx-approvers', verbs: ['consume'] },
        ],
      },
      { group: 'clerks', allow: [{ address: 'flow:*', verbs: ['start'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  const config = parseConfig(stringify(raw), 'test-config.yaml', {});
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  gw = await startGateway({ config, log: createLogger('info', sink) });
  runs = new Queue('{flow-runs}', { connection: { url: redis.url }, prefix: PREFIX });
});

after(async () => {
  await gw?.stop();
  await runs?.close();
  await client?.quit();
  globalThis.__sbFlowsCtx = undefined;
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

// --- helpers ----------------------------------------------------------------------------------

const FINISHED = ['completed', 'failed', 'cancelled'];

async function start(name: string, input: unknown, user: User = 'ops', id?: string): Promise<string> {
  const r = await api(gw.url, 'POST', `/api/flows/${name}`, { user, body: { input, ...(id ? { id } : {}) } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(typeof r.body.instanceId, 'string');
  return r.body.instanceId;
}

async function view(name: string, id: string, user: User = 'ops'): Promise<any> {
  const r = await api(gw.url, 'GET', `/api/flows/${name}/${id}`, { user });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Waits until the instance has `status` (or has finished otherwise, which then fails the test). */
async function reach(name: string, id: string, status: string, extra: (v: any) => boolean = () => true): Promise<any> {
  const v = await waitFor(async () => {
    const b = await view(name, id);
    return (b.status === status && extra(b)) || (FINISHED.includes(b.status) && b.status !== status) ? b : undefined;
  }, 30_000, `${name}/${id} to be ${status}`);
  assert.equal(v.status, status, JSON.stringify(v));
  return v;
}

async function deliver(to: string, body: unknown, more: Record<string, unknown> = {}, user: User = 'ops') {
  return api(gw.url, 'POST', '/api/messages', { user, body: { to, body, ...more } });
}

async function browse(address: string): Promise<any> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}?limit=100`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

const count = async (key: string) => Number((await client.get(key)) ?? 0);
const kinds = (v: any) => v.steps.map((s: any) => (s.target ? `${s.kind} ${s.target}` : s.kind));

/** Runs of this instance queued or running, timers due within a minute included (a 5m timeout is not). */
async function pendingRuns(id: string): Promise<number> {
  const jobs = await runs.getJobs(['delayed', 'waiting', 'active', 'prioritized', 'waiting-children']);
  return jobs.filter((j) => j?.data?.id === id && j.timestamp + (j.opts.delay ?? 0) < Date.now() + 60_000).length;
}

function assertViewShape(v: any): void {
  assert.equal(typeof v.instanceId, 'string');
  assert.equal(typeof v.flow, 'string');
  assert.ok(['running', 'waiting', 'completed', 'failed', 'cancelled'].includes(v.status), v.status);
  assert.ok('input' in v, 'input is missing');
  assert.ok(Array.isArray(v.steps));
  for (const s of v.steps) {
    assert.equal(typeof s.n, 'number');
    assert.equal(typeof s.kind, 'string');
    assert.ok(s.target === undefined || typeof s.target === 'string');
    assert.ok(!Number.isNaN(Date.parse(s.at)), `step ${s.n} at ${s.at}`);
  }
  assert.deepEqual(v.steps.map((s: any) => s.n), v.steps.map((_: unknown, i: number) => i), 'steps are numbered 0..n-1 in order');
}

// --- loading ----------------------------------------------------------------------------------

test('flow files outside the checkout import switchboard and zod and are all deployed', async () => {
  assert.ok(relative(ROOT, flowsDir).startsWith('..'), `${flowsDir} is inside the checkout`);
  const r = await api(gw.url, 'GET', '/api/flows', { user: 'ops' });
  assert.equal(r.status, 200);
  assert.deepEqual([...r.body.flows].sort(), Object.keys(FLOWS).map((f) => f.replace(/\.ts$/, '')).sort());
});

// --- send --------------------------------------------------------------------------------------

test('ctx.send: the message id is <instanceId>:<step>, the sender is flow:<name>, and the status shows the step', async () => {
  const id = await start('ctx-send', { to: 'queue:ctx.out', text: 'hi' });
  const v = await reach('ctx-send', id, 'completed');
  assert.deepEqual(v.result, { sent: `${id}:0` });
  const q = await browse('queue:ctx.out');
  assert.equal(q.depth, 1);
  const m = q.messages[0];
  assert.equal(m.id, `${id}:0`);
  assert.deepEqual(m.sender, { kind: 'flow', name: 'ctx-send' });
  assert.equal(m.from, `flow:ctx-send/${id}`);
  assert.equal(m.subject, 'greeting');
  assert.equal(m.headers['x-test'], 'yes');
  assert.deepEqual(m.body, { text: 'hi' });
  // DESIGN §6: {instanceId, flow, status, waitingOn?, input, result?, error?, steps: [{n, kind, target?, at}]}
  assertViewShape(v);
  assert.equal(v.instanceId, id);
  assert.equal(v.flow, 'ctx-send');
  assert.deepEqual(v.input, { to: 'queue:ctx.out', text: 'hi' });
  assert.equal(v.waitingOn, undefined);
  assert.equal(v.error, undefined);
  assert.deepEqual(kinds(v), ['send queue:ctx.out']);
  assert.equal(v.startedBy, 'user:ops');
});

test('starting twice with the same message id gives one instance (and one send)', async () => {
  const first = await api(gw.url, 'POST', '/api/flows/ctx-send', { user: 'ops', body: { id: 'start-once-1', input: { to: 'queue:ctx.once', text: 'x' } } });
  const second = await api(gw.url, 'POST', '/api/flows/ctx-send', { user: 'ops', body: { id: 'start-once-1', input: { to: 'queue:ctx.once', text: 'x' } } });
  assert.equal(first.status, 202);
  assert.equal(second.status, 202);
  assert.equal(second.body.instanceId, first.body.instanceId);
  assert.equal(first.body.duplicate, false);
  assert.equal(second.body.duplicate, true);
  await reach('ctx-send', first.body.instanceId, 'completed');
  const list = await api(gw.url, 'GET', '/api/flows?name=ctx-send&limit=500', { user: 'ops' });
  assert.equal(list.status, 200);
  assert.equal(list.body.instances.filter((i: any) => i.instanceId === first.body.instanceId).length, 1);
  assert.equal((await browse('queue:ctx.once')).depth, 1);
});

// --- request -----------------------------------------------------------------------------------

test('ctx.request: replyTo and correlation id go out; a stray message does not resume it; the reply does', async () => {
  const id = await start('ctx-request', { question: 'ping' });
  // The test is the responder: peek-lock receive on the queue the flow asked.
  const got = await waitFor(async () => {
    const r = await api(gw.url, 'POST', `/api/queues/${enc('queue:ctx.requests')}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 60 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.messages[0];
  }, 20_000, 'the request on queue:ctx.requests');
  assert.equal(got.id, `${id}:0`);
  assert.deepEqual(got.sender, { kind: 'flow', name: 'ctx-request' });
  assert.equal(got.replyTo, `flow:ctx-request/${id}`);
  // The step id and a 128-bit nonce: knowing the instance id is not enough to answer for it.
  assert.match(got.correlationId, new RegExp(`^${id}:0:[0-9a-f]{32}$`));
  assert.deepEqual(got.body, { question: 'ping' });

  const waiting = await reach('ctx-request', id, 'waiting');
  assert.deepEqual({ step: waiting.waitingOn.step, kind: waiting.waitingOn.kind, target: waiting.waitingOn.target }, { step: 0, kind: 'request', target: 'queue:ctx.requests' });
  assert.ok(!Number.isNaN(Date.parse(waiting.waitingOn.until)), 'a request with a timeout waits until a time');
  assertViewShape(waiting);

  // Not correlated: stays in the inbox; the request is not answered by it.
  assert.equal((await deliver(got.replyTo, { answer: 'stray' }, { id: `stray-${id}` })).status, 202);
  await waitFor(async () => (await pendingRuns(id)) === 0, 20_000, 'the run woken by the stray message');
  assert.equal((await view('ctx-request', id)).status, 'waiting');
  // A forged answer (the guessable step id without its nonce, or a wrong nonce) is refused and
  // audited, never reaches the instance, and the step keeps waiting for the real reply.
  for (const forged of [`${id}:0`, `${id}:0:${'0'.repeat(32)}`]) {
    const r = await deliver(got.replyTo, { answer: 'forged' }, { id: `forged-${forged}`, correlationId: forged });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'reply_refused');
  }
  const audit = await api(gw.url, 'GET', `/api/audit?action=access.denied&limit=20`, { user: 'ops' });
  assert.ok(audit.body.entries.some((e: { target?: string; detail?: string }) => e.target === got.replyTo && /claims to answer/.test(e.detail ?? '')), JSON.stringify(audit.body));
  assert.equal((await view('ctx-request', id)).status, 'waiting');
  const reply = await deliver(got.replyTo, { answer: 'pong' }, { id: `reply-${id}`, correlationId: got.correlationId });
  assert.equal(reply.status, 202, JSON.stringify(reply.body));
  const acked = await api(gw.url, 'POST', `/api/queues/${enc('queue:ctx.requests')}/ack`, { user: 'ops', body: { leases: [got.lease] } });
  assert.equal(acked.status, 200);
  assert.equal(acked.body.acked, 1);

  const v = await reach('ctx-request', id, 'completed');
  assert.deepEqual(v.result, { body: { answer: 'pong' }, sender: { kind: 'user', name: 'ops' }, correlationId: got.correlationId, id: `reply-${id}` });
  assert.deepEqual(kinds(v), ['request queue:ctx.requests']);
});

test('ctx.request timeout: the flow catches FlowTimeout and carries on', async () => {
  const id = await start('ctx-request-timeout', {});
  const v = await reach('ctx-request-timeout', id, 'completed');
  assert.deepEqual(v.result, { timedOut: true, name: 'FlowTimeout', code: 'flow_timeout', step: 0, after: `${id}:1` });
  assert.deepEqual(kinds(v), ['request queue:ctx.nobody-answers', 'send queue:ctx.after-timeout']);
  assert.match(v.steps[0].error, /before the timeout/);
  // The request itself went out once, with its correlation id.
  const q = await browse('queue:ctx.nobody-answers');
  assert.equal(q.messages.filter((m: any) => m.id === `${id}:0`).length, 1);
  assert.match(q.messages.find((m: any) => m.id === `${id}:0`).correlationId, new RegExp(`^${id}:0:[0-9a-f]{32}$`));
});

// --- receive -----------------------------------------------------------------------------------

test('ctx.receive with a match: a message that does not match stays for a later receive', async () => {
  const id = await start('ctx-receive', {});
  const waiting = await reach('ctx-receive', id, 'waiting');
  assert.deepEqual(waiting.waitingOn, { step: 0, kind: 'receive' });
  assert.deepEqual(waiting.steps.map((s: any) => [s.n, s.kind, s.done]), [[0, 'receive', false]]);

  const to = `flow:ctx-receive/${id}`;
  assert.equal((await deliver(to, { kind: 'other', n: 1 }, { id: `other-${id}` })).status, 202);
  // The non-matching message woke the instance, which replayed and went back to the same wait.
  await waitFor(async () => (await pendingRuns(id)) === 0, 20_000, 'the run woken by the message');
  const still = await view('ctx-receive', id);
  assert.equal(still.status, 'waiting');
  assert.deepEqual(still.waitingOn, { step: 0, kind: 'receive' });
  assert.deepEqual(still.steps.map((s: any) => [s.n, s.kind, s.done]), [[0, 'receive', false]]);
  assert.equal((await deliver(to, { kind: 'wanted', n: 2 }, { id: `wanted-${id}` })).status, 202);

  const v = await reach('ctx-receive', id, 'completed');
  assert.deepEqual(v.result, {
    first: { id: `wanted-${id}`, body: { kind: 'wanted', n: 2 }, sender: { kind: 'user', name: 'ops' }, to },
    second: { id: `other-${id}`, body: { kind: 'other', n: 1 } },
  });
  assert.deepEqual(kinds(v), ['receive', 'receive']);
});

test('ctx.receive timeout throws FlowTimeout into the flow', async () => {
  const id = await start('ctx-receive-timeout', {});
  const v = await reach('ctx-receive-timeout', id, 'completed');
  assert.equal(v.result.timedOut, true);
  assert.equal(v.result.code, 'flow_timeout');
  assert.match(v.result.message, /step 0: no message arrived before the timeout/);
  assert.equal(v.steps[0].kind, 'receive');
  assert.equal(v.steps[0].done, true);
});

// --- ask ---------------------------------------------------------------------------------------

test('ctx.ask: a task for the group; its decision resumes the flow with {action, fields, comment, by, at}', async () => {
  const id = await start('ctx-ask', { ref: 'A-1' });
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: any) => t.title === 'Approve A-1'), 20_000, 'the task');
  assert.equal(task.group, 'ctx-approvers');
  assert.deepEqual(task.actions, ['approve', 'reject']);
  assert.deepEqual(task.data, { ref: 'A-1' });
  assert.equal(task.status, 'open');
  const waiting = await reach('ctx-ask', id, 'waiting');
  assert.deepEqual({ kind: waiting.waitingOn.kind, target: waiting.waitingOn.target }, { kind: 'ask', target: 'group:ctx-approvers' });
  // Someone without consume on the group cannot decide it.
  const denied = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'clerk', body: { action: 'approve' } });
  assert.equal(denied.status, 404);

  const decided = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve', fields: { amount: '5' }, comment: 'fine by me' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  const v = await reach('ctx-ask', id, 'completed');
  const d = v.result.decision;
  assert.deepEqual({ ...d, at: undefined }, { action: 'approve', fields: { amount: 5 }, comment: 'fine by me', by: 'user:ops', at: undefined });
  assert.ok(!Number.isNaN(Date.parse(d.at)), d.at);
  assert.deepEqual(kinds(v), ['ask group:ctx-approvers']);
});

// --- sleep -------------------------------------------------------------------------------------

test('ctx.sleep waits durably on a timer and then goes on (its waiting status: see the cancel tests)', async () => {
  const id = await start('ctx-sleep', { duration: '2s' });
  const v = await reach('ctx-sleep', id, 'completed');
  assert.deepEqual(kinds(v), ['now', 'sleep', 'now']);
  assert.ok(Date.parse(v.result.after) - Date.parse(v.result.before) >= 2000, JSON.stringify(v.result));
  assert.equal(v.steps[1].done, true);
});

// --- step, now, uuid, log, replay ---------------------------------------------------------------

test('replay: step → receive → step runs each side effect once; now/uuid are the same on every replay; log is not repeated', async () => {
  const key = `replay-${Date.now()}`;
  const id = await start('ctx-replay', { key });
  const waiting = await reach('ctx-replay', id, 'waiting');
  assert.deepEqual(kinds(waiting), ['step first', 'now', 'uuid', 'step seen', 'receive']);
  assert.equal(await count(`${key}:first`), 1);

  assert.equal((await deliver(`flow:ctx-replay/${id}`, { go: true })).status, 202);
  const v = await reach('ctx-replay', id, 'completed');
  assert.ok((globalThis.__sbFlowsCtx!.runs[id] ?? 0) >= 2, 'the flow function ran again after the receive (replay)');
  // The first step ran once; on replay it returned its journaled result.
  assert.equal(await count(`${key}:first`), 1);
  assert.equal(await count(`${key}:second`), 1);
  assert.equal(v.result.first, 1);
  assert.equal(v.result.second, 1);
  assert.deepEqual(v.result.got, { go: true });
  // now() and uuid() seen in the replay (the return) are those of the first run (recorded by 'seen').
  assert.deepEqual(v.result.seen, { at: v.result.at, id: v.result.id });
  assert.match(v.result.id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(kinds(v), ['step first', 'now', 'uuid', 'step seen', 'receive', 'step second']);
  // ctx.log speaks only when the flow runs ahead, so each line appears once though the flow replayed.
  const logged = (msg: string) => logLines.map((l) => JSON.parse(l)).filter((l) => l.msg === msg && l.instance === id && l.key === key);
  assert.equal(logged('ctx-replay before receive').length, 1);
  assert.equal(logged('ctx-replay after receive').length, 1);
  assert.equal(logged('ctx-replay after receive')[0].flow, 'ctx-replay');
});

// --- status page and list -----------------------------------------------------------------------

test('the status page /flows/:name/:id shows a logged-in user the status and steps; without login it redirects', async () => {
  const id = await start('ctx-send', { to: 'queue:ctx.page', text: 'page' });
  await reach('ctx-send', id, 'completed');
  const anon = await fetch(`${gw.url}/flows/ctx-send/${id}`, { redirect: 'manual' });
  assert.equal(anon.status, 303);
  assert.match(anon.headers.get('location') ?? '', /^\/login\?next=/);

  const cookies = new Map<string, string>();
  const req = async (method: string, path: string, form?: Record<string, string>) => {
    const headers: Record<string, string> = { accept: 'text/html' };
    if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(gw.url + path, { method, headers, body: form ? new URLSearchParams(form).toString() : undefined, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(';')[0]!;
      cookies.set(pair.slice(0, pair.indexOf('=')).trim(), pair.slice(pair.indexOf('=') + 1).trim());
    }
    return { status: res.status, text: await res.text() };
  };
  const loginPage = await req('GET', '/login');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(loginPage.text)?.[1];
  assert.ok(csrf, 'no CSRF token on the login page');
  const login = await req('POST', '/login', { _csrf: csrf, username: 'ops', password: 'ops-pw', next: '/' });
  assert.equal(login.status, 303, login.text);
  const page = await req('GET', `/flows/ctx-send/${id}`);
  assert.equal(page.status, 200, page.text);
  assert.match(page.text, new RegExp(`Flow ctx-send <span class="muted">${id}</span>`));
  assert.match(page.text, /Status: <strong>completed<\/strong>/);
  assert.match(page.text, /<td>0<\/td><td>send<\/td><td>queue:ctx\.page<\/td>/);
  const missing = await req('GET', '/flows/ctx-send/no-such-instance');
  assert.equal(missing.status, 404);
});

test('GET /api/flows lists instances; a user without browse sees only the ones they started', async () => {
  const mine = await start('ctx-send', { to: 'queue:ctx.list', text: 'clerk' }, 'clerk');
  const theirs = await start('ctx-send', { to: 'queue:ctx.list', text: 'ops' }, 'ops');
  await reach('ctx-send', mine, 'completed');
  await reach('ctx-send', theirs, 'completed');
  const all = await api(gw.url, 'GET', '/api/flows?name=ctx-send&limit=500', { user: 'ops' });
  assert.equal(all.status, 200);
  const ids = all.body.instances.map((i: any) => i.instanceId);
  assert.ok(ids.includes(mine) && ids.includes(theirs));
  const row = all.body.instances.find((i: any) => i.instanceId === theirs);
  assert.deepEqual({ flow: row.flow, status: row.status }, { flow: 'ctx-send', status: 'completed' });
  const clerks = await api(gw.url, 'GET', '/api/flows?limit=500', { user: 'clerk' });
  assert.equal(clerks.status, 200);
  assert.deepEqual(clerks.body.instances.map((i: any) => i.instanceId), [mine]);
});

// --- cancel ------------------------------------------------------------------------------------

test('cancel: a waiting instance runs no further steps, its message is refused, and who cancelled is recorded', async () => {
  const key = `cancel-r-${Date.now()}`;
  const id = await start('ctx-cancel', { key, wait: 'receive' });
  await reach('ctx-cancel', id, 'waiting');
  const cancelled = await api(gw.url, 'POST', `/api/flows/ctx-cancel/${id}/cancel`, { user: 'ops' });
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  assert.equal(cancelled.body.status, 'cancelled');
  assert.equal(cancelled.body.cancelledBy, 'user:ops');
  const late = await deliver(`flow:ctx-cancel/${id}`, { late: true });
  assert.equal(late.status, 409, JSON.stringify(late.body));
  assert.match(late.body.error.message, /cancelled/);
  await waitFor(async () => (await pendingRuns(id)) === 0, 20_000, 'no run of the instance left');
  const v = await view('ctx-cancel', id);
  assert.equal(v.status, 'cancelled');
  assert.equal(v.cancelledBy, 'user:ops');
  assert.deepEqual(kinds(v), ['step before', 'receive']);
  assert.equal(await count(`${key}:after`), 0);
  const again = await api(gw.url, 'POST', `/api/flows/ctx-cancel/${id}/cancel`, { user: 'ops' });
  assert.equal(again.status, 409);
});

test('cancel: a sleeping instance stays cancelled when its timer fires', async () => {
  const key = `cancel-s-${Date.now()}`;
  const id = await start('ctx-cancel', { key, wait: 'sleep', sleep: '3s' }, 'clerk');
  const waiting = await reach('ctx-cancel', id, 'waiting', (b) => b.waitingOn?.kind === 'sleep');
  assert.equal(waiting.waitingOn.step, 1);
  assert.ok(Date.parse(waiting.waitingOn.until) > Date.parse(waiting.steps[1].at), JSON.stringify(waiting.waitingOn));
  // The starter may cancel their own instance.
  const cancelled = await api(gw.url, 'POST', `/api/flows/ctx-cancel/${id}/cancel`, { user: 'clerk' });
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  assert.equal(cancelled.body.cancelledBy, 'user:clerk');
  // The timer's run still happens; it must find the instance cancelled and do nothing.
  await waitFor(async () => (await pendingRuns(id)) === 0, 20_000, 'the timer run of the instance');
  const v = await view('ctx-cancel', id);
  assert.equal(v.status, 'cancelled');
  assert.deepEqual(kinds(v), ['step before', 'sleep']);
  assert.equal(await count(`${key}:before`), 1);
  assert.equal(await count(`${key}:after`), 0);
  assert.equal((await browse('queue:ctx.cancel-out')).messages.filter((m: any) => m.body.key === key).length, 0);
});

// --- failure and retry ---------------------------------------------------------------------------

test('retry: a step that throws fails the instance with its error; an admin retry after the fix completes it from that step', async () => {
  const key = `retry-${Date.now()}`;
  const id = await start('ctx-retry', { key }, 'clerk');
  const failed = await reach('ctx-retry', id, 'failed');
  assert.deepEqual(failed.error, { code: 'not_fixed', message: `the fix for ${key} is not in yet` });
  assert.deepEqual(kinds(failed), ['step prepare', 'step needs-fix']);
  assert.equal(failed.steps[1].error, `the fix for ${key} is not in yet`);
  assert.equal(await count(`${key}:prepare`), 1);
  assert.equal(await count(`${key}:attempts`), 1);

  // The starter may look at it but retry needs admin.
  assert.equal((await view('ctx-retry', id, 'clerk')).status, 'failed');
  const notAdmin = await api(gw.url, 'POST', `/api/flows/ctx-retry/${id}/retry`, { user: 'clerk' });
  assert.equal(notAdmin.status, 403, JSON.stringify(notAdmin.body));
  assert.equal((await view('ctx-retry', id)).status, 'failed');

  await client.set(`${key}:fix`, 'patched');
  const retried = await api(gw.url, 'POST', `/api/flows/ctx-retry/${id}/retry`, { user: 'ops' });
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
  const v = await reach('ctx-retry', id, 'completed');
  assert.deepEqual(v.result, { prepared: 1, fixed: 'patched' });
  assert.equal(v.error, undefined);
  assert.equal(await count(`${key}:prepare`), 1, 'the step before the failed one is not run again');
  assert.equal(await count(`${key}:attempts`), 2);
  assert.deepEqual(kinds(v), ['step prepare', 'step needs-fix']);
  const twice = await api(gw.url, 'POST', `/api/flows/ctx-retry/${id}/retry`, { user: 'ops' });
  assert.equal(twice.status, 409);
});

test('cancel while a run is inside a step: the instance stays cancelled and runs nothing after it', async () => {
  const key = `slow-${Date.now()}`;
  const id = await start('ctx-slow', { key });
  await waitFor(async () => (await client.get(`${key}:in-step`)) === '1', 20_000, 'the slow step to start');
  const cancelled = await api(gw.url, 'POST', `/api/flows/ctx-slow/${id}/cancel`, { user: 'ops' });
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  await client.set(`${key}:go`, '1');
  // The run ends (the step finishes, the flow reaches receive); the status must stay cancelled.
  await waitFor(async () => (await pendingRuns(id)) === 0, 20_000, 'the run to end');
  const v = await view('ctx-slow', id);
  assert.equal(v.status, 'cancelled');
  assert.equal(v.cancelledBy, 'user:ops');
  const late = await deliver(`flow:ctx-slow/${id}`, { late: true });
  assert.equal(late.status, 409, JSON.stringify(late.body));
  assert.equal((await browse('queue:ctx.after-cancel')).depth, 0);
});

test('a run inside a step for longer than the lock time keeps its lock: a message arriving meanwhile does not start a second run of the step', async () => {
  const key = `long-${Date.now()}`;
  const id = await start('ctx-long-step', { key });
  await waitFor(async () => (await count(`${key}:entered`)) === 1, 20_000, 'the long step to start');
  // Past the 3 s lock of the run: only its refreshes keep it. Then a wake while it still runs.
  await new Promise((r) => setTimeout(r, 4000));
  const delivered = await deliver(`flow:ctx-long-step/${id}`, { n: 1 });
  assert.equal(delivered.status, 202, JSON.stringify(delivered.body));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await count(`${key}:entered`), 1, 'a second run went into the step while the first was in it');
  await client.set(`${key}:go`, '1');
  const v = await reach('ctx-long-step', id, 'completed');
  assert.deepEqual(v.result, { got: { n: 1 } });
  assert.equal(await count(`${key}:entered`), 1);
});

test('retry after a request timed out sends the request again with a new id, and the reply completes it', async () => {
  const id = await start('ctx-retry-request', { q: 'again?' });
  const failed = await reach('ctx-retry-request', id, 'failed');
  assert.match(failed.error.message, /no reply arrived before the timeout/);
  const first = await api(gw.url, 'POST', `/api/queues/${enc('queue:ctx.retry-requests')}/receive`, { user: 'ops', body: { max: 10, leaseSeconds: 60 } });
  assert.deepEqual(first.body.messages.map((m: { id: string }) => m.id), [`${id}:0`]);
  await api(gw.url, 'POST', `/api/queues/${enc('queue:ctx.retry-requests')}/ack`, { user: 'ops', body: { leases: first.body.messages.map((m: { lease: string }) => m.lease) } });

  assert.equal((await api(gw.url, 'POST', `/api/flows/ctx-retry-request/${id}/retry`, { user: 'ops' })).status, 200);
  const again = await waitFor(async () => {
    const r = await api(gw.url, 'POST', `/api/queues/${enc('queue:ctx.retry-requests')}/receive`, { user: 'ops', body: { max: 10, leaseSeconds: 60 } });
    return r.body.messages.length ? r.body.messages : undefined;
  }, 20_000, 'the request to be sent again');
  assert.equal(again.length, 1);
  assert.equal(again[0].id, `${id}:0:r1`, 'a new id, or the first would have swallowed it as a duplicate');
  const reply = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: again[0].replyTo, correlationId: again[0].correlationId, body: 'yes' } });
  assert.equal(reply.status, 202);
  const done = await reach('ctx-retry-request', id, 'completed');
  assert.deepEqual(done.result, { answer: 'yes' });
});

// --- permissions and errors ------------------------------------------------------------------------

test('start needs the start permission', async () => {
  const r = await api(gw.url, 'POST', '/api/flows/ctx-send', { user: 'nobody', body: { input: { to: 'queue:ctx.x', text: 'x' } } });
  assert.equal(r.status, 403);
  assert.equal(r.body.error.code, 'forbidden');
  const anon = await api(gw.url, 'POST', '/api/flows/ctx-send', { body: { input: { to: 'queue:ctx.x', text: 'x' } } });
  assert.equal(anon.status, 401);
});

test('viewing needs browse or being the starter: others get 404', async () => {
  const byOps = await start('ctx-send', { to: 'queue:ctx.view', text: 'a' }, 'ops');
  const byClerk = await start('ctx-send', { to: 'queue:ctx.view', text: 'b' }, 'clerk');
  await reach('ctx-send', byOps, 'completed');
  assert.equal((await api(gw.url, 'GET', `/api/flows/ctx-send/${byOps}`, { user: 'clerk' })).status, 404);
  assert.equal((await api(gw.url, 'GET', `/api/flows/ctx-send/${byOps}`, { user: 'nobody' })).status, 404);
  assert.equal((await view('ctx-send', byClerk, 'clerk')).startedBy, 'user:clerk');
  assert.equal((await view('ctx-send', byClerk, 'ops')).startedBy, 'user:clerk');
  // Neither starter nor admin: no cancel either.
  assert.equal((await api(gw.url, 'POST', `/api/flows/ctx-send/${byOps}/cancel`, { user: 'clerk' })).status, 404);
});

test('unknown flows and instances are 404', async () => {
  const start404 = await api(gw.url, 'POST', '/api/flows/no-such-flow', { user: 'ops', body: { input: {} } });
  assert.equal(start404.status, 404);
  assert.match(start404.body.error.message, /no flow named 'no-such-flow'/);
  assert.equal((await api(gw.url, 'GET', '/api/flows/ctx-send/no-such-instance', { user: 'ops' })).status, 404);
  assert.equal((await api(gw.url, 'GET', '/api/flows/no-such-flow/no-such-instance', { user: 'ops' })).status, 404);
  assert.equal((await api(gw.url, 'POST', '/api/flows/ctx-send/no-such-instance/retry', { user: 'ops' })).status, 404);
  const msg = await deliver('flow:ctx-send/no-such-instance', { x: 1 });
  assert.equal(msg.status, 404);
  assert.equal((await deliver('flow:no-such-flow', { x: 1 })).status, 404);
  // An instance of another flow is not found under this flow's name.
  const id = await start('ctx-send', { to: 'queue:ctx.x404', text: 'x' });
  assert.equal((await api(gw.url, 'GET', `/api/flows/ctx-receive/${id}`, { user: 'ops' })).status, 404);
});

test('a bad input is 400 naming the field, from the API and from flow:<name>, and starts nothing', async () => {
  const before = (await api(gw.url, 'GET', '/api/flows?name=ctx-send&limit=500', { user: 'ops' })).body.instances.length;
  const bad = await api(gw.url, 'POST', '/api/flows/ctx-send', { user: 'ops', body: { input: { to: 'queue:ctx.bad', text: 42 } } });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'bad_input');
  assert.match(bad.body.error.message, /input for flow 'ctx-send' is not valid: text: /);
  assert.doesNotMatch(bad.body.error.message, /\bto: /);
  const viaAddress = await deliver('flow:ctx-send', { to: 'queue:ctx.bad' });
  assert.equal(viaAddress.status, 400);
  assert.match(viaAddress.body.error.message, /text: /);
  const afterwards = (await api(gw.url, 'GET', '/api/flows?name=ctx-send&limit=500', { user: 'ops' })).body.instances.length;
  assert.equal(afterwards, before);
  assert.equal((await browse('queue:ctx.bad')).depth, 0);
});

test('delivering to a completed instance is 409', async () => {
  const id = await start('ctx-send', { to: 'queue:ctx.done', text: 'x' });
  await reach('ctx-send', id, 'completed');
  const r = await deliver(`flow:ctx-send/${id}`, { more: true });
  assert.equal(r.status, 409);
  assert.equal(r.body.error.code, 'conflict');
  assert.match(r.body.error.message, /has completed/);
});
