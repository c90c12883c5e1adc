// The shipped demo (config/switchboard.yaml, what `npm start` runs) boots as a real
// `switchboard start` process with its own private redis-server, its demo users log in, and its
// `events:` example works: a payment started by bob and approved by alice leaves its flow and task
// lifecycle events, as CloudEvents, in queue:ops.events for ops to browse. Only the port and the
// data folder are moved, so the test runs beside a demo a person may have running.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, waitFor } from '../support/gateway.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');
const DEMO_USERS = { alice: { name: 'alice', password: 'alice-pw' }, bob: { name: 'bob', password: 'bob-pw' }, ops: { name: 'ops', password: 'ops-pw' } };

let dir: string;
let child: ChildProcess;
let url: string;
let output = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-demo-'));
  const config = parse(readFileSync(join(ROOT, 'config', 'switchboard.yaml'), 'utf8')) as Record<string, any>;
  const port = await freePort();
  config.http = { ...config.http, port, host: '127.0.0.1', baseUrl: `http://127.0.0.1:${port}` };
  config.redis = { dataDir: join(dir, 'redis') };
  config.flows = { ...config.flows, dir: join(ROOT, 'workflows') };
  const file = join(dir, 'switchboard.yaml');
  writeFileSync(file, stringify(config));
  child = spawn(process.execPath, [BIN, 'start', '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-20_000); });
  child.stderr!.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-20_000); });
  url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}: ${output}`);
    return fetch(`${url}/readyz`).then((r) => r.status === 200, () => false);
  }, 60_000, 'the demo to be ready');
});

after(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM'); // the gateway stops its own redis-server on the way out
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface CloudEvent { specversion: string; type: string; subject?: string; id: string }

test('the demo boots, and a payment approval leaves its flow and task events in queue:ops.events, browsable by ops', { timeout: 120_000 }, async () => {
  const started = await api(url, 'POST', '/api/flows/payment-approval', { user: DEMO_USERS.bob, body: { input: { ref: 'DEMO-1', amount: 120 } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const id = started.body.instanceId as string;
  const task = await waitFor(async () => (await api(url, 'GET', '/api/tasks', { user: DEMO_USERS.alice })).body.tasks?.find((t: { title: string }) => t.title === 'Approve payment DEMO-1'), 30_000, 'the task for alice') as { id: string };
  assert.equal((await api(url, 'POST', `/api/tasks/${task.id}/decision`, { user: DEMO_USERS.alice, body: { action: 'approve' } })).status, 200);
  const wanted = ['switchboard.flow.started', 'switchboard.flow.waiting', 'switchboard.task.created', 'switchboard.task.decided'];
  const events = await waitFor(async () => {
    const r = await api(url, 'GET', `/api/queues/${encodeURIComponent('queue:ops.events')}?limit=100`, { user: DEMO_USERS.ops });
    if (r.status !== 200) return undefined;
    const got = (r.body.messages as { body: CloudEvent }[]).map((m) => m.body);
    return wanted.every((t) => got.some((e) => e.type === t)) ? got : undefined;
  }, 60_000, `${wanted.join(', ')} in queue:ops.events`) as CloudEvent[];
  assert.ok(events.every((e) => e.specversion === '1.0'), 'CloudEvents 1.0');
  assert.ok(events.some((e) => e.type === 'switchboard.flow.started' && e.subject === `flow:payment-approval/${id}`));
  assert.ok(events.some((e) => e.type === 'switchboard.task.decided' && e.subject === `task:${task.id}`));
  // A business user may not read the ops events.
  assert.equal((await api(url, 'GET', `/api/queues/${encodeURIComponent('queue:ops.events')}`, { user: DEMO_USERS.bob })).status, 403);
});
