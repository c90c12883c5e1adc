/**
 * Qpid Proton's own Python examples (Debian: libqpid-proton11-dev-examples, installed by
 * scripts/services.sh) run unmodified against the embedded AMQP endpoint (DESIGN §6, issue 14).
 *
 * They take `-a amqp://user:password@host:port/address`, except helloworld.py and
 * queue_browser.py, which hard-code an unauthenticated `localhost:5672` and the address
 * `examples`: those are copied to a temp folder with only those two literals replaced, and
 * helloworld.py is also run with only the port replaced, to show what a client without
 * credentials gets (a SASL outcome, not a dropped socket). The examples print nothing when a link
 * is refused (their handler just closes the connection), so refusals are read from Proton's
 * frame trace (PN_TRACE_FRM=1): the detach that came in, with its error condition.
 *
 * Real redis-server, real Proton, the gateway in this process; every child stopped by PID.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const PYTHON = '/usr/bin/python3';
const EXAMPLES = '/usr/share/proton/examples/python';

let redis: TestRedis | undefined;
let gw: Gateway | undefined;
let dir: string | undefined;
const children = new Set<ChildProcess>();

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  timedOut: boolean;
}

/** Runs a Python program to its end (or kills it by PID after `timeoutMs`); stdout and stderr together. */
function python(file: string, args: string[], timeoutMs = 30_000, o: { trace?: boolean } = {}): Promise<Run> {
  return new Promise((resolve) => {
    // PN_TRACE_FRM makes Proton print every frame: how a refusal's condition is seen without changing the example.
    const env = o.trace ? { ...process.env, PN_TRACE_FRM: '1' } : process.env;
    const child = spawn(PYTHON, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    children.add(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, out, timedOut });
    });
  });
}

/** A long-running Python program (server.py); its output so far and a stop by PID. */
function background(file: string, args: string[]): { output: () => string; stop: () => Promise<void> } {
  const child = spawn(PYTHON, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => { children.delete(child); r(); }));
  return {
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await exited;
    },
  };
}

const url = (address: string, user: keyof typeof USERS = 'ops') => `amqp://${user}:${USERS[user]}@127.0.0.1:${gw!.amqpPort}/${address}`;
const example = (name: string) => join(EXAMPLES, name);

/** A copy of a hard-coded example with exact literals replaced (each must occur). */
function patched(name: string, replacements: [string, string][]): string {
  let text = readFileSync(example(name), 'utf8');
  for (const [from, to] of replacements) {
    assert.ok(text.includes(from), `${name} should contain ${from}`);
    text = text.split(from).join(to);
  }
  const file = join(dir!, `${replacements.length}-${name}`);
  writeFileSync(file, text);
  return file;
}

async function depth(address: string): Promise<{ depth: number; inFlight: number }> {
  const r = await api(gw!.url, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sb-proton-examples-'));
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    amqp: { port: 0, credit: 10 },
    permissions: [
      // server.py answers each request on the requester's temporary queue, through the anonymous relay.
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'tmp:**', verbs: ['send'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    log: { level: 'error' },
  });
  assert.ok(gw.amqpPort);
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await gw?.stop().catch(() => {});
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// simple_recv.py compares message.id with an int: it needs the ulong ids simple_send.py sent to come
// back as ulongs (DESIGN §2), and prints the body, a map sent as an AMQP value, as a Python dict.
// It also drops any message whose id is below the count it has printed ("duplicate"), so it needs
// the queue's order: a gateway with amqp.credit 1 hands one message at a time to a consumer.
async function simpleSendRecv(Q: string, amqpPort: number): Promise<void> {
  const at = (address: string) => `amqp://ops:${USERS.ops}@127.0.0.1:${amqpPort}/${address}`;
  const sent = await python(example('simple_send.py'), ['-a', at(Q), '-m', '25']);
  assert.equal(sent.timedOut, false, sent.out);
  assert.match(sent.out, /all messages confirmed/, sent.out);
  assert.equal((await depth(Q)).depth, 25);
  const got = await python(example('simple_recv.py'), ['-a', at(Q), '-m', '25']);
  assert.equal(got.timedOut, false, got.out);
  assert.equal(got.code, 0, got.out);
  const lines = got.out.trim().split('\n');
  assert.equal(lines.length, 25, got.out);
  // Bodies are maps {'sequence': n} sent as AMQP values; they come back as maps, printed by Python as dicts.
  assert.deepEqual(lines.map((l) => Number(/^\{'sequence': (\d+)\}$/.exec(l)?.[1])), Array.from({ length: 25 }, (_, i) => i + 1), got.out);
  await waitFor(async () => { const d = await depth(Q); return d.depth === 0 && d.inFlight === 0; }, 20_000, `${Q} empty`);
}

test('simple_send.py and simple_recv.py: 25 messages confirmed, then all 25 received in order, ulong ids and map bodies as sent (amqp.credit 1)', { timeout: 120_000 }, async () => {
  const ordered = await startTestGateway(redis!.url, {
    amqp: { port: 0, credit: 1 },
    permissions: [{ group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] }, { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] }],
    log: { level: 'error' },
    redis: { url: redis!.url, prefix: `t${Math.random().toString(36).slice(2, 8)}` },
  });
  const main = gw;
  try {
    gw = ordered;
    await simpleSendRecv('queue:examples.simple-ordered', ordered.amqpPort!);
  } finally {
    gw = main;
    await ordered.stop();
  }
});

test('simple_send.py and simple_recv.py with credit 10: all 25 received in order', {
  timeout: 120_000,
}, async () => {
  await simpleSendRecv('queue:examples.simple', gw!.amqpPort!);
});

test('client.py and server.py: request/reply over a dynamic receiver (temporary queue) and the anonymous relay', { timeout: 120_000 }, async () => {
  const Q = 'queue:examples.requests';
  const server = background(example('server.py'), ['-a', url(Q)]);
  try {
    const got = await python(example('client.py'), ['-a', url(Q)], 60_000);
    assert.equal(got.timedOut, false, `client: ${got.out}\nserver: ${server.output()}`);
    assert.equal(got.code, 0, got.out);
    const lines = got.out.trim().split('\n');
    assert.equal(lines.length, 4, got.out);
    for (const line of lines) {
      const [request, reply] = line.split(' => ');
      assert.ok(request && reply && reply.includes(request.toUpperCase()), `the reply to '${request}' should be it in capitals: ${line}`);
    }
    assert.match(server.output(), /Received/);
  } finally {
    await server.stop();
  }
  assert.equal((await depth(Q)).depth, 0);
});

test('helloworld.py: a sender and a receiver of the same name on one connection ("Hello World!")', { timeout: 60_000 }, async () => {
  const file = patched('helloworld.py', [['"localhost:5672"', `"ops:${USERS.ops}@127.0.0.1:${gw!.amqpPort}"`], ['"examples"', '"queue:examples.hello"']]);
  const r = await python(file, []);
  assert.equal(r.timedOut, false, r.out);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /Hello World!/);
});

test('helloworld.py with only the port replaced: a client without credentials is answered over SASL (PLAIN offered), not dropped', { timeout: 60_000 }, async () => {
  const file = patched('helloworld.py', [['localhost:5672', `localhost:${gw!.amqpPort}`]]);
  const r = await python(file, [], 30_000, { trace: true });
  assert.equal(r.timedOut, false, r.out);
  // Proton without credentials can only do ANONYMOUS; it is offered PLAIN over SASL and ends itself.
  assert.match(r.out, /<- @sasl-mechanisms\(64\) \[sasl-server-mechanisms=@<symbol>\[:PLAIN\]\]/, r.out);
  assert.doesNotMatch(r.out, /Connection reset|connection aborted|framing-error/i, r.out);
  assert.doesNotMatch(r.out, /Hello World!/);
});

test('tx_send.py: the transaction coordinator is refused with amqp:not-implemented; nothing is sent', { timeout: 60_000 }, async () => {
  const Q = 'queue:examples.tx';
  const r = await python(example('tx_send.py'), ['-a', url(Q), '-m', '5'], 20_000, { trace: true });
  assert.match(r.out, /<- @detach\(22\) \[[^\n]*condition=:"amqp:not-implemented"/, r.out);
  assert.equal(r.timedOut, false, 'the example ends by itself after the refusal');
  assert.match(r.out, /transactions are not supported/, r.out);
  assert.doesNotMatch(r.out, /all messages committed/);
  assert.equal((await depth(Q)).depth, 0);
});

test('queue_browser.py: browsing (distribution-mode copy) prints what the queue holds, in order, and takes nothing', { timeout: 60_000 }, async () => {
  const Q = 'queue:examples.browse';
  for (const n of [1, 2, 3]) {
    const s = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: Q, id: `browse-${n}`, body: { n } } });
    assert.equal(s.status, 202);
  }
  const file = patched('queue_browser.py', [['"localhost:5672"', `"ops:${USERS.ops}@127.0.0.1:${gw!.amqpPort}"`], ['"examples"', `"${Q}"`]]);
  const r = await python(file, [], 15_000);
  // The example prints each message; it ends only if the source answers a drain, which it may not ask for.
  const printed = [...r.out.matchAll(/id=['"]?(browse-\d)/g)].map((m) => m[1]);
  assert.equal(r.timedOut, false, 'the example ends by itself: the drain it asks for is answered once the copy is sent');
  assert.deepEqual(printed, ['browse-1', 'browse-2', 'browse-3'], r.out);
  assert.equal((await depth(Q)).depth, 3, 'browsing took nothing from the queue');
  // Browsing needs browse, not consume: clerk has neither on this queue.
  const clerk = await python(patched('queue_browser.py', [['"localhost:5672"', `"clerk:${USERS.clerk}@127.0.0.1:${gw!.amqpPort}"`], ['"examples"', `"${Q}"`]]), [], 15_000, { trace: true });
  assert.match(clerk.out, /condition=:"amqp:unauthorized-access"/, clerk.out);
  assert.equal((await depth(Q)).depth, 3);
});

test('selected_recv.py: a selector is refused with amqp:not-implemented, not ignored', { timeout: 60_000 }, async () => {
  const Q = 'queue:examples.selected';
  const s = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: Q, body: { colour: 'red' } } });
  assert.equal(s.status, 202);
  const r = await python(example('selected_recv.py'), ['-a', url(Q), '-m', '1'], 20_000, { trace: true });
  assert.match(r.out, /<- @detach\(22\) \[[^\n]*condition=:"amqp:not-implemented"/, r.out);
  assert.equal(r.timedOut, false, 'the example ends by itself after the refusal');
  assert.match(r.out, /selector/, r.out);
  assert.equal((await depth(Q)).depth, 1, 'the message was not handed to a receiver that asked for a filter');
});
