import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Permissions, rulesFromConfig, type PermissionRule } from '../../src/auth/permissions.ts';
import { AddressError, PermissionDenied } from '../../src/core/errors.ts';
import type { Principal } from '../../src/core/message.ts';

const user = (name: string, groups: string[] = []): Principal => ({ kind: 'user', name, groups });
const rule = (r: Omit<PermissionRule, 'source'> & { source?: PermissionRule['source'] }): PermissionRule => ({ source: 'config', ...r });

describe('Permissions.check', () => {
  test('default deny: with no rules nobody may do anything', () => {
    const p = new Permissions([]);
    const d = p.check(user('alice', ['ops']), 'send', 'queue:orders');
    assert.equal(d.allowed, false);
    assert.equal(d.rule, undefined);
    assert.equal(d.principal, 'user:alice');
    assert.match(d.reason, /default deny/);
  });

  test('default deny: a user in no group gets nothing from group rules', () => {
    const p = new Permissions([rule({ id: 'r1', group: 'ops', address: 'queue:**', verbs: ['send'] })]);
    assert.equal(p.check(user('nobody'), 'send', 'queue:orders').allowed, false);
    assert.equal(p.check({ kind: 'user', name: 'nogroups' }, 'send', 'queue:orders').allowed, false);
  });

  test('a group rule allows only its verbs on addresses its pattern matches', () => {
    const p = new Permissions([rule({ id: 'r1', group: 'ops', address: 'queue:orders.*', verbs: ['send', 'browse'] })]);
    const ops = user('olga', ['ops']);
    assert.equal(p.check(ops, 'send', 'queue:orders.eu').allowed, true);
    assert.equal(p.check(ops, 'browse', 'queue:orders.eu').allowed, true);
    assert.equal(p.check(ops, 'consume', 'queue:orders.eu').allowed, false);
    assert.equal(p.check(ops, 'send', 'queue:orders').allowed, false);
    assert.equal(p.check(ops, 'send', 'queue:orders.eu.x').allowed, false);
    assert.equal(p.check(user('carl', ['clerks']), 'send', 'queue:orders.eu').allowed, false);
  });

  test("a user's rights are the union of all their groups' rules", () => {
    const p = new Permissions([
      rule({ id: 'a', group: 'senders', address: 'queue:in.**', verbs: ['send'] }),
      rule({ id: 'b', group: 'readers', address: 'queue:out.**', verbs: ['browse', 'consume'] }),
    ]);
    const both = user('bea', ['senders', 'readers']);
    assert.equal(p.check(both, 'send', 'queue:in.x').rule?.id, 'a');
    assert.equal(p.check(both, 'consume', 'queue:out.x').rule?.id, 'b');
    assert.equal(p.check(both, 'send', 'queue:out.x').allowed, false);
    assert.equal(p.check(both, 'consume', 'queue:in.x').allowed, false);
    const onlySenders = user('sam', ['senders']);
    assert.equal(p.check(onlySenders, 'consume', 'queue:out.x').allowed, false);
  });

  test('check() returns the rule that allowed the action, with a reason naming it', () => {
    const r2 = rule({ id: 'config-2-1', group: 'ops', address: 'queue:**', verbs: ['consume'] });
    const p = new Permissions([rule({ id: 'config-1-1', group: 'ops', address: 'queue:**', verbs: ['send'] }), r2]);
    const d = p.check(user('olga', ['ops']), 'consume', 'queue:orders');
    assert.equal(d.allowed, true);
    assert.deepEqual(d.rule, r2);
    assert.equal(d.verb, 'consume');
    assert.equal(d.address, 'queue:orders');
    assert.equal(d.principal, 'user:olga');
    assert.match(d.reason, /config-2-1/);
    assert.match(d.reason, /group ops/);
  });

  test('a user rule applies to that user only, and not to a peer of the same name', () => {
    const p = new Permissions([rule({ id: 'u', user: 'alice', address: 'person:alice', verbs: ['consume'] })]);
    assert.equal(p.check(user('alice'), 'consume', 'person:alice').rule?.id, 'u');
    assert.equal(p.check(user('bob'), 'consume', 'person:alice').allowed, false);
    assert.equal(p.check({ kind: 'peer', name: 'alice' }, 'consume', 'person:alice').allowed, false);
    assert.equal(p.check(user('bob', ['alice']), 'consume', 'person:alice').allowed, false);
  });

  test('a peer rule applies to that peer only, and not to a user of the same name', () => {
    const p = new Permissions([rule({ id: 'p', peer: 'bank-b', address: 'queue:inbound.**', verbs: ['send'] })]);
    const d = p.check({ kind: 'peer', name: 'bank-b' }, 'send', 'queue:inbound.trades');
    assert.equal(d.allowed, true);
    assert.equal(d.rule?.id, 'p');
    assert.equal(d.principal, 'peer:bank-b');
    assert.equal(p.check({ kind: 'peer', name: 'bank-c' }, 'send', 'queue:inbound.trades').allowed, false);
    assert.equal(p.check(user('bank-b'), 'send', 'queue:inbound.trades').allowed, false);
  });

  test('a group rule does not apply to a peer even if the peer carries that group', () => {
    const p = new Permissions([rule({ id: 'g', group: 'ops', address: 'queue:**', verbs: ['send'] })]);
    assert.equal(p.check({ kind: 'peer', name: 'bank-b', groups: ['ops'] }, 'send', 'queue:x').allowed, false);
  });

  test('a group named by cn matches the group case-insensitively', () => {
    const p = new Permissions([rule({ id: 'g', group: 'Payment-Approvers', address: 'group:payment-approvers', verbs: ['consume'] })]);
    assert.equal(p.check(user('alice', ['payment-approvers']), 'consume', 'group:payment-approvers').allowed, true);
    assert.equal(p.check(user('alice', ['payment-approvers-2']), 'consume', 'group:payment-approvers').allowed, false);
  });

  test('a group named by DN matches the same DN case-insensitively', () => {
    const p = new Permissions([rule({ id: 'g', group: 'CN=Ops,OU=Groups,DC=Example,DC=Com', address: 'queue:**', verbs: ['send'] })]);
    assert.equal(p.check(user('olga', ['cn=ops,ou=groups,dc=example,dc=com']), 'send', 'queue:x').allowed, true);
    assert.equal(p.check(user('olga', ['cn=ops,ou=other,dc=example,dc=com']), 'send', 'queue:x').allowed, false);
  });

  test('flow and system principals are deployed code and act unrestricted, without a rule', () => {
    const p = new Permissions([]);
    for (const principal of [{ kind: 'flow', name: 'payment-approval' }, { kind: 'system', name: 'gateway' }] as Principal[]) {
      for (const verb of ['send', 'consume', 'browse', 'start', 'admin'] as const) {
        const d = p.check(principal, verb, 'mq:legacy/payments.in');
        assert.equal(d.allowed, true);
        assert.equal(d.rule, undefined);
      }
    }
  });

  test('a broker principal is not unrestricted: default deny applies to it', () => {
    const p = new Permissions([rule({ id: 'g', group: 'ops', address: '**', verbs: ['send'] })]);
    assert.equal(p.check({ kind: 'broker', name: 'legacy', groups: ['ops'] }, 'send', 'queue:x').allowed, false);
  });

  test("an admin rule on '**' allows admin on every address but no other verb", () => {
    const p = new Permissions([rule({ id: 'adm', group: 'admins', address: '**', verbs: ['admin'] })]);
    const adm = user('ada', ['admins']);
    assert.equal(p.check(adm, 'admin', 'mq:legacy/payments.in').allowed, true);
    assert.equal(p.check(adm, 'admin', 'queue:**').allowed, true);
    assert.equal(p.check(adm, 'send', 'queue:orders').allowed, false);
  });

  test('replace() swaps the rule set: a revoked right is gone and a new one applies', () => {
    const p = new Permissions([rule({ id: 'old', group: 'ops', address: 'queue:a', verbs: ['send'] })]);
    const ops = user('olga', ['ops']);
    assert.equal(p.check(ops, 'send', 'queue:a').allowed, true);
    p.replace([rule({ id: 'new', group: 'ops', address: 'queue:b', verbs: ['send'], source: 'console' })]);
    assert.equal(p.check(ops, 'send', 'queue:a').allowed, false);
    assert.equal(p.check(ops, 'send', 'queue:b').rule?.id, 'new');
    assert.deepEqual(p.rules.map((r) => r.id), ['new']);
  });

  test('a rule with an invalid address pattern is refused when the rules are loaded', () => {
    assert.throws(() => new Permissions([rule({ id: 'bad', group: 'ops', address: 'queue:orders-*', verbs: ['send'] })]), AddressError);
  });
});

describe('Permissions.require', () => {
  test('returns the decision when allowed', () => {
    const p = new Permissions([rule({ id: 'r', group: 'ops', address: 'queue:**', verbs: ['send'] })]);
    const d = p.require(user('olga', ['ops']), 'send', 'queue:orders');
    assert.equal(d.allowed, true);
    assert.equal(d.rule?.id, 'r');
  });

  test("throws PermissionDenied with code 'forbidden' and status 403 naming principal, verb and address", () => {
    const p = new Permissions([rule({ id: 'r', group: 'ops', address: 'queue:**', verbs: ['send'] })]);
    assert.throws(
      () => p.require(user('carl', ['clerks']), 'send', 'queue:orders'),
      (err: unknown) =>
        err instanceof PermissionDenied &&
        err.code === 'forbidden' &&
        err.status === 403 &&
        err.principal === 'user:carl' &&
        err.verb === 'send' &&
        err.address === 'queue:orders' &&
        err.message.includes('user:carl') &&
        err.message.includes('queue:orders'),
    );
  });
});

describe('rulesFromConfig', () => {
  test('gives each allow entry its own rule with id config-<entry>-<allow>, source config', () => {
    const rules = rulesFromConfig([
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume'] }, { address: 'mq:legacy/**', verbs: ['send'] }] },
      { user: 'alice', allow: [{ address: 'person:alice', verbs: ['consume'] }] },
      { peer: 'bank-b', allow: [{ address: 'queue:inbound.**', verbs: ['send'] }] },
    ]);
    assert.deepEqual(rules, [
      { id: 'config-1-1', group: 'ops', address: 'queue:**', verbs: ['send', 'consume'], source: 'config' },
      { id: 'config-1-2', group: 'ops', address: 'mq:legacy/**', verbs: ['send'], source: 'config' },
      { id: 'config-2-1', user: 'alice', address: 'person:alice', verbs: ['consume'], source: 'config' },
      { id: 'config-3-1', peer: 'bank-b', address: 'queue:inbound.**', verbs: ['send'], source: 'config' },
    ]);
  });

  test('copies the verbs, so changing the config entry afterwards does not change the rule', () => {
    const entry = { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send' as const] as ('send' | 'admin')[] }] };
    const [r] = rulesFromConfig([entry]);
    entry.allow[0]!.verbs.push('admin');
    assert.deepEqual(r?.verbs, ['send']);
  });

  test('rules from config feed Permissions directly', () => {
    const p = new Permissions(rulesFromConfig([{ group: 'ops', allow: [{ address: 'queue:**', verbs: ['send'] }] }]));
    assert.equal(p.check(user('olga', ['ops']), 'send', 'queue:x').rule?.id, 'config-1-1');
  });
});

describe('Permissions: deployment grants asked again and again', () => {
  const route: Principal = { kind: 'route', name: 'queue:a -> queue:b.*' };
  const grants = [{ principal: 'route:queue:a -> queue:b.*', address: 'queue:b.*', verbs: ['send' as const], reason: 'the route queue:a -> queue:b.* in the config' }];

  test('each (verb, address) keeps its own answer, however often and in whatever order it is asked', () => {
    const p = new Permissions([], grants);
    for (let i = 0; i < 3; i++) {
      assert.equal(p.check(route, 'send', 'queue:b.one').allowed, true);
      assert.equal(p.check(route, 'send', 'queue:c').allowed, false, 'an address the grant does not match');
      assert.equal(p.check(route, 'consume', 'queue:b.one').allowed, false, 'a verb the grant does not give');
      assert.equal(p.check(route, 'send', 'queue:b.two').allowed, true);
      assert.equal(p.check({ kind: 'route', name: 'queue:x -> queue:y' }, 'send', 'queue:b.one').allowed, false, 'another route');
    }
    assert.match(p.check(route, 'send', 'queue:b.one').reason, /the route queue:a -> queue:b\.\* in the config allows route:queue:a -> queue:b\.\* to send on queue:b\.\*/);
    assert.throws(() => p.require(route, 'send', 'queue:c'), PermissionDenied);
  });

  test('a rule added later still applies where no deployment grant does, and the kept answer cannot be changed by a caller', () => {
    const p = new Permissions([], grants);
    assert.equal(p.check(route, 'consume', 'queue:b.one').allowed, false);
    p.replace([rule({ id: 'r1', user: 'nobody', address: 'queue:**', verbs: ['consume'] })]);
    assert.equal(p.check(user('nobody'), 'consume', 'queue:b.one').allowed, true);
    const d = p.check(route, 'send', 'queue:b.one');
    assert.throws(() => { (d as { allowed: boolean }).allowed = false; }, TypeError);
    assert.equal(p.check(route, 'send', 'queue:b.one').allowed, true);
  });

  test('thousands of different addresses keep the kept answers bounded and correct', () => {
    const p = new Permissions([], grants);
    for (let i = 0; i < 25_000; i++) assert.equal(p.check(route, 'send', `queue:b.${i}`).allowed, true);
    assert.equal(p.check(route, 'send', 'queue:b.0').allowed, true);
    assert.equal(p.check(route, 'send', 'queue:bb.0').allowed, false);
    const kept = (p as unknown as { deploymentAnswers: Map<string, unknown> }).deploymentAnswers.size;
    assert.ok(kept <= 10_000, `${kept} answers kept`);
  });
});
