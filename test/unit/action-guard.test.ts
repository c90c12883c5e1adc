import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AuditEntry, AuditLog } from '../../src/auth/audit.ts';
import { actionGuard } from '../../src/auth/authorization.ts';
import { Permissions, rulesFromConfig } from '../../src/auth/permissions.ts';
import { PermissionDenied, Unauthenticated } from '../../src/core/errors.ts';
import type { Principal } from '../../src/core/message.ts';
import type { Caller } from '../../src/core/pipeline.ts';

// The router's guard for every act besides a send, over the real permission model. The audit
// trail is Redis-backed in the gateway; here a recorder keeps what the guard writes to it.

const permissions = new Permissions(
  rulesFromConfig([
    { group: 'ops', allow: [{ address: 'queue:orders', verbs: ['browse'] }, { address: 'queue:work', verbs: ['consume', 'send'] }, { address: 'topic:prices', verbs: ['consume'] }] },
    { group: 'admins', allow: [{ address: 'queue:**', verbs: ['admin'] }] },
    { group: 'starters', allow: [{ address: 'flow:payment', verbs: ['start'] }] },
  ]),
  [{ principal: 'route:queue:a -> queue:b', address: 'queue:a', verbs: ['consume'], reason: 'the route queue:a -> queue:b' }],
);

function guard() {
  const entries: AuditEntry[] = [];
  const audit = { record: async (e: AuditEntry) => { entries.push(e); } } as unknown as AuditLog;
  return { g: actionGuard(permissions, audit), entries };
}

const user = (name: string, ...groups: string[]): Principal => ({ kind: 'user', name, groups });
const http = (p: Principal, extra: Partial<Caller> = {}): Caller => ({ principal: p, door: 'http', ip: '127.0.0.9', ...extra });

describe('actionGuard', () => {
  test('each act takes its verb: stats, browse and dead letters read, receive/ack/consume/discard take consume, replay sends, discarding a waiting message is admin', () => {
    const { g } = guard();
    const ops = http(user('olga', 'ops'));
    assert.equal(g.allows('browse', 'queue:orders', ops), true);
    assert.equal(g.allows('deadLetters', 'queue:orders', ops), true);
    assert.equal(g.allows('receive', 'queue:orders', ops), false, 'browse does not let you take messages');
    for (const act of ['receive', 'ack', 'consume', 'discardDeadLetters', 'replay', 'send'] as const) assert.equal(g.allows(act, 'queue:work', ops), true, act);
    assert.equal(g.allows('browse', 'queue:work', ops), false, 'consume does not let you read what others wait for');
    assert.equal(g.allows('discardWaiting', 'queue:work', ops), false, 'only an administrator discards what waits');
    const admin = http(user('ada', 'admins'));
    assert.equal(g.allows('discardWaiting', 'queue:work', admin), true);
    assert.equal(g.allows('stats', 'queue:work', admin), true, "an administrator sees a queue's numbers");
    assert.equal(g.allows('browse', 'queue:work', admin), false, 'but reading its messages takes browse');
    assert.equal(g.allows('deadLetters', 'queue:work', admin), false);
    assert.equal(g.allows('stats', 'queue:orders', ops), true, 'browse sees the numbers too');
    assert.equal(g.allows('stats', 'queue:work', ops), false);
    assert.equal(g.allows('receive', 'queue:work', admin), false, 'admin is not consume');
  });

  test('a send to flow:<name> is a start; a topic subscription is governed by its topic\'s rules', () => {
    const { g } = guard();
    assert.equal(g.allows('send', 'flow:payment', http(user('sam', 'starters'))), true);
    assert.equal(g.allows('send', 'flow:payment', http(user('olga', 'ops'))), false);
    assert.equal(g.allows('consume', 'topic:prices?subscription=s1', http(user('olga', 'ops'))), true);
    assert.equal(g.allows('consume', 'topic:other?subscription=s1', http(user('olga', 'ops'))), false);
  });

  test('a temporary queue is its owner\'s: the connection that made it acts without a rule, nobody else may read it', () => {
    const { g } = guard();
    const mine: Caller = { principal: user('olga', 'ops'), door: 'amqp', owns: ['tmp:gw-1/1'] };
    assert.equal(g.allows('consume', 'tmp:gw-1/1', mine), true);
    const other: Caller = { principal: user('ada', 'admins'), door: 'amqp', owns: ['tmp:gw-2/1'] };
    assert.equal(g.allows('consume', 'tmp:gw-1/1', other), false);
    assert.equal(g.allows('browse', 'tmp:gw-1/1', other), false);
  });

  test('deployed code and routes act on what the config grants them; a client door cannot present an internal principal', async () => {
    const { g, entries } = guard();
    assert.equal(g.allows('consume', 'queue:anything', { principal: { kind: 'flow', name: 'f' }, door: 'flow' }), true);
    assert.equal(g.allows('consume', 'queue:a', { principal: { kind: 'route', name: 'queue:a -> queue:b' }, door: 'route' }), true);
    assert.equal(g.allows('consume', 'queue:b', { principal: { kind: 'route', name: 'queue:a -> queue:b' }, door: 'route' }), false, 'a route consumes its source only');
    await assert.rejects(g.authorize('browse', 'queue:orders', { principal: { kind: 'system', name: 'inbox' }, door: 'http' }), Unauthenticated);
    assert.equal(entries.length, 1, 'the attempt is in the trail');
  });

  test('a refusal names the missing right, is audited once with who, where, which door and which act, and allows() records nothing', async () => {
    const { g, entries } = guard();
    const mallory = http(user('mallory', 'ops'));
    assert.equal(g.allows('receive', 'queue:orders', mallory), false);
    assert.equal(entries.length, 0, 'asking is not acting');
    await assert.rejects(g.authorize('receive', 'queue:orders', mallory), (err: unknown) => {
      assert.ok(err instanceof PermissionDenied);
      assert.equal(err.status, 403);
      assert.equal(err.audited, true, 'the door must not write it a second time');
      assert.match(err.message, /mallory may not consume on queue:orders/);
      return true;
    });
    assert.equal(entries.length, 1);
    assert.deepEqual(entries[0], {
      action: 'access.denied', actor: 'user:mallory', ip: '127.0.0.9', target: 'queue:orders',
      detail: 'consume denied on queue:orders (http door, receive)',
    });
    await g.authorize('browse', 'queue:orders', mallory);
    assert.equal(entries.length, 1, 'an allowed act writes no refusal');
  });
});
