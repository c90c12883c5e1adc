// Authority is decided at one place (DESIGN §5): every act besides a send — browse, receive, ack,
// dead letters, replay, AMQP link attach, consume — goes through the router's guard, whichever door
// asks. Tried as a hostile user would at the HTTP API and the AMQP endpoint: each refusal names the
// missing right, lands in the audit trail once with the door and the act, and changes nothing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext, type Receiver } from 'rhea';
import type { Message } from '../../src/core/message.ts';
import type { Subscription } from '../../src/core/endpoint.ts';
import type { Gateway } from '../../src/gateway.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';
import { api, enc, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis;
let gw: Gateway;
const conns: Connection[] = [];

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, { amqp: { port: 0 } });
});
after(async () => {
  for (const c of conns) c.close();
  await gw?.stop();
  await redis?.dispose();
});

interface Entry { action: string; actor: string; target?: string; detail?: string }

async function denials(actor: string): Promise<Entry[]> {
  const r = await api(gw.url, 'GET', `/api/audit?action=access.denied&actor=${enc(actor)}&limit=200`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
}

/** Waits for exactly one refusal matching `detail` on `target`, and returns it. */
async function oneDenial(actor: string, target: string, detail: RegExp): Promise<Entry> {
  const found = await waitFor(async () => {
    const hits = (await denials(actor)).filter((e) => e.target === target && detail.test(e.detail ?? ''));
    return hits.length > 0 ? hits : undefined;
  }, 5000, `the audited refusal of ${actor} on ${target} (${detail})`);
  assert.equal(found!.length, 1, `written once, not by the door and the router both: ${JSON.stringify(found)}`);
  return found![0]!;
}

async function send(to: string, id: string): Promise<void> {
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { id } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
}

async function waitingIds(address: string): Promise<string[]> {
  return (await gw.router.browse(address, 100, SYSTEM_CALLER)).messages.map((m) => m.id).sort();
}

test('HTTP API: browse rights do not take or acknowledge; nobody reads dead letters or replays them without the right; nothing moves', async () => {
  const Q = 'queue:out.ledger'; // clerk: browse only
  await send(Q, 'l1');
  await send(Q, 'l2');

  // clerk may look...
  const look = await api(gw.url, 'GET', `/api/queues/${enc(Q)}`, { user: 'clerk' });
  assert.equal(look.status, 200, JSON.stringify(look.body));
  assert.equal(look.body.depth, 2);
  // ...but not take.
  const take = await api(gw.url, 'POST', `/api/queues/${enc(Q)}/receive`, { user: 'clerk', body: { max: 10, leaseSeconds: 60 } });
  assert.equal(take.status, 403, JSON.stringify(take.body));
  assert.equal(take.body.error.code, 'forbidden');
  assert.match(take.body.error.message, /user:clerk may not consume on queue:out\.ledger/);
  assert.match((await oneDenial('user:clerk', Q, /\(http door, receive\)/)).detail!, /^consume denied on queue:out\.ledger/);
  assert.deepEqual(await waitingIds(Q), ['l1', 'l2'], 'nothing was leased by the refused receive');

  // A lease that leaked to the clerk does not let it acknowledge (and so delete) the message.
  const held = await gw.router.receive(Q, 1, 60_000, SYSTEM_CALLER);
  assert.equal(held.length, 1);
  const ack = await api(gw.url, 'POST', `/api/queues/${enc(Q)}/ack`, { user: 'clerk', body: { leases: [held[0]!.lease] } });
  assert.equal(ack.status, 403, JSON.stringify(ack.body));
  await oneDenial('user:clerk', Q, /\(http door, ack\)/);
  assert.equal((await gw.router.ack(Q, [held[0]!.lease], SYSTEM_CALLER)).acked, 1, 'the lease was still good: the refused ack changed nothing');

  // Dead letters: reading takes browse (or admin) on the address; replaying takes send there.
  const D = 'queue:held.auth';
  const subs: Subscription[] = [];
  const failed: string[] = [];
  subs.push(await gw.router.consume(D, async (m: Message) => { failed.push(m.id); throw new Error('downstream refused it'); }, { maxInFlight: 1 }, SYSTEM_CALLER));
  await send(D, 'd1');
  await waitFor(async () => ((await gw.router.deadLetters(D, 10, SYSTEM_CALLER)).depth === 1 ? true : undefined), 15_000, 'd1 dead-lettered');
  for (const s of subs) await s.close();

  const read = await api(gw.url, 'GET', `/api/dlq/${enc(D)}`, { user: 'nobody' });
  assert.equal(read.status, 403, JSON.stringify(read.body));
  assert.match(read.body.error.message, /user:nobody may not browse on queue:held\.auth/);
  await oneDenial('user:nobody', D, /\(http door, deadLetters\)/);
  const viaBrowse = await api(gw.url, 'GET', `/api/queues/${enc(`dlq:${D}`)}`, { user: 'nobody' });
  assert.equal(viaBrowse.status, 403, 'dlq:X browsed through the queue API takes the same right as the dead-letter API');

  const replay = await api(gw.url, 'POST', `/api/dlq/${enc(D)}/replay`, { user: 'clerk', body: { ids: ['d1'] } });
  assert.equal(replay.status, 403, JSON.stringify(replay.body));
  assert.match(replay.body.error.message, /user:clerk may not send on queue:held\.auth/);
  await oneDenial('user:clerk', D, /\(http door, replay\)/);
  assert.deepEqual((await gw.router.deadLetters(D, 10, SYSTEM_CALLER)).messages.map((m) => m.id), ['d1'], 'the dead letter is where it was');
  assert.deepEqual(await waitingIds(D), [], 'and nothing was put back in the queue');

  // The owner of the rights does all of it through the same doors.
  const opsRead = await api(gw.url, 'GET', `/api/dlq/${enc(D)}`, { user: 'ops' });
  assert.equal(opsRead.status, 200);
  assert.equal((await api(gw.url, 'POST', `/api/dlq/${enc(D)}/replay`, { user: 'ops', body: { ids: ['d1'] } })).body.replayed, 1);
});

/** A console session of `user` (the login form, its CSRF token, the session cookie): GET a page as it. */
async function signIn(user: keyof typeof USERS): Promise<(path: string) => Promise<{ status: number; html: string }>> {
  const login = await fetch(`${gw.url}/login`);
  let cookie = login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await login.text())![1]!;
  const res = await fetch(`${gw.url}/login`, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ username: user, password: USERS[user], _csrf: csrf, next: '/' }) });
  assert.equal(res.status, 303, 'signed in');
  cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  return async (path) => {
    const r = await fetch(gw.url + path, { headers: { cookie, accept: 'text/html' }, redirect: 'manual' });
    return { status: r.status, html: await r.text() };
  };
}

test("administering an address's rules does not read its messages: the console shows an admin the numbers, the API refuses the contents", async () => {
  const Q = 'queue:adm.ledger';
  await send(Q, 'private-1');
  const grant = await api(gw.url, 'POST', '/api/permissions', { user: 'ops', body: { user: 'nobody', address: 'queue:adm.*', verbs: ['admin'] } });
  assert.equal(grant.status, 201, JSON.stringify(grant.body));
  await waitFor(async () => ((await api(gw.url, 'GET', `/api/who-can?address=${enc(Q)}&verb=admin`, { user: 'ops' })).body.grants ?? []).some((g: { user?: string }) => g.user === 'nobody') || undefined, 5000, 'the rule in force');

  const page = await signIn('nobody');
  const list = await page('/admin/queues');
  assert.equal(list.status, 200);
  assert.match(list.html, /adm\.ledger/, 'the queue it administers is listed with its numbers');
  const q = await page(`/admin/queues/${enc(Q)}`);
  assert.equal(q.status, 200, q.html.slice(0, 300));
  assert.match(q.html, /id="no-read"/);
  assert.doesNotMatch(q.html, /private-1/, 'no message id, let alone a body');
  assert.equal((await page(`/admin/queues/${enc(Q)}/messages/private-1`)).status, 403, 'a message page is refused');
  await oneDenial('user:nobody', Q, /^browse denied on queue:adm\.ledger \(http door, browse\)/);

  const viaApi = await api(gw.url, 'GET', `/api/queues/${enc(Q)}`, { user: 'nobody' });
  assert.equal(viaApi.status, 403, 'the API answers the same: browse is needed');
  // ops has browse there and sees the message in the same page.
  assert.match((await (await signIn('ops'))(`/admin/queues/${enc(Q)}`)).html, /private-1/);
});

// ───────────────────────────── AMQP ─────────────────────────────

async function connect(user: keyof typeof USERS): Promise<Connection> {
  const container = rhea.create_container({ id: `authority-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: gw.amqpPort!, username: user, password: USERS[user], reconnect: false } as ConnectionOptions);
  conns.push(c);
  for (const e of ['error', 'session_error', 'sender_error', 'receiver_error']) c.on(e, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('connection_error', (ctx: EventContext) => reject(new Error(`connection error: ${JSON.stringify(ctx.connection.error)}`)));
  });
  return c;
}

/** How the gateway ended a link: its error condition and description (none: it stayed open 1.5 s). */
function linkOutcome(link: { on: (e: string, f: (ctx: EventContext) => void) => void }, role: 'sender' | 'receiver'): Promise<{ condition?: string; description?: string } | 'open'> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('open'), 1500);
    const done = (ctx: EventContext) => {
      clearTimeout(t);
      const l = (role === 'sender' ? ctx.sender : ctx.receiver) as unknown as { error?: { condition?: string; description?: string } } | undefined;
      resolve(l?.error ?? {});
    };
    link.on(`${role}_error`, done);
    link.on(`${role}_close`, done);
  });
}

test('AMQP: a link is attached only where the router lets the principal act; refusals are audited like every other door\'s', { timeout: 60_000 }, async () => {
  const Q = 'queue:in.amqp-orders'; // clerk: send only
  await send(Q, 'a1');
  const clerk = await connect('clerk');

  const consume = await linkOutcome(clerk.open_receiver({ source: { address: Q }, credit_window: 10 }), 'receiver');
  assert.notEqual(consume, 'open', 'a receiver without consume must not stay attached');
  assert.equal((consume as { condition?: string }).condition, 'amqp:unauthorized-access', JSON.stringify(consume));
  assert.match((consume as { description?: string }).description ?? '', /user:clerk may not consume on queue:in\.amqp-orders/);
  await oneDenial('user:clerk', Q, /^consume denied on queue:in\.amqp-orders \(amqp door, consume\)/);

  const browse = await linkOutcome(clerk.open_receiver({ source: { address: Q, distribution_mode: 'copy' }, credit_window: 10 }), 'receiver');
  assert.equal((browse as { condition?: string }).condition, 'amqp:unauthorized-access', JSON.stringify(browse));
  await oneDenial('user:clerk', Q, /\(amqp door, browse\)/);

  const P = 'queue:payments.amqp';
  const sendLink = await linkOutcome(clerk.open_sender({ target: { address: P } }), 'sender');
  assert.equal((sendLink as { condition?: string }).condition, 'amqp:unauthorized-access', JSON.stringify(sendLink));
  await oneDenial('user:clerk', P, /^send denied on queue:payments\.amqp \(amqp door, send\)/);

  assert.deepEqual(await waitingIds(Q), ['a1'], 'the refused receivers took nothing');
  assert.deepEqual(await waitingIds(P), []);
  // Where the clerk has the right, the same connection attaches.
  assert.equal(await linkOutcome(clerk.open_sender({ target: { address: Q } }), 'sender'), 'open');
});

test("AMQP: a temporary reply queue is its connection's; another user with consume on every queue cannot attach to it", { timeout: 60_000 }, async () => {
  const owner = await connect('clerk');
  const receiver: Receiver = owner.open_receiver({ source: { dynamic: true } as never, credit_window: 10, autoaccept: false });
  const address = await new Promise<string>((resolve) => receiver.once('receiver_open', (ctx: EventContext) => resolve((ctx.receiver as unknown as { remote: { attach: { source: { address: string } } } }).remote.attach.source.address)));
  assert.match(address, /^tmp:/);

  const thief = await connect('ops'); // consume on queue:**, admin on **: still not another connection's tmp:
  const stolen = await linkOutcome(thief.open_receiver({ source: { address }, credit_window: 10 }), 'receiver');
  assert.equal((stolen as { condition?: string }).condition, 'amqp:unauthorized-access', JSON.stringify(stolen));
  assert.match((stolen as { description?: string }).description ?? '', /only the connection that created a temporary queue may consume it/);
  await oneDenial('user:ops', address, /\(amqp door, consume\)/);

  // A reply sent there still reaches its owner: the refused attach took nothing.
  const got = new Promise<string>((resolve) => receiver.once('message', (ctx: EventContext) => { (ctx.delivery as Delivery).accept(); resolve(String(ctx.message?.message_id)); }));
  const r = await gw.router.send({ id: 'reply-1', to: address, sender: { kind: 'system', name: 'test' }, headers: {}, contentType: 'application/json', body: { ok: true }, createdAt: new Date().toISOString() } as Message, SYSTEM_CALLER);
  assert.equal(r.duplicate, false);
  assert.equal(await got, 'reply-1');
});
