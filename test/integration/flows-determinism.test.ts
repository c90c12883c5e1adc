import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { StoredMessage } from '../../src/core/message.ts';
import { FlowLoadError } from '../../src/flows/errors.ts';
import { loadFlows } from '../../src/flows/loader.ts';
import { FlowRuntime } from '../../src/flows/runtime.ts';
import { InstanceStore, type InstanceMeta, type JournalEntry } from '../../src/flows/store.ts';
import type { Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// What keeps running flows safe across deploys: a changed flow file that would do something else
// at a recorded step stops the instance instead (non-determinism detection); flow files that
// cannot be loaded stop the start naming the file; and recorded journals of a real example-flow
// run replay against today's code (STYLE lesson 2; re-record with RECORD_JOURNALS=1).

const ROOT = resolve(import.meta.dirname, '..', '..');
const FIXTURE = join(ROOT, 'test', 'fixtures', 'journals', 'payment-check.json');
const PREFIX = `fdet${process.pid}`;

const HEAD = `import { defineFlow } from 'switchboard';\nimport { z } from 'zod';\n`;
const flow = (name: string, body: string) => `${HEAD}
export default defineFlow({
  name: '${name}',
  input: z.object({ tag: z.string() }),
  async run(ctx, input) {
${body}
  },
});
`;

// Version 1 is deployed first; the gateway then restarts with version 2 of the same files.
const V1: Record<string, string> = {
  'det-kind.ts': flow('det-kind', `
    await ctx.send('queue:det.kind-out', { tag: input.tag, v: 1 });
    await ctx.receive();
    await ctx.send('queue:det.kind-out', { tag: input.tag, v: 1, after: true });
    return { v: 1 };`),
  'det-target.ts': flow('det-target', `
    await ctx.send('queue:det.target-a', { tag: input.tag, v: 1 });
    await ctx.receive();
    await ctx.send('queue:det.target-a', { tag: input.tag, v: 1, after: true });
    return { v: 1 };`),
  'det-same.ts': flow('det-same', `
    await ctx.send('queue:det.same-out', { tag: input.tag });
    const m = await ctx.receive();
    await ctx.send('queue:det.same-out', { tag: input.tag, after: true });
    return { got: m.body };`),
};
const V2: Record<string, string> = {
  // Step 1 was a receive; now it is a step (whose function must not run) and more sends.
  'det-kind.ts': flow('det-kind', `
    await ctx.send('queue:det.kind-out', { tag: input.tag, v: 2 });
    await ctx.step('check', () => { globalThis.__sbDetRan.push(ctx.id); return true; });
    await ctx.send('queue:det.kind-changed', { tag: input.tag, v: 2 });
    await ctx.receive();
    return { v: 2 };`),
  // Step 0 sent to queue:det.target-a; now it sends to queue:det.target-b.
  'det-target.ts': flow('det-target', `
    await ctx.send('queue:det.target-b', { tag: input.tag, v: 2 });
    await ctx.receive();
    await ctx.send('queue:det.target-b', { tag: input.tag, v: 2, after: true });
    return { v: 2 };`),
  'det-same.ts': V1['det-same.ts']!,
};

// Flow folders that must each stop the start.
const BROKEN: Record<string, Record<string, string>> = {
  'syntax-error': { 'broken.ts': `${HEAD}export default defineFlow({ name: 'broken', input: z.object({}), async run() { return { ; } } });\n` },
  'no-default': { 'named-only.ts': `${HEAD}export const flow = defineFlow({ name: 'named-only', input: z.object({}), async run() { return 1; } });\n` },
  duplicate: {
    'a-first.ts': `${HEAD}export default defineFlow({ name: 'twin', input: z.object({}), async run() { return 1; } });\n`,
    'b-second.ts': `${HEAD}export default defineFlow({ name: 'twin', input: z.object({}), async run() { return 2; } });\n`,
  },
  'imports-gateway': { 'starts-gateways.ts': `import { startGateway } from 'switchboard/gateway';\n${HEAD}export default defineFlow({ name: 'starts-gateways', input: z.object({}), async run() { return typeof startGateway; } });\n` },
  'imports-fs': { 'reads-files.ts': `import { readFileSync } from 'node:fs';\n${HEAD}export default defineFlow({ name: 'reads-files', input: z.object({}), async run() { return readFileSync('/etc/hostname', 'utf8'); } });\n` },
};

const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse', 'send'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

declare global {
  // eslint-disable-next-line no-var
  var __sbDetRan: string[];
}

let redis: TestRedis;
let gw: Gateway | undefined;
let root: string;
let client: Redis;

const writeAll = (dir: string, files: Record<string, string>) => {
  mkdirSync(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
};

const startWith = (dir: string, prefix = PREFIX) =>
  startTestGateway(redis.url, { redis: { url: redis.url, prefix }, flows: { dir, lockTimeout: '3s', stalledCheck: '1s' }, permissions: PERMISSIONS });

before(async () => {
  globalThis.__sbDetRan = [];
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  // One flows folder for the file (the loader's import boundary is set by the first one loaded):
  // version 1 at its top, everything else in subfolders. "type": "module": see flows-ctx.test.ts.
  root = mkdtempSync(join(tmpdir(), 'sb-flows-det-'));
  writeFileSync(join(root, 'package.json'), '{"type": "module"}\n');
  writeAll(root, V1);
  writeAll(join(root, 'v2'), V2);
  for (const [sub, files] of Object.entries(BROKEN)) writeAll(join(root, sub), files);
  gw = await startWith(root);
});

after(async () => {
  await gw?.stop();
  await client?.quit();
  await redis?.dispose();
  if (root) rmSync(root, { recursive: true, force: true });
});

async function view(name: string, id: string): Promise<any> {
  const r = await api(gw!.url, 'GET', `/api/flows/${name}/${id}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

async function settled(name: string, id: string, want: (v: any) => boolean, what: string): Promise<any> {
  return waitFor(async () => {
    const v = await view(name, id);
    return want(v) || ['completed', 'failed', 'cancelled'].includes(v.status) ? v : undefined;
  }, 30_000, what);
}

async function queued(address: string): Promise<any[]> {
  const r = await api(gw!.url, 'GET', `/api/queues/${enc(address)}?limit=100`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.messages;
}

const steps = (v: any) => v.steps.map((s: any) => [s.n, s.kind, s.target ?? null, s.done]);

// --- non-determinism ----------------------------------------------------------------------------

test('a changed flow file (another step kind, another target at a recorded step) fails the waiting instance and does nothing else', async () => {
  const start = async (name: string) => {
    const r = await api(gw!.url, 'POST', `/api/flows/${name}`, { user: 'ops', body: { input: { tag: name } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.instanceId as string;
  };
  const ids = { kind: await start('det-kind'), target: await start('det-target'), same: await start('det-same') };
  const before: Record<string, any> = {};
  for (const [k, id] of Object.entries(ids)) {
    before[k] = await settled(`det-${k}`, id, (v) => v.status === 'waiting', `det-${k} to wait`);
    assert.equal(before[k].status, 'waiting', JSON.stringify(before[k]));
  }

  // Restart with version 2 of the files, same Redis and prefix.
  await gw!.stop();
  gw = undefined;
  const restarted = await startWith(join(root, 'v2'));
  gw = restarted;
  for (const [k, id] of Object.entries(ids)) {
    const r = await api(restarted.url, 'POST', '/api/messages', { user: 'ops', body: { to: `flow:det-${k}/${id}`, body: { go: k } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }

  const kind = await settled('det-kind', ids.kind, () => false, 'det-kind to stop');
  assert.equal(kind.status, 'failed', JSON.stringify(kind));
  assert.equal(kind.error.code, 'non_deterministic');
  assert.match(kind.error.message, /^non-deterministic change at step 1: the journal has receive, the code now asks for step check$/);
  const target = await settled('det-target', ids.target, () => false, 'det-target to stop');
  assert.equal(target.status, 'failed', JSON.stringify(target));
  assert.equal(target.error.code, 'non_deterministic');
  assert.match(target.error.message, /^non-deterministic change at step 0: the journal has send queue:det\.target-a, the code now asks for send queue:det\.target-b$/);
  // The control: the unchanged flow carries on after the same restart.
  const same = await settled('det-same', ids.same, () => false, 'det-same to finish');
  assert.equal(same.status, 'completed', JSON.stringify(same));
  assert.deepEqual(same.result, { got: { go: 'same' } });

  // Nothing else happened: no new steps, no step function run, no message from the changed code.
  assert.deepEqual(steps(kind), steps(before.kind));
  assert.deepEqual(steps(target), steps(before.target));
  assert.equal(kind.waitingOn, undefined);
  assert.deepEqual(globalThis.__sbDetRan, []);
  assert.deepEqual(await queued('queue:det.kind-changed'), []);
  assert.deepEqual(await queued('queue:det.target-b'), []);
  assert.deepEqual((await queued('queue:det.kind-out')).map((m) => [m.id, m.body.v]), [[`${ids.kind}:0`, 1]]);
  assert.deepEqual((await queued('queue:det.target-a')).map((m) => m.id), [`${ids.target}:0`]);
});

// --- loader errors --------------------------------------------------------------------------------

async function assertLoadError(sub: string, file: string, reason: RegExp): Promise<void> {
  const path = join(root, sub, file);
  await assert.rejects(startWith(join(root, sub), `${PREFIX}-${sub}`), (err: unknown) => {
    assert.ok(err instanceof FlowLoadError, `expected a FlowLoadError, got ${String(err)}`);
    assert.equal(err.file, path);
    assert.equal(err.code, 'bad_flow');
    assert.ok(err.message.startsWith(`${path}: `), err.message);
    assert.match(err.message, reason);
    return true;
  });
}

test('a flow file with a syntax error stops the start, naming the file', async () => {
  await assertLoadError('syntax-error', 'broken.ts', /cannot be loaded: /);
});

test('a flow file without a default defineFlow export stops the start, naming the file', async () => {
  await assertLoadError('no-default', 'named-only.ts', /the default export is not a flow/);
});

test('two flow files with the same name stop the start, naming both files', async () => {
  await assertLoadError('duplicate', 'b-second.ts', new RegExp(`flow name 'twin' is already defined in ${join(root, 'duplicate', 'a-first.ts').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
});

test("a flow file importing 'node:fs' stops the start, naming the file (flows reach the world only through ctx)", async () => {
  const file = join(root, 'imports-fs', 'reads-files.ts').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  await assertLoadError('imports-fs', 'reads-files.ts', new RegExp(`${file} imports 'node:fs': flows may import only 'switchboard' and 'zod'`));
});

test("a flow file importing 'switchboard/gateway' stops the start: the flow API opens onto nothing else", async () => {
  await assertLoadError('imports-gateway', 'starts-gateways.ts', /imports 'switchboard\/gateway': flows may import only 'switchboard' and 'zod'/);
});

// --- recorded journals ---------------------------------------------------------------------------

interface Fixture {
  about: string;
  flow: string;
  instance: Pick<InstanceMeta, 'id' | 'input' | 'createdAt' | 'startedBy'>;
  waiting: { journal: JournalEntry[]; waitingOn: InstanceMeta['waitingOn'] };
  completed: { journal: JournalEntry[]; result: unknown };
}

/** A FlowRuntime on its own prefix (no worker) over today's workflows/, sending through the gateway's router. */
async function replayer(prefix: string) {
  const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
  const runtime = new FlowRuntime({
    redis: conn, prefix, router: gw!.router, flows: await loadFlows(join(ROOT, 'workflows')),
    concurrency: 1, lockMs: 5000, stalledCheckMs: 1000, retentionMs: 3_600_000, log: createLogger('warn'),
  });
  const store = new InstanceStore(conn, prefix);
  /**
   * Writes the instance and its journal as if recorded just now: an open wait's deadline moves by
   * the time since the recording (else it would have timed out long ago). Returns that shift.
   */
  const load = async (f: Fixture, journal: JournalEntry[]): Promise<number> => {
    const shift = Date.now() - Date.parse(f.instance.createdAt);
    const now = new Date().toISOString();
    assert.equal(await store.create({ ...f.instance, flow: f.flow, status: 'running', updatedAt: now }), true);
    await store.writeSteps(f.instance.id, journal.map((e) => (!e.done && e.deadline !== undefined ? { ...e, deadline: e.deadline + shift } : e)));
    // A recorded instance has run (a journal is written only by runs): without a run mark the
    // store takes it for never run, and its first run does not read the journal.
    await store.update(f.instance.id, { run: 'recorded' });
    return shift;
  };
  return { runtime, store, load, close: async () => { await runtime.close(); await conn.quit(); } };
}

function readFixture(): Fixture {
  return JSON.parse(readFileSync(FIXTURE, 'utf8')) as Fixture;
}

test('the recorded journal of a completed payment-check replays against today\'s code to the recorded result, sending nothing', async () => {
  const f = readFixture();
  assert.equal(f.flow, 'payment-check');
  assert.deepEqual(f.completed.journal.map((e) => e.kind), ['request', 'now', 'send']);
  const r = await replayer(`${PREFIX}-replay-done`);
  try {
    await r.load(f, f.completed.journal);
    assert.equal(await r.runtime.run(f.instance.id), 'done');
    const meta = (await r.store.meta(f.instance.id))!;
    assert.equal(meta.error, undefined, `replay failed: ${meta.error?.message}`);
    assert.equal(meta.status, 'completed');
    assert.deepEqual(meta.result, f.completed.result);
    // The journal is what was recorded: nothing re-run, nothing added.
    assert.deepEqual([...(await r.store.journal(f.instance.id)).values()].sort((a, b) => a.n - b.n), f.completed.journal);
    assert.deepEqual((await queued('queue:payments.checked')).filter((m) => m.id.startsWith(`${f.instance.id}:`)), []);
    assert.deepEqual((await queued('queue:legacy.requests')).filter((m) => m.id.startsWith(`${f.instance.id}:`)), []);
  } finally {
    await r.close();
  }
});

test('the recorded journal of a payment-check waiting for its reply replays to the same wait and completes on the recorded reply', async () => {
  const f = readFixture();
  const r = await replayer(`${PREFIX}-replay-wait`);
  try {
    const shift = await r.load(f, f.waiting.journal);
    assert.equal(await r.runtime.run(f.instance.id), 'done');
    let meta = (await r.store.meta(f.instance.id))!;
    assert.equal(meta.error, undefined, `replay failed: ${meta.error?.message}`);
    assert.equal(meta.status, 'waiting');
    const until = f.waiting.waitingOn?.until;
    assert.deepEqual(meta.waitingOn, { ...f.waiting.waitingOn, ...(until ? { until: new Date(Date.parse(until) + shift).toISOString() } : {}) });
    // The request was journaled as sent: replay does not send it again.
    assert.deepEqual((await queued('queue:legacy.requests')).filter((m) => m.id.startsWith(`${f.instance.id}:`)), []);

    const reply = f.completed.journal[0]!.result as StoredMessage;
    assert.equal(await r.store.deliver(f.instance.id, reply), 1);
    assert.equal(await r.runtime.run(f.instance.id), 'done');
    meta = (await r.store.meta(f.instance.id))!;
    assert.equal(meta.error, undefined, `replay failed: ${meta.error?.message}`);
    assert.equal(meta.status, 'completed');
    assert.deepEqual(meta.result, f.completed.result);
    const journal = [...(await r.store.journal(f.instance.id)).values()].sort((a, b) => a.n - b.n);
    assert.deepEqual(journal.map((e) => [e.n, e.kind, e.target ?? null]), f.completed.journal.map((e) => [e.n, e.kind, e.target ?? null]));
    const sent = (await queued('queue:payments.checked')).filter((m) => m.id.startsWith(`${f.instance.id}:`));
    assert.deepEqual(sent.map((m) => [m.id, m.body.ref, m.body.status]), [[`${f.instance.id}:2`, (f.instance.input as { ref: string }).ref, (f.completed.result as { status: string }).status]]);
  } finally {
    await r.close();
  }
});

// Re-records the fixture from a real run of workflows/payment-check.ts: the test answers as the
// legacy system (as workflows/legacy-responder.ts would) after the journal of the wait is taken.
test('records the payment-check journal fixture (RECORD_JOURNALS=1)', { skip: !process.env.RECORD_JOURNALS }, async () => {
  const prefix = `${PREFIX}-record`;
  const rec = await startTestGateway(redis.url, { redis: { url: redis.url, prefix }, flows: { dir: join(ROOT, 'workflows'), lockTimeout: '3s', stalledCheck: '1s' }, permissions: PERMISSIONS });
  const conn = new Redis(redis.url);
  try {
    const store = new InstanceStore(conn, prefix);
    const input = { ref: 'P-2026-0042', amount: 12_500 };
    const started = await api(rec.url, 'POST', '/api/flows/payment-check', { user: 'ops', body: { input, id: 'fixture-payment-check-1' } });
    assert.equal(started.status, 202);
    const id = started.body.instanceId as string;
    const request = await waitFor(async () => (await api(rec.url, 'POST', `/api/queues/${enc('queue:legacy.requests')}/receive`, { user: 'ops', body: { max: 1, leaseSeconds: 60 } })).body.messages[0], 20_000, 'the request');
    await waitFor(async () => (await store.meta(id))?.status === 'waiting', 20_000, 'the wait');
    const waitingMeta = (await store.meta(id))!;
    const waitingJournal = [...(await store.journal(id)).values()].sort((a, b) => a.n - b.n);
    const answer = { ref: input.ref, status: input.amount > 10_000 ? 'needs-review' : 'ok' };
    const replied = await api(rec.url, 'POST', '/api/messages', { user: 'ops', body: { to: request.replyTo, correlationId: request.correlationId, body: answer, id: 'fixture-legacy-reply-1' } });
    assert.equal(replied.status, 202);
    await api(rec.url, 'POST', `/api/queues/${enc('queue:legacy.requests')}/ack`, { user: 'ops', body: { leases: [request.lease] } });
    await waitFor(async () => (await store.meta(id))?.status === 'completed', 20_000, 'completion');
    const done = (await store.meta(id))!;
    const fixture: Fixture = {
      about: 'Journals of a real run of workflows/payment-check.ts, replayed by test/integration/flows-determinism.test.ts. Re-record: RECORD_JOURNALS=1 node --import tsx --test test/integration/flows-determinism.test.ts',
      flow: 'payment-check',
      instance: { id, input: waitingMeta.input, createdAt: waitingMeta.createdAt, startedBy: waitingMeta.startedBy },
      waiting: { journal: waitingJournal, waitingOn: waitingMeta.waitingOn },
      completed: { journal: [...(await store.journal(id)).values()].sort((a, b) => a.n - b.n), result: done.result },
    };
    mkdirSync(join(ROOT, 'test', 'fixtures', 'journals'), { recursive: true });
    writeFileSync(FIXTURE, `${JSON.stringify(fixture, null, 2)}\n`);
  } finally {
    await conn.quit();
    await rec.stop();
  }
});
