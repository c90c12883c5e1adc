import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { authorizeReplyTo, authorizeSend } from '../../src/auth/authorization.ts';
import { Permissions, rulesFromConfig } from '../../src/auth/permissions.ts';
import type { SendResult } from '../../src/core/endpoint.ts';
import type { Message, Principal } from '../../src/core/message.ts';
import { compose, demoteReservedHeaders, requirePrincipal, type Caller, type Door, type SendInput } from '../../src/core/pipeline.ts';

const permissions = new Permissions(
  rulesFromConfig([
    { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }] },
    { peer: 'bank-b', allow: [{ address: 'queue:inbound.*', verbs: ['send'] }] },
    { group: 'starters', allow: [{ address: 'flow:payment-approval', verbs: ['start'] }] },
  ]),
  [{ principal: 'route:queue:a -> queue:b', address: 'queue:b', verbs: ['send'], reason: 'the route queue:a -> queue:b' },
   { principal: 'webhook:crm', address: 'queue:crm.events', verbs: ['send'], reason: 'the inbound webhook crm' },
   { principal: 'broker:legacy', address: 'flow:*/*', verbs: ['send'], reason: "the broker legacy's reply queue" }],
);

const clerk: Principal = { kind: 'user', name: 'clerk', groups: ['clerks'] };
const msg = (to: string, extra: Partial<Message> = {}): Message => ({ id: 'm1', to, sender: { kind: 'user', name: 'x' }, headers: {}, contentType: 'application/json', body: 1, createdAt: new Date(0).toISOString(), ...extra });

/** The chain the gateway builds, ending in a recorder instead of an endpoint. */
function chain() {
  const reached: SendInput[] = [];
  const send = compose([requirePrincipal, demoteReservedHeaders, authorizeSend(permissions), authorizeReplyTo(permissions)], async (input): Promise<SendResult> => {
    reached.push(input);
    return { id: input.message.id, duplicate: false };
  });
  return { reached, send: (m: Message, principal: Principal | undefined, door: Door = 'http') => send({ message: m, caller: { principal, door } as Caller }) };
}

describe('the router pipeline', () => {
  test('runs interceptors in order and reaches the end only when every one hands on', async () => {
    const order: string[] = [];
    const mk = (name: string) => ({ name, send: async (i: SendInput, next: (i: SendInput) => Promise<SendResult>) => { order.push(name); return next(i); } });
    const send = compose([mk('a'), mk('b'), mk('c')], async (i) => { order.push('end'); return { id: i.message.id, duplicate: false }; });
    await send({ message: msg('queue:x'), caller: { principal: clerk, door: 'http' } });
    assert.deepEqual(order, ['a', 'b', 'c', 'end']);
  });

  test('no principal, no message', async () => {
    const c = chain();
    await assert.rejects(c.send(msg('queue:in.a'), undefined), /needs an authenticated sender/);
    assert.equal(c.reached.length, 0);
  });

  test('a client door cannot present a flow or the gateway itself', async () => {
    const c = chain();
    for (const door of ['http', 'amqp', 'peer', 'webhook', 'broker'] as Door[]) {
      await assert.rejects(c.send(msg('queue:anything'), { kind: 'flow', name: 'payment-approval' }, door), /cannot act as flow:payment-approval/);
      await assert.rejects(c.send(msg('queue:anything'), { kind: 'system', name: 'switchboard' }, door), /cannot act as system:switchboard/);
    }
    assert.equal(c.reached.length, 0);
    await c.send(msg('queue:anything'), { kind: 'flow', name: 'payment-approval' }, 'flow');
    assert.equal(c.reached.length, 1);
  });

  test('send is authorized on the destination; flow:<name> needs start', async () => {
    const c = chain();
    await c.send(msg('queue:in.orders'), clerk);
    await assert.rejects(c.send(msg('queue:out.orders'), clerk), /user:clerk may not send on queue:out\.orders/);
    await assert.rejects(c.send(msg('flow:payment-approval'), clerk), /may not start on flow:payment-approval/);
    await c.send(msg('flow:payment-approval'), { kind: 'user', name: 'sam', groups: ['starters'] });
    assert.equal(c.reached.length, 2);
  });

  test('routes, webhooks and brokers have exactly their deployment grants; no principal kind but flow and system is unrestricted', async () => {
    const c = chain();
    await c.send(msg('queue:b'), { kind: 'route', name: 'queue:a -> queue:b' }, 'route');
    await assert.rejects(c.send(msg('queue:c'), { kind: 'route', name: 'queue:a -> queue:b' }, 'route'), /may not send on queue:c/);
    await c.send(msg('queue:crm.events'), { kind: 'webhook', name: 'crm' }, 'webhook');
    await assert.rejects(c.send(msg('queue:payments'), { kind: 'webhook', name: 'crm' }, 'webhook'), /webhook:crm may not send/);
    await assert.rejects(c.send(msg('queue:payments'), { kind: 'broker', name: 'legacy' }, 'broker'), /broker:legacy may not send/);
    await assert.rejects(c.send(msg('queue:inbound.x'), { kind: 'user', name: 'bank-b' }), /may not send/, 'a user named like a peer gets nothing of the peer');
    assert.equal(c.reached.length, 2);
  });

  test('a reply address needs send there; a peer or broker reply address stays in its own space', async () => {
    const c = chain();
    await assert.rejects(c.send(msg('queue:in.a', { replyTo: 'queue:out.a' }), clerk), /may not ask for replies at queue:out\.a/);
    await c.send(msg('queue:in.a', { replyTo: 'queue:in.replies' }), clerk);
    const peer: Principal = { kind: 'peer', name: 'bank-b' };
    await assert.rejects(c.send(msg('queue:inbound.x', { replyTo: 'queue:inbound.y' }), peer, 'peer'), /a peer's replies go back to that peer/);
    await c.send(msg('queue:inbound.x', { replyTo: 'peer:bank-b/replies' }), peer, 'peer');
    await assert.rejects(c.send(msg('flow:x/abc', { replyTo: 'queue:in.a' }), { kind: 'broker', name: 'legacy' }, 'broker'), /a broker's replies go back to that broker/);
    await assert.rejects(c.send(msg('flow:x'), { kind: 'broker', name: 'legacy' }, 'broker'), /may not start on flow:x/, 'a reply grant on instances does not start flows');
    assert.equal(c.reached.length, 2);
  });

  test('reserved headers from client doors are demoted, internal doors keep theirs', async () => {
    const c = chain();
    await c.send(msg('queue:in.a', { headers: { 'switchboard-task': 'ask', 'SWITCHBOARD-X': '1', 'switchboard-claimed-y': '2', other: '3' } }), clerk, 'http');
    assert.deepEqual(c.reached[0]!.message.headers, { 'switchboard-claimed-task': 'ask', 'switchboard-claimed-x': '1', 'switchboard-claimed-y': '2', other: '3' });
    await c.send(msg('queue:in.a', { headers: { 'switchboard-task': 't1' } }), { kind: 'system', name: 'inbox' }, 'inbox');
    assert.deepEqual(c.reached[1]!.message.headers, { 'switchboard-task': 't1' });
  });

  test('a refusal thrown by a plain (not async) link reaches every link before it and the caller as a rejection', async () => {
    const seen: string[] = [];
    // Like audit-denials: catches what a later link refuses.
    const catcher = { name: 'catcher', async send(i: SendInput, next: (i: SendInput) => Promise<SendResult>) {
      try { return await next(i); } catch (err) { seen.push(`caught: ${(err as Error).message}`); throw err; }
    } };
    const thrower = { name: 'thrower', send(): Promise<SendResult> { throw new Error('refused at once'); } };
    let reachedEnd = false;
    const send = compose([catcher, thrower], async (i) => { reachedEnd = true; return { id: i.message.id, duplicate: false }; });
    const outer = compose([thrower], async (i) => ({ id: i.message.id, duplicate: false }));
    const input = { message: msg('queue:x'), caller: { principal: clerk, door: 'http' as const } };
    // A synchronous throw out of the chain would escape assert.rejects' promise argument here.
    await assert.rejects(send(input), /refused at once/);
    await assert.rejects(outer(input), /refused at once/);
    assert.deepEqual(seen, ['caught: refused at once']);
    assert.equal(reachedEnd, false);
    // The end itself may throw synchronously too.
    const endThrows = compose([catcher], (() => { throw new Error('the endpoint threw'); }) as never);
    await assert.rejects(endThrows(input), /the endpoint threw/);
  });
});
