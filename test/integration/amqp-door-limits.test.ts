/**
 * The AMQP door is bounded before login (DESIGN §6, issue 13 point 4), against a gateway in its
 * own process (`switchboard start`), so its memory can be read from /proc:
 *
 * - a raw TCP client that sends the SASL header and then a 1 MiB frame is closed on the frame's
 *   size field, before its body is read; the gateway's memory does not grow by the frames; audited;
 * - a client that connects and says nothing is closed after amqp.handshakeTimeout; audited;
 * - one connection over amqp.maxConnectionsPerIp is closed at accept; audited; a later one works;
 * - 10 failed SASL logins lock the user name out at every door (the HTTP API too: one limiter),
 *   each failure audited with the IP, until the window passes;
 * - a multi-frame delivery past maxMessageBytes is refused with amqp:link:message-size-exceeded
 *   before it is whole (a raw delivery that never ends is refused too), and nothing is enqueued;
 * - a message sent by clerk and consumed by ops carries user_id = clerk.
 *
 * Real redis-server, real gateway process, rhea and raw sockets as clients.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type EventContext, type Sender } from 'rhea';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, spawnGateway, USERS, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const HANDSHAKE_MS = 3000;
const PER_IP = 8;
const MAX_BYTES = 4096;
const WINDOW_MS = 15_000;
/** rhea's frame codec, to write transfers rhea's client would not (a delivery that never ends). */
const frames = createRequire(import.meta.url)('rhea/lib/frames.js') as {
  write_frame(f: unknown): Buffer;
  amqp_frame(channel: number, performative: unknown, payload?: Buffer): unknown;
  transfer(fields: Record<string, unknown>): unknown;
};

let redis: TestRedis | undefined;
let gw: GatewayProcess | undefined;
let amqpPort = 0;
const rheaConnections: Connection[] = [];
const sockets: Socket[] = [];

before(async () => {
  redis = await startTestRedis();
  amqpPort = await freePort();
  gw = await spawnGateway(redis.url, {
    http: { host: '127.0.0.1', port: 0, loginLimits: { perUser: 10, perIp: 100, window: `${WINDOW_MS}ms` } },
    amqp: { port: amqpPort, host: '127.0.0.1', maxMessageBytes: MAX_BYTES, handshakeTimeout: `${HANDSHAKE_MS}ms`, maxConnectionsPerIp: PER_IP, preAuthMaxFrame: 4096 },
  });
});

after(async () => {
  for (const c of rheaConnections) {
    try {
      c.close();
    } catch {
      /* already gone */
    }
  }
  for (const s of sockets) s.destroy();
  await gw?.kill('SIGTERM');
  await redis?.dispose();
});

// ───────────────────────────── helpers ─────────────────────────────

const SASL_HEADER = Buffer.from([0x41, 0x4d, 0x51, 0x50, 3, 1, 0, 0]);

/** A raw TCP connection to the AMQP port; resolves once connected. */
async function raw(): Promise<{ socket: Socket; closed: Promise<number> }> {
  const socket = connect({ host: '127.0.0.1', port: amqpPort });
  sockets.push(socket);
  socket.on('error', () => {});
  socket.resume(); // read and drop whatever the server says
  const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return { socket, closed };
}

/** Resolves true if `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  const done = await Promise.race([p.then(() => true), t]);
  clearTimeout(timer);
  return done;
}

/** The gateway process's resident memory in bytes. */
function rss(): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${gw!.pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

interface Audited { action: string; actor: string; ip?: string; target?: string; detail?: string }

async function audit(action: string): Promise<Audited[]> {
  const r = await api(gw!.url, 'GET', `/api/audit?limit=1000&action=${enc(action)}`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries as Audited[];
}

const isLoopback = (ip: string | undefined) => ip === '127.0.0.1' || ip === '::ffff:127.0.0.1';

async function rheaConnect(user: string, password: string): Promise<Connection> {
  const container = rhea.create_container({ id: `dl-${user}-${Math.random().toString(36).slice(2, 8)}` });
  const c = container.connect({ host: '127.0.0.1', port: amqpPort, username: user, password, reconnect: false } as ConnectionOptions);
  rheaConnections.push(c);
  for (const ev of ['error', 'session_error', 'sender_error', 'receiver_error', 'connection_error']) c.on(ev, () => {});
  await new Promise<void>((resolve, reject) => {
    c.once('connection_open', () => resolve());
    c.once('disconnected', (ctx: EventContext) => reject(new Error(`disconnected: ${String((ctx as { error?: unknown }).error ?? '')}`)));
  });
  return c;
}

async function openSender(c: Connection, address: string): Promise<Sender> {
  const s = c.open_sender({ target: { address } });
  await new Promise<void>((resolve, reject) => {
    s.once('sendable', () => resolve());
    s.once('sender_close', () => reject(new Error(`sender refused: ${JSON.stringify(s.error)}`)));
  });
  return s;
}

/** Resolves with the error the server detached `s` with. */
function detached(s: Sender): Promise<{ condition?: string; description?: string }> {
  return new Promise((resolve) => s.once('sender_close', () => resolve((s.error ?? {}) as never)));
}

async function depth(address: string): Promise<number> {
  const r = await api(gw!.url, 'GET', `/api/queues/${enc(address)}?limit=1`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.depth as number;
}

// ───────────────────────────── before login ─────────────────────────────

test('a frame over 4 KiB before SASL closes the connection on its size field, and the gateway does not buffer it', async () => {
  // The size field alone (1 MiB declared, no body sent): closed at once, not left waiting for the body.
  const probe = await raw();
  const big = Buffer.alloc(4);
  big.writeUInt32BE(1 << 20);
  probe.socket.write(Buffer.concat([SASL_HEADER, big, Buffer.from([2, 1, 0, 0])]));
  assert.ok(await within(probe.closed, HANDSHAKE_MS / 2), 'closed on the size field, well before the handshake timeout');

  // Now with the whole 1 MiB body sent by several clients at once: memory stays flat.
  const clients = 6;
  const before = rss();
  const conns = await Promise.all(Array.from({ length: clients }, () => raw()));
  const body = Buffer.alloc(1 << 20, 0x41);
  for (const { socket } of conns) socket.write(Buffer.concat([SASL_HEADER, big, Buffer.from([2, 1, 0, 0]), body]));
  for (const { closed } of conns) assert.ok(await within(closed, HANDSHAKE_MS / 2), 'each connection closed');
  const grew = rss() - before;
  // Buffering the frames would hold 6 MiB; a generous bound leaves room for the runtime's own noise.
  assert.ok(grew < 3 * (1 << 20), `the gateway grew by ${grew} bytes while ${clients} clients sent 1 MiB frames before login`);

  const entries = await waitFor<Audited[] | undefined>(async () => {
    const e = (await audit('amqp.refused')).filter((x) => /frame of 1048576 bytes before logging in/.test(x.detail ?? ''));
    return e.length >= 1 + clients ? e : undefined;
  }, 10_000, 'amqp.refused entries for the frames');
  assert.ok(entries!.every((e) => isLoopback(e.ip) && e.target === 'amqp'), JSON.stringify(entries![0]));
});

test('a client that connects and says nothing is closed after amqp.handshakeTimeout, audited', async () => {
  const start = Date.now();
  const silent = await raw();
  const closedAt = await silent.closed;
  const took = closedAt - start;
  assert.ok(took >= HANDSHAKE_MS - 500, `closed after ${took} ms, before the ${HANDSHAKE_MS} ms timeout`);
  assert.ok(took < HANDSHAKE_MS + 5000, `closed after ${took} ms, long after the ${HANDSHAKE_MS} ms timeout`);
  const e = await waitFor(async () => (await audit('amqp.refused')).find((x) => /did not finish SASL and open within 3000 ms/.test(x.detail ?? '')), 10_000, 'the timeout audited');
  assert.ok(isLoopback(e!.ip));
});

test('a connection over amqp.maxConnectionsPerIp is closed at accept and audited; once others close, a client gets in', async () => {
  const held = [];
  for (let i = 0; i < PER_IP; i++) held.push(await raw());
  const extra = await raw();
  assert.ok(await within(extra.closed, HANDSHAKE_MS / 2), 'the extra connection closed at once');
  for (const h of held) assert.equal(h.socket.destroyed, false, 'the connections within the cap stay open');
  for (const h of held) h.socket.destroy();
  await Promise.all(held.map((h) => h.closed));
  const e = await waitFor(async () => (await audit('amqp.refused')).find((x) => new RegExp(`${PER_IP} connections from this address are open already`).test(x.detail ?? '')), 10_000, 'the refusal audited');
  assert.ok(isLoopback(e!.ip));
  // The server counts closed sockets down: a logged-in client gets in again.
  const c = await waitFor(async () => rheaConnect('ops', USERS.ops).catch(() => undefined), 10_000, 'a connection after the others closed');
  c!.close();
});

test('failed SASL logins count against the same limits as HTTP, audited with the IP, until the window passes', async () => {
  const firstFailure = Date.now();
  for (let i = 0; i < 10; i++) {
    await assert.rejects(rheaConnect('nobody', `wrong-${i}`), /disconnected/);
  }
  // Locked out now: the right password is refused over AMQP and over HTTP (one shared limiter).
  await assert.rejects(rheaConnect('nobody', USERS.nobody), /disconnected/);
  const http = await api(gw!.url, 'GET', '/api/tasks', { user: 'nobody' });
  assert.equal(http.status, 429, JSON.stringify(http.body));
  assert.ok(Date.now() - firstFailure < WINDOW_MS, 'the checks ran within the window');

  const failures = (await audit('login.failure')).filter((e) => e.actor === 'user:nobody' && e.target === 'amqp');
  assert.equal(failures.length, 10, JSON.stringify(failures));
  assert.ok(failures.every((e) => isLoopback(e.ip)), JSON.stringify(failures[0]));

  // After the window the right password works again, at both doors.
  await new Promise((r) => setTimeout(r, Math.max(0, firstFailure + WINDOW_MS + 500 - Date.now())));
  const c = await waitFor(async () => rheaConnect('nobody', USERS.nobody).catch(() => undefined), 10_000, 'login after the window');
  c!.close();
  assert.equal((await api(gw!.url, 'GET', '/api/tasks', { user: 'nobody' })).status, 200);
});

// ───────────────────────────── after login ─────────────────────────────

test('a multi-frame delivery past maxMessageBytes is refused before it is whole (amqp:link:message-size-exceeded), nothing enqueued', async () => {
  // rhea splits a 1 MiB message into transfers of the 64 KiB max-frame-size we announce.
  const c = await rheaConnect('ops', USERS.ops);
  const s = await openSender(c, 'queue:big.rhea');
  const announced = (s as unknown as { remote: { attach?: { max_message_size?: number } } }).remote.attach?.max_message_size;
  assert.ok(Number(announced) > MAX_BYTES && Number(announced) < MAX_BYTES + 100_000, `max_message_size in the attach: ${announced}`);
  const gone = detached(s);
  s.send({ message_id: 'big-1', body: rhea.message.data_section(Buffer.alloc(1 << 20, 0x42)) });
  const err = await gone;
  assert.equal(err.condition, 'amqp:link:message-size-exceeded', JSON.stringify(err));
  assert.match(err.description ?? '', /before it was whole/);
  // The connection carries on: a small message on a new link is taken.
  const s2 = await openSender(c, 'queue:big.rhea');
  const outcome = await new Promise<string>((resolve) => {
    s2.once('accepted', () => resolve('accepted'));
    s2.once('rejected', (ctx: EventContext) => resolve(`rejected ${JSON.stringify(ctx.delivery?.remote_state)}`));
    s2.send({ message_id: 'small-1', body: rhea.message.data_section(Buffer.from('{"ok":true}')), content_type: 'application/json' });
  });
  assert.equal(outcome, 'accepted');
  assert.equal(await depth('queue:big.rhea'), 1, 'only the small message was enqueued');

  // A delivery that never ends (more=true on every transfer, written raw): refused all the same.
  const c2 = await rheaConnect('ops', USERS.ops);
  const raws = await openSender(c2, 'queue:big.raw');
  const rawGone = detached(raws);
  const link = raws as unknown as { local: { handle: number }; session: { local: { channel: number } } };
  const socket = (c2 as unknown as { socket: Socket }).socket;
  const chunk = Buffer.alloc(4000, 0x43);
  let sent = 0;
  let refused = false;
  void rawGone.then(() => (refused = true));
  for (let i = 0; i < 40 && !refused; i++) {
    const t = frames.transfer({ handle: link.local.handle, delivery_id: i === 0 ? 0 : undefined, delivery_tag: i === 0 ? Buffer.from('raw-0') : undefined, message_format: 0, settled: false, more: true });
    socket.write(frames.write_frame(frames.amqp_frame(link.session.local.channel, t, chunk)));
    sent += chunk.length;
    await new Promise((r) => setTimeout(r, 20));
  }
  const rawErr = await rawGone;
  assert.equal(rawErr.condition, 'amqp:link:message-size-exceeded', JSON.stringify(rawErr));
  assert.ok(sent < 40 * chunk.length, `refused while the delivery was still arriving (after ${sent} bytes)`);
  assert.equal(await depth('queue:big.raw'), 0, 'nothing enqueued');
});

test('a message sent by clerk and consumed by ops over AMQP carries user_id = clerk, not the consumer', async () => {
  const address = 'queue:in.userid';
  const sending = await rheaConnect('clerk', USERS.clerk);
  const s = await openSender(sending, address);
  await new Promise<void>((resolve, reject) => {
    s.once('accepted', () => resolve());
    s.once('rejected', () => reject(new Error('rejected')));
    s.send({ message_id: 'uid-1', body: rhea.message.data_section(Buffer.from('{"n":1}')), content_type: 'application/json' });
  });
  const receiving = await rheaConnect('ops', USERS.ops);
  const m = await new Promise<{ user_id?: unknown; application_properties?: Record<string, unknown> }>((resolve) => {
    const r = receiving.open_receiver({ source: { address }, autoaccept: true });
    r.once('message', (ctx: EventContext) => resolve(ctx.message as never));
  });
  assert.equal(Buffer.from(m.user_id as Buffer).toString('utf8'), 'clerk');
  assert.equal(m.application_properties?.['switchboard-sender'], 'user:clerk');
});
