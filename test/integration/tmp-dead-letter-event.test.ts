/**
 * A message on a temporary reply queue (`tmp:`) that its consumer refuses is dropped (temporary
 * queues have no dead-letter queue) and reported as `switchboard.message.dead-lettered`, stored
 * before the drop (README "Lifecycle events"). A message the consumer accepts makes no event.
 *
 * Real redis-server, an in-process gateway with its embedded AMQP endpoint, and a rhea client
 * whose dynamic receiver rejects one message with an AMQP `rejected` outcome.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import rhea, { type Connection, type ConnectionOptions, type Delivery, type EventContext } from 'rhea';
import type { Gateway } from '../../src/gateway.ts';
import { drain } from '../support/counting-sink.ts';
import { api, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const SINK = 'queue:tdl.sink';
let redis: TestRedis | undefined;
let gw: Gateway | undefined;
let connection: Connection | undefined;

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    amqp: { port: 0, credit: 10 },
    events: [{ types: ['switchboard.message.dead-lettered'], to: SINK }],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'tmp:**', verbs: ['send'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
    log: { level: 'error' },
  });
});

after(async () => {
  try { connection?.close(); } catch { /* gone */ }
  await gw?.stop().catch(() => {});
  await redis?.dispose();
});

test('a tmp: message its consumer rejects is dropped with one dead-lettered event; an accepted one makes none', { timeout: 60_000 }, async () => {
  const container = rhea.create_container({ id: `tdl-${Math.random().toString(36).slice(2, 8)}` });
  connection = container.connect({ host: '127.0.0.1', port: gw!.amqpPort!, username: 'ops', password: USERS.ops, reconnect: false } as ConnectionOptions);
  for (const ev of ['error', 'session_error', 'receiver_error', 'connection_error']) connection.on(ev, () => {});
  const deliveries: string[] = [];
  const address = await new Promise<string>((resolve, reject) => {
    const receiver = connection!.open_receiver({ source: { dynamic: true } as never, autoaccept: false, credit_window: 10 });
    receiver.on('receiver_open', () => resolve(receiver.source.address));
    receiver.on('receiver_close', () => reject(new Error(JSON.stringify(receiver.error))));
    receiver.on('message', (ctx: EventContext) => {
      const id = String(ctx.message!.message_id);
      deliveries.push(id);
      const d = ctx.delivery as Delivery;
      if (id === 'tmp-poison') d.reject({ condition: 'amqp:decode-error', description: 'cannot read this reply' });
      else d.accept();
    });
  });
  assert.match(address, /^tmp:/);
  for (const id of ['tmp-poison', 'tmp-fine']) {
    const r = await api(gw!.url, 'POST', '/api/messages', { user: 'ops', body: { to: address, id, body: { id } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }

  const counts = new Map<string, number>();
  const events: { type: string; subject: string; data: Record<string, unknown> }[] = [];
  await waitFor(async () => {
    for (const m of await drain(gw!.url, SINK, counts)) events.push({ type: m.body.type, subject: m.body.subject, data: m.body.data });
    return events.length >= 1;
  }, 30_000, 'the dead-lettered event');
  // Time for a wrong second event (a redelivery refused again, one for the accepted message).
  await new Promise((r) => setTimeout(r, 2000));
  for (const m of await drain(gw!.url, SINK, counts)) events.push({ type: m.body.type, subject: m.body.subject, data: m.body.data });

  assert.equal(events.length, 1, JSON.stringify(events));
  assert.equal(events[0]!.type, 'switchboard.message.dead-lettered');
  assert.equal(events[0]!.subject, address);
  assert.equal(events[0]!.data.transport, 'tmp');
  assert.equal(events[0]!.data.messageId, 'tmp-poison');
  assert.equal(events[0]!.data.address, address);
  assert.match(String(events[0]!.data.reason), /rejected.*cannot read this reply/);
  // Dropped, not handed out again: each message reached the consumer once.
  assert.deepEqual(deliveries.sort(), ['tmp-fine', 'tmp-poison']);
});
