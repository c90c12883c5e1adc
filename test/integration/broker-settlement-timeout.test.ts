/**
 * A broker that takes a message and never settles it (it hangs, or a proxy between drops the
 * disposition): the send must fail as unavailable after brokers.<name>.sendTimeout, so a route
 * holds the message and tries again, instead of waiting for ever. The broker here is a rhea
 * listener on a free loopback port that accepts the link and the transfers and never answers them.
 * Polls only: no timing is asserted beyond "it failed, with the reason, and nothing succeeded".
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { AddressInfo, Server } from 'node:net';
import rhea, { type EventContext } from 'rhea';
import { Broker } from '../../src/amqp/connection.ts';
import { DestinationUnavailable } from '../../src/core/errors.ts';
import { createLogger } from '../../src/log.ts';

const brokers: Broker[] = [];
const servers: Server[] = [];

after(async () => {
  for (const b of brokers) await b.close().catch(() => {});
  for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
});

/** A broker that holds every message it is sent, unsettled; resolves with its port and what it got. */
async function silentBroker(): Promise<{ port: number; received: string[] }> {
  const received: string[] = [];
  const container = rhea.create_container({ id: 'silent-broker' });
  container.sasl_server_mechanisms.enable_anonymous();
  container.on('message', (ctx: EventContext) => { received.push(String(ctx.message?.message_id)); });
  container.on('error', () => {});
  const server = container.listen({ port: 0, host: '127.0.0.1', autoaccept: false } as never) as unknown as Server;
  servers.push(server);
  await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
  return { port: (server.address() as AddressInfo).port, received };
}

test('a send the broker never settles fails as unavailable after sendTimeout, naming the broker, the address and why; several at once all fail', { timeout: 30_000 }, async () => {
  const silent = await silentBroker();
  const broker = new Broker({ name: 'silent', url: `amqp://127.0.0.1:${silent.port}`, sasl: 'ANONYMOUS', addressFormat: 'plain', sendTimeoutMs: 300 }, createLogger('silent'));
  brokers.push(broker);
  broker.start();
  await broker.ready(5000);
  const sends = ['m1', 'm2', 'm3'].map((id) => broker.send('orders', { message_id: id, body: 'x' }));
  const outcomes = await Promise.allSettled(sends);
  assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected']);
  for (const o of outcomes) {
    const err = (o as PromiseRejectedResult).reason;
    assert.ok(err instanceof DestinationUnavailable, String(err));
    assert.match(err.message, /^mq:silent\/orders cannot accept messages now: no settlement from the broker within 300 ms$/);
  }
  assert.deepEqual(silent.received.sort(), ['m1', 'm2', 'm3'], 'the broker did get them: only their settlement never came');
  // The connection stays usable: a later send waits its own time again and fails the same way.
  await assert.rejects(broker.send('orders', { message_id: 'm4', body: 'y' }), /no settlement from the broker within 300 ms/);
});
