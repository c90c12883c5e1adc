// Every door tried by a principal without the right, as an attacker would (DESIGN §5, "one
// pipeline"): the HTTP API, the embedded AMQP endpoint (a named link and the anonymous relay),
// the peer listener, an inbound webhook, a route from the config and the inbox. Each is refused
// by the router's chain with a reason, the audit entry names the door and the message
// ("<door> door, message <id>: …"), and nothing changes. A static check closes the file: the
// router keeps its endpoints to itself, so no door can reach a transport around the chain.
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type EventContext, type Sender } from 'rhea';
import { toAmqp, type AmqpMessage } from '../../src/amqp/mapping.ts';
import type { Message } from '../../src/core/message.ts';
import type { Gateway } from '../../src/gateway.ts';
import { signEnvelope } from '../../src/network/envelope.ts';
import { sign } from '../../src/network/webhook-signature.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const US = 'O=Door Bank,L=London,C=GB';
const THEM = 'O=Peer Bank,L=Paris,C=FR';
const HOOK_SECRET = 'door-hook-secret-0123456789';
const GROUP = 'group:door-approvers';

let redis: TestRedis;
let gw: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
const connections = new Set<Connection>();

before(async () => {
  redis = await startTestRedis();
  net = await testNetwork([{ alias: 'us', identity: US }, { alias: 'them', identity: THEM }]);
  gw = await startTestGateway(redis.url, {
    amqp: { port: 0 },
    network: networkConfig(net, 'us', [{ alias: 'them', allow: ['queue:from-them.**'] }]),
    webhooks: { crm: { secret: HOOK_SECRET, inbound: { to: 'queue:crm.events' } } },
    routes: [{ from: 'queue:in.routed', to: 'queue:route.out' }],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: GROUP, verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }] },
      // clerk: send to queue:in.*, look at the approvers' tasks but not decide them, start nothing.
      { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: GROUP, verbs: ['browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});

after(async () => {
  for (const c of connections) c.close();
  await gw?.stop();
  await redis?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

// --- helpers ---------------------------------------------------------------------------------

interface AuditEntry { action: string; actor: string; target?: string; detail?: string; ip?: string }

async function depth(address: string): Promise<number> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.depth as number;
}

async function ids(address: string): Promise<string[]> {
  const r = await api(gw.url, 'GET', `/api/queues/${enc(address)}?limit=100`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return (r.body.messages as { id: string }[]).map((m) => m.id).sort();
}

/** The audit entry (newest first) the pipeline wrote for message `id` at `door`. */
async function denialOf(actor: string, door: string, id: string, action = 'access.denied'): Promise<AuditEntry> {
  return (await waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/audit?action=${enc(action)}&actor=${enc(actor)}&limit=200`, { user: 'ops' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body.entries as AuditEntry[]).find((e) => (e.detail ?? '').startsWith(`${door} door, message ${id}: `));
  }, 5000, `the ${action} entry of ${actor} for message ${id} at the ${door} door`)) as AuditEntry;
}

function message(id: string, to: string, sender: Message['sender']): Message {
  return { id, to, sender, headers: {}, contentType: 'application/json', body: { id }, createdAt: new Date().toISOString() };
}

/** What the router's chain says to `caller` handing over `m`: the refusal it threw. */
async function refusalAtRouter(m: Message, caller: Parameters<Gateway['router']['send']>[1]): Promise<{ status: number; code: string; message: string }> {
  try {
    await gw.router.send(m, caller);
  } catch (err) {
    const e = err as { status: number; code: string; message: string };
    return { status: e.status, code: e.code, message: e.message };
  }
  assert.fail(`the router accepted ${m.id} to ${m.to} from ${caller.principal.kind}:${caller.principal.name} at the ${caller.door} door`);
}

interface Outcome { outcome: 'accepted' | 'rejected' | 'released' | 'modified' | 'detached'; condition?: string; description?: string }

/** A rhea sender with per-delivery outcomes; `detached` when the gateway closes the link instead. */
function outcomes(conn: Connection, sender: Sender) {
  const pending = new Map<number, (o: Outcome) => void>();
  let detached: Outcome | undefined;
  const settle = (outcome: Outcome['outcome']) => (ctx: EventContext) => {
    const d = ctx.delivery;
    if (!d || ctx.sender !== sender) return;
    const err = (d.remote_state as { error?: { condition?: string; description?: string } } | undefined)?.error;
    pending.get(d.id)?.({ outcome, ...(err?.condition ? { condition: err.condition } : {}), ...(err?.description ? { description: err.description } : {}) });
    pending.delete(d.id);
  };
  for (const o of ['accepted', 'rejected', 'released', 'modified'] as const) conn.on(o, settle(o));
  const onDetach = (ctx: EventContext) => {
    if (ctx.sender !== sender) return;
    const e = sender.error as { condition?: string; description?: string } | undefined;
    detached = { outcome: 'detached', ...(e?.condition ? { condition: e.condition } : {}), ...(e?.description ? { description: e.description } : {}) };
    for (const [, done] of pending) done(detached);
    pending.clear();
  };
  sender.on('sender_error', onDetach);
  sender.on('sender_close', onDetach);
  return {
    ready: () => waitFor(async () => sender.sendable(), 20_000, 'credit on the link'),
    get detached() { return detached; },
    send: (m: AmqpMessage) => new Promise<Outcome>((res, rej) => {
      if (detached) return res(detached);
      const d = sender.send(m as never);
      const t = setTimeout(() => rej(new Error(`no outcome for ${String(m.message_id)}`)), 20_000);
      pending.set(d.id, (o) => { clearTimeout(t); res(o); });
    }),
  };
}

async function amqpLogin(user: keyof typeof USERS): Promise<Connection> {
  const container = rhea.create_container({ id: `door-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: gw.amqpPort!, username: user, password: USERS[user], reconnect: false } as ConnectionOptions);
  connections.add(c);
  for (const e of ['error', 'session_error', 'sender_error', 'receiver_error']) c.on(e, () => {});
  await new Promise<void>((res, rej) => {
    c.once('connection_open', () => res());
    c.once('connection_error', (ctx: EventContext) => rej(new Error(`connection error: ${JSON.stringify(ctx.connection.error)}`)));
    c.once('disconnected', () => rej(new Error('disconnected before open')));
  });
  return c;
}

// --- the HTTP API ------------------------------------------------------------------------------

test('HTTP API: POST /api/messages without send, and POST /api/flows/:name without start, are refused by the pipeline, audited, nothing sent or started', async () => {
  const before = await depth('queue:secret.payments');
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:secret.payments', id: 'http-1', body: { pay: 1e6 } } });
  assert.equal(r.status, 403, JSON.stringify(r.body));
  assert.equal(r.body.error.code, 'forbidden');
  assert.match(r.body.error.message, /user:clerk may not send on queue:secret\.payments/);
  const e = await denialOf('user:clerk', 'http', 'http-1');
  assert.equal(e.target, 'queue:secret.payments');
  assert.match(e.detail!, /may not send on queue:secret\.payments/);
  assert.equal(await depth('queue:secret.payments'), before);

  // payment-approval is deployed (workflows/); clerk has no start on it.
  const listed = async () => (await api(gw.url, 'GET', '/api/flows?name=payment-approval&limit=500', { user: 'ops' })).body.instances.length as number;
  const instances = await listed();
  const f = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'clerk', body: { id: 'http-flow-1', input: { ref: 'X-1', amount: 5 } } });
  assert.equal(f.status, 403, JSON.stringify(f.body));
  assert.match(f.body.error.message, /user:clerk may not start on flow:payment-approval/);
  const fe = await denialOf('user:clerk', 'http', 'http-flow-1');
  assert.equal(fe.target, 'flow:payment-approval');
  assert.equal(await listed(), instances, 'no instance was started');
});

// --- the embedded AMQP endpoint -------------------------------------------------------------------

test('AMQP: a named sender link whose right is revoked while it is open is detached with amqp:unauthorized-access; nothing more gets through', { timeout: 60_000 }, async () => {
  const Q = 'queue:amqp.revoked';
  const rule = await api(gw.url, 'POST', '/api/permissions', { user: 'ops', body: { user: 'clerk', address: Q, verbs: ['send'] } });
  assert.equal(rule.status, 201, JSON.stringify(rule.body));
  const c = await amqpLogin('clerk');
  const sender = c.open_sender({ target: { address: Q } });
  const link = outcomes(c, sender);
  await link.ready();
  assert.deepEqual(await link.send({ message_id: 'amqp-named-1', body: { n: 1 } } as AmqpMessage), { outcome: 'accepted' });

  const del = await api(gw.url, 'DELETE', `/api/permissions/${enc(rule.body.rule.id)}`, { user: 'ops' });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  // The next message cannot get through: the door detaches the link at once (a rule change is
  // re-checked against every open link), and a message already on the way meets the pipeline.
  const next = await link.send({ message_id: 'amqp-named-2', body: { n: 2 } } as AmqpMessage);
  assert.ok(next.outcome === 'detached' || next.outcome === 'rejected', JSON.stringify(next));
  assert.equal(next.condition, 'amqp:unauthorized-access', JSON.stringify(next));
  const why = (await waitFor(async () => link.detached, 10_000, 'the link to be detached'))!;
  assert.equal(why.condition, 'amqp:unauthorized-access');
  assert.match(why.description ?? '', /user:clerk may no longer send on queue:amqp\.revoked/);
  if (next.outcome === 'rejected') await denialOf('user:clerk', 'amqp', 'amqp-named-2');
  assert.deepEqual(await ids(Q), ['amqp-named-1'], 'only the message sent while the right stood');
  c.close();
});

test('AMQP anonymous relay: a `to` the user may not send to, and a right revoked while the relay is open, are rejected per message by the pipeline, audited', { timeout: 60_000 }, async () => {
  const Q = 'queue:amqp.relay';
  const rule = await api(gw.url, 'POST', '/api/permissions', { user: 'ops', body: { user: 'clerk', address: Q, verbs: ['send'] } });
  assert.equal(rule.status, 201, JSON.stringify(rule.body));
  const c = await amqpLogin('clerk');
  const sender = c.open_sender({ target: {} });
  const relay = outcomes(c, sender);
  await relay.ready();

  const before = await depth('queue:secret.relay');
  const r1 = await relay.send({ message_id: 'relay-secret-1', to: 'queue:secret.relay', body: { pay: 1 } } as AmqpMessage);
  assert.equal(r1.outcome, 'rejected', JSON.stringify(r1));
  assert.equal(r1.condition, 'amqp:unauthorized-access');
  assert.match(r1.description ?? '', /user:clerk may not send on queue:secret\.relay/);
  assert.equal((await denialOf('user:clerk', 'amqp', 'relay-secret-1')).target, 'queue:secret.relay');
  assert.equal(await depth('queue:secret.relay'), before);

  assert.deepEqual(await relay.send({ message_id: 'relay-ok-1', to: Q, body: 1 } as AmqpMessage), { outcome: 'accepted' });
  const del = await api(gw.url, 'DELETE', `/api/permissions/${enc(rule.body.rule.id)}`, { user: 'ops' });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  // The relay link names no address, so it stays open; the pipeline decides each message.
  const r2 = await relay.send({ message_id: 'relay-revoked-2', to: Q, body: 2 } as AmqpMessage);
  assert.equal(r2.outcome, 'rejected', JSON.stringify(r2));
  assert.equal(r2.condition, 'amqp:unauthorized-access');
  assert.match(r2.description ?? '', /user:clerk may not send on queue:amqp\.relay/);
  assert.equal((await denialOf('user:clerk', 'amqp', 'relay-revoked-2')).target, Q);
  assert.deepEqual(await ids(Q), ['relay-ok-1']);
  c.close();
});

// --- the peer listener ------------------------------------------------------------------------

test('peer listener: a mapped peer with a genuine signature sending outside its allow list is rejected (unauthorized), audited by the pipeline, nothing routed', { timeout: 60_000 }, async () => {
  const them = net.nodes.them!;
  const container = rhea.create_container({ id: `door-peer-${process.pid}` });
  const conn = container.connect({
    host: '127.0.0.1', port: gw.peerPort!, transport: 'tls', reconnect: false, username: 'anonymous',
    key: readFileSync(them.key), cert: readFileSync(them.cert), ca: readFileSync(net.ca), rejectUnauthorized: true,
  } as never);
  connections.add(conn);
  for (const e of ['error', 'connection_error', 'sender_error']) conn.on(e, () => {});
  const key = createPrivateKey(readFileSync(them.signingKey));
  /** A message as the peer's gateway puts it on the wire to our `target` (no scheme: queue:), signed with its real key. */
  const wire = (id: string, target: string): AmqpMessage => {
    const m = message(id, `queue:${target}`, { kind: 'user', name: 'teller' });
    const amqp = toAmqp(m);
    (amqp.application_properties as Record<string, string>)['switchboard-signature'] = signEnvelope(key, m, target, THEM);
    (amqp.application_properties as Record<string, string>)['switchboard-origin'] = THEM;
    return amqp;
  };
  const out = conn.open_sender({ target: { address: 'secret.ledger' }, autosettle: true });
  const outside = outcomes(conn, out);
  await outside.ready();
  const before = await depth('queue:secret.ledger');
  const r = await outside.send(wire('peer-out-1', 'secret.ledger'));
  assert.equal(r.outcome, 'rejected', JSON.stringify(r));
  assert.equal(r.condition, 'amqp:unauthorized-access');
  assert.match(r.description ?? '', /peer:O=Peer Bank,L=Paris,C=FR may not send on queue:secret\.ledger/);
  const e = await denialOf(`peer:${THEM}`, 'peer', 'peer-out-1');
  assert.match(e.detail ?? '', /\(peer alias them\)$/);
  assert.equal(e.target, 'queue:secret.ledger');
  assert.equal(await depth('queue:secret.ledger'), before);

  // The same peer, the same signing, inside its allow list: accepted, stamped peer:them.
  const inLink = conn.open_sender({ target: { address: 'from-them.trades' }, autosettle: true });
  const inside = outcomes(conn, inLink);
  await inside.ready();
  assert.deepEqual(await inside.send(wire('peer-in-1', 'from-them.trades')), { outcome: 'accepted' });
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:from-them.trades')}`, { user: 'ops' });
  assert.deepEqual(q.body.messages.map((m: Message) => [m.id, m.sender]), [['peer-in-1', { kind: 'peer', name: THEM, alias: 'them' }]]);
  conn.close();
});

// --- an inbound webhook ----------------------------------------------------------------------

test('inbound webhook: it reaches only its configured address as webhook:<name>; that principal anywhere else is refused by the pipeline; a bad signature is 401, audited, nothing routed', async () => {
  const body = JSON.stringify({ event: 'created' });
  const ts = String(Math.floor(Date.now() / 1000));
  const good = sign(HOOK_SECRET, { direction: 'inbound', timestamp: ts, id: 'hook-door-1' }, body);
  const r = await fetch(`${gw.url}/hooks/crm`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-switchboard-id': 'hook-door-1', 'x-switchboard-timestamp': ts, 'x-switchboard-signature': good } });
  assert.equal(r.status, 202, await r.text());
  const q = await api(gw.url, 'GET', `/api/queues/${enc('queue:crm.events')}`, { user: 'ops' });
  assert.deepEqual(q.body.messages.find((m: Message) => m.id === 'hook-door-1')?.sender, { kind: 'webhook', name: 'crm' });

  // The webhook's principal has exactly one right, from its config entry: no rule names it.
  const perms = await api(gw.url, 'GET', '/api/permissions', { user: 'ops' });
  assert.ok(!JSON.stringify(perms.body.rules).includes('webhook'), JSON.stringify(perms.body.rules));
  const before = await depth('queue:secret.hook');
  const refused = await refusalAtRouter(message('hook-door-2', 'queue:secret.hook', { kind: 'webhook', name: 'crm' }), { principal: { kind: 'webhook', name: 'crm' }, door: 'webhook' });
  assert.equal(refused.status, 403);
  assert.match(refused.message, /webhook:crm may not send on queue:secret\.hook/);
  assert.equal((await denialOf('webhook:crm', 'webhook', 'hook-door-2')).target, 'queue:secret.hook');
  assert.equal(await depth('queue:secret.hook'), before);

  // A caller without the secret: 401, webhook.refused in the trail, nothing routed.
  const events = await depth('queue:crm.events');
  const forged = sign('not-the-secret', { direction: 'inbound', timestamp: ts, id: 'hook-door-3' }, body);
  const bad = await fetch(`${gw.url}/hooks/crm`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-switchboard-id': 'hook-door-3', 'x-switchboard-timestamp': ts, 'x-switchboard-signature': forged } });
  assert.equal(bad.status, 401, await bad.text());
  await waitFor(async () => (await api(gw.url, 'GET', `/api/audit?action=webhook.refused&actor=${enc('webhook:crm')}&limit=20`, { user: 'ops' })).body.entries.length > 0, 5000, 'the webhook.refused entry');
  assert.equal(await depth('queue:crm.events'), events);
});

// --- a route from the config ------------------------------------------------------------------

test('route: it moves what arrives to its destination, keeping the sender; its principal may send nowhere else', async () => {
  const ok = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.routed', id: 'route-door-1', body: { n: 1 } } });
  assert.equal(ok.status, 202, JSON.stringify(ok.body));
  const moved = await waitFor(async () => (await api(gw.url, 'GET', `/api/queues/${enc('queue:route.out')}`, { user: 'ops' })).body.messages.find((m: Message) => m.id === 'route-door-1'), 20_000, 'the routed message');
  assert.deepEqual(moved.sender, { kind: 'user', name: 'clerk' });

  const principal = { kind: 'route', name: 'queue:in.routed -> queue:route.out' } as const;
  const before = await depth('queue:secret.route');
  const refused = await refusalAtRouter(message('route-door-2', 'queue:secret.route', { kind: 'user', name: 'clerk' }), { principal, door: 'route' });
  assert.equal(refused.status, 403);
  assert.match(refused.message, /route:queue:in\.routed -> queue:route\.out may not send on queue:secret\.route/);
  assert.equal((await denialOf('route:queue:in.routed -> queue:route.out', 'route', 'route-door-2')).target, 'queue:secret.route');
  assert.equal(await depth('queue:secret.route'), before);
});

// --- the inbox ------------------------------------------------------------------------------

test('inbox: deciding a group task without consume is 403 (browse only) or 404 (nothing), audited; the task stays open; no client door can act as the inbox', async () => {
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: GROUP, id: 'inbox-door-1', body: { title: 'Door check', actions: ['approve', 'reject'] } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Door check'), 20_000, 'the task');

  const seen = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'clerk', body: { action: 'approve' } });
  assert.equal(seen.status, 403, JSON.stringify(seen.body));
  assert.match(seen.body.error.message, /user:clerk may not consume on group:door-approvers/);
  await waitFor(async () => (await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc('user:clerk')}&limit=200`, { user: 'ops' })).body.entries.some((e: AuditEntry) => e.target === GROUP && /consume/.test(e.detail ?? '')), 5000, 'the audited refusal');
  const unseen = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'nobody', body: { action: 'approve' } });
  assert.equal(unseen.status, 404, 'a task one may not see is not found: its id cannot be probed');
  const claim = await api(gw.url, 'POST', `/api/tasks/${task.id}/claim`, { user: 'clerk' });
  assert.equal(claim.status, 403, JSON.stringify(claim.body));
  const still = await api(gw.url, 'GET', `/api/tasks/${task.id}`, { user: 'ops' });
  assert.equal(still.body.status, 'open');
  assert.equal(still.body.claimedBy, undefined);
  assert.deepEqual(still.body.history.map((h: { action: string }) => h.action), ['created']);

  // The inbox delivers decisions as the gateway itself; a client door presenting that principal is refused.
  for (const door of ['http', 'amqp', 'peer', 'webhook', 'broker'] as const) {
    const r = await refusalAtRouter(message(`inbox-forge-${door}`, 'queue:secret.inbox', { kind: 'system', name: 'inbox' }), { principal: { kind: 'system', name: 'inbox' }, door });
    assert.equal(r.status, 401, door);
    assert.match(r.message, new RegExp(`the ${door} door cannot act as system:inbox`));
    await denialOf('system:inbox', door, `inbox-forge-${door}`);
  }
  assert.equal(await depth('queue:secret.inbox'), 0);
});

// --- static: the router keeps its endpoints -------------------------------------------------------

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('static: doors never import a transport, and the Router keeps its endpoints private (register returns nothing)', () => {
  const doors = ['src/web', 'src/amqp-server', 'src/people', 'src/flows', 'src/cli'];
  for (const d of doors) {
    for (const file of sources(join(ROOT, d))) {
      const text = readFileSync(file, 'utf8');
      const imports = [...text.matchAll(/from\s+'([^']+)'/g)].map((m) => resolve(join(file, '..'), m[1]!)).filter((p) => p.startsWith(join(ROOT, 'src', 'endpoints')));
      assert.deepEqual(imports, [], `${relative(ROOT, file)} imports a transport`);
    }
  }
  const router = readFileSync(join(ROOT, 'src/core/router.ts'), 'utf8');
  assert.match(router, /private readonly endpoints = new Map<string, Endpoint>\(\)/);
  assert.match(router, /\n {2}register\(endpoint: Endpoint\): void \{/, 'register returns nothing');
});

test('static: no public Router method hands out an Endpoint (a door holding one could call send() around the chain)', () => {
  const router = readFileSync(join(ROOT, 'src/core/router.ts'), 'utf8');
  const body = router.slice(router.indexOf('export class Router'));
  // Every method signature that is not private: its return type must not mention Endpoint.
  const publicSignatures = body.split('\n').map((line) => /^ {2}(?!private\b)(?:async\s+|get\s+)?(\w+)\((.*)\)\s*:\s*(.+)\s*\{$/.exec(line)).filter((m) => m !== null).map((m) => ({ name: m[1]!, returns: m[3]!.trim() }));
  assert.ok(publicSignatures.some((s) => s.name === 'send'), 'the parser found the public methods');
  const leaking = publicSignatures.filter((s) => /\bEndpoint\b/.test(s.returns));
  assert.deepEqual(leaking, [], `public Router methods returning an Endpoint: ${JSON.stringify(leaking)}`);
  // And nothing outside the router reaches for `.endpoint` through it.
  const reaching = sources(join(ROOT, 'src')).filter((f) => !f.endsWith(join('core', 'router.ts')) && /router\.resolve\([^)]*\)\.endpoint/.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f));
  assert.deepEqual(reaching, []);
});
