import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { startTestGateway, waitFor, USERS } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// `switchboard flows start|ls|show|retry|cancel` and `tasks ls|show|claim|decide`: the real CLI
// (node bin/switchboard.mjs) against an in-process gateway running flows from a temp folder.
// The CLI goes through the HTTP API, prints JSON and exits 0 (ok), 1 (refused) or 2 (usage).

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');

declare global {
  // eslint-disable-next-line no-var
  var __sbFlowsCli: { redis: Redis } | undefined;
}

const HEADER = `import { defineFlow } from 'switchboard';\nimport { z } from 'zod';\n`;
const FLOWS: Record<string, string> = {
  'cli-ask.ts': `${HEADER}
export default defineFlow({
  name: 'cli-ask',
  input: z.object({ ref: z.string().min(1) }),
  async run(ctx, input) {
    const d = await ctx.ask('group:cli-approvers', { title: 'CLI approve ' + input.ref, data: { ref: input.ref }, actions: ['approve', 'reject'], fields: { amount: 'number' } });
    return { action: d.action, fields: d.fields, comment: d.comment ?? null, by: d.by };
  },
});
`,
  'cli-retry.ts': `${HEADER}
export default defineFlow({
  name: 'cli-retry',
  input: z.object({ key: z.string() }),
  async run(ctx, input) {
    const redis = globalThis.__sbFlowsCli.redis;
    const first = await ctx.step('first', () => redis.incr(input.key + ':first'));
    const value = await ctx.step('read', async () => {
      const v = await redis.get(input.key);
      if (!v) throw new Error('key ' + input.key + ' is not set');
      return v;
    });
    return { first, value };
  },
});
`,
  'cli-wait.ts': `${HEADER}
export default defineFlow({
  name: 'cli-wait',
  input: z.object({}),
  async run(ctx) {
    const m = await ctx.receive();
    return { got: m.body };
  },
});
`,
};

let redis: TestRedis;
let gw: Gateway;
let dir: string;
let client: Redis;

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 3 });
  globalThis.__sbFlowsCli = { redis: client };
  dir = mkdtempSync(join(tmpdir(), 'sb-flows-cli-'));
  for (const [f, text] of Object.entries(FLOWS)) writeFileSync(join(dir, f), text);
  gw = await startTestGateway(redis.url, {
    flows: { dir, lockTimeout: '3s', stalledCheck: '1s' },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse', 'send'] }, { address: 'group:cli-approvers', verbs: ['consume'] }] },
      { group: 'clerks', allow: [{ address: 'flow:*', verbs: ['start'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});

after(async () => {
  await gw?.stop();
  await client?.quit();
  globalThis.__sbFlowsCli = undefined;
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], user: keyof typeof USERS = 'ops'): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SWITCHBOARD_URL', 'SWITCHBOARD_USER', 'SWITCHBOARD_PASSWORD', 'SWITCHBOARD_CONFIG', 'SWITCHBOARD_TOKEN', 'NODE_OPTIONS']) delete env[k];
  Object.assign(env, { SWITCHBOARD_URL: gw.url, SWITCHBOARD_USER: user, SWITCHBOARD_PASSWORD: USERS[user] });
  return new Promise((res, rej) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      if (err && code === -1) return rej(new Error(`the CLI did not run: ${err.message}\n${stderr}`));
      res({ code, stdout, stderr });
    });
    child.stdin!.end();
  });
}

async function json(args: string[], user: keyof typeof USERS = 'ops'): Promise<any> {
  const r = await cli(args, user);
  assert.equal(r.code, 0, `switchboard ${args.join(' ')}: exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** `flows show` until the status is `status` (or the instance finished otherwise). */
async function showUntil(name: string, id: string, status: string): Promise<any> {
  const v = await waitFor(async () => {
    const b = await json(['flows', 'show', name, id]);
    return b.status === status || ['completed', 'failed', 'cancelled'].includes(b.status) ? b : undefined;
  }, 30_000, `${name}/${id} to be ${status}`);
  assert.equal(v.status, status, JSON.stringify(v));
  return v;
}

test('flows start (twice with one --id is one instance), ls, show; tasks ls, show, claim, decide resume the flow', async () => {
  const started = await json(['flows', 'start', 'cli-ask', '--json', '{"ref":"C-1"}', '--id', 'cli-start-1']);
  assert.equal(typeof started.instanceId, 'string');
  assert.equal(started.duplicate, false);
  const again = await json(['flows', 'start', 'cli-ask', '--json', '{"ref":"C-1"}', '--id', 'cli-start-1']);
  assert.deepEqual(again, { instanceId: started.instanceId, duplicate: true });
  const id = started.instanceId as string;

  const waiting = await showUntil('cli-ask', id, 'waiting');
  assert.deepEqual({ kind: waiting.waitingOn.kind, target: waiting.waitingOn.target }, { kind: 'ask', target: 'group:cli-approvers' });
  assert.deepEqual(waiting.input, { ref: 'C-1' });
  assert.equal(waiting.startedBy, 'user:ops');

  const ls = await json(['flows', 'ls', 'cli-ask']);
  assert.deepEqual(ls.instances.filter((i: any) => i.instanceId === id).map((i: any) => [i.flow, i.status]), [['cli-ask', 'waiting']]);
  assert.ok(ls.flows.includes('cli-ask') && ls.flows.includes('cli-wait'));
  const all = await json(['flows', 'ls']);
  assert.ok(all.instances.some((i: any) => i.instanceId === id));

  const tasks = await json(['tasks', 'ls']);
  const task = tasks.tasks.find((t: any) => t.title === 'CLI approve C-1');
  assert.ok(task, JSON.stringify(tasks));
  assert.equal(task.group, 'cli-approvers');
  assert.equal(task.status, 'open');
  const shown = await json(['tasks', 'show', task.id]);
  assert.deepEqual(shown.data, { ref: 'C-1' });
  assert.deepEqual(shown.actions, ['approve', 'reject']);
  const claimed = await json(['tasks', 'claim', task.id]);
  assert.equal(claimed.claimedBy, 'user:ops');
  assert.ok(claimed.history.some((h: any) => h.action === 'claimed' && h.by === 'user:ops'));
  const decided = await json(['tasks', 'decide', task.id, 'approve', '--comment', 'via the CLI', '--field', 'amount=7']);
  assert.equal(decided.status, 'decided');
  assert.equal(decided.decision.by, 'user:ops');

  const done = await showUntil('cli-ask', id, 'completed');
  assert.deepEqual(done.result, { action: 'approve', fields: { amount: 7 }, comment: 'via the CLI', by: 'user:ops' });
  assert.deepEqual(done.steps.map((s: any) => [s.n, s.kind, s.target]), [[0, 'ask', 'group:cli-approvers']]);

  // Decided once: deciding again is refused (exit 1) naming who decided.
  const twice = await cli(['tasks', 'decide', task.id, 'reject']);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /409: .*already been decided by user:ops/);
});

test('flows retry: a failed instance shows its error; retry needs admin; after the fix it completes from the failed step', async () => {
  const key = `cli-retry-${Date.now()}`;
  const { instanceId: id } = await json(['flows', 'start', 'cli-retry', '--json', JSON.stringify({ key })], 'clerk');
  const failed = await waitFor(async () => {
    const b = await json(['flows', 'show', 'cli-retry', id], 'clerk');
    return b.status === 'failed' || b.status === 'completed' ? b : undefined;
  }, 30_000, 'the failure');
  assert.equal(failed.status, 'failed', JSON.stringify(failed));
  assert.equal(failed.error.message, `key ${key} is not set`);

  const denied = await cli(['flows', 'retry', 'cli-retry', id], 'clerk');
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /403: user:clerk may not admin on flow:cli-retry\//);

  await client.set(key, 'there');
  const retried = await json(['flows', 'retry', 'cli-retry', id]);
  assert.equal(retried.instanceId, id);
  assert.notEqual(retried.status, 'failed');
  const done = await showUntil('cli-retry', id, 'completed');
  assert.deepEqual(done.result, { first: 1, value: 'there' });
  assert.equal(await client.get(`${key}:first`), '1');
});

test('flows cancel: the instance is cancelled by me and takes no more messages', async () => {
  const { instanceId: id } = await json(['flows', 'start', 'cli-wait']);
  await showUntil('cli-wait', id, 'waiting');
  const cancelled = await json(['flows', 'cancel', 'cli-wait', id]);
  assert.equal(cancelled.status, 'cancelled');
  assert.equal(cancelled.cancelledBy, 'user:ops');
  const shown = await json(['flows', 'show', 'cli-wait', id]);
  assert.equal(shown.status, 'cancelled');
  const send = await cli(['send', `flow:cli-wait/${id}`, '--json', '{"late":true}']);
  assert.equal(send.code, 1);
  assert.match(send.stderr, /409: /);
  const twice = await cli(['flows', 'cancel', 'cli-wait', id]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /409: .*already cancelled/);
});

test('flows commands refuse bad input, unknown flows and instances, and missing rights with exit 1; bad JSON is a usage error', async () => {
  const bad = await cli(['flows', 'start', 'cli-ask', '--json', '{"ref":5}']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /400: input for flow 'cli-ask' is not valid: ref: /);
  const unknown = await cli(['flows', 'start', 'no-such-flow', '--json', '{}']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /404: no flow named 'no-such-flow'/);
  const missing = await cli(['flows', 'show', 'cli-ask', 'no-such-instance']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /404: /);
  const nobody = await cli(['flows', 'start', 'cli-wait'], 'nobody');
  assert.equal(nobody.code, 1);
  assert.match(nobody.stderr, /403: user:nobody may not start on flow:cli-wait/);
  const usage = await cli(['flows', 'start', 'cli-ask', '--json', '{bad']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--json is not valid JSON/);
  const noTask = await cli(['tasks', 'show', 'no-such-task']);
  assert.equal(noTask.code, 1);
  assert.match(noTask.stderr, /404: /);
});
