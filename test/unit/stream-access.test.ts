import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Permissions, type PermissionRule } from '../../src/auth/permissions.ts';
import type { Principal } from '../../src/core/message.ts';
import { mayAct } from '../../src/people/task-rules.ts';
import { StreamAccess } from '../../src/web/stream-access.ts';

// An open inbox stream remembers, per person or group, whether its user may act there; these
// tests prove the memo is forgotten exactly when the answer can change (a rule change, a change of
// the user's groups), so a remembered answer never outlives the right it was based on.

const user = (name: string, groups: string[] = []): Principal => ({ kind: 'user', name, groups });
const rule = (id: string, group: string, address: string): PermissionRule => ({ id, group, address, verbs: ['consume'], source: 'console' });

/** A StreamAccess over real Permissions, counting the rule checks it makes. */
function access(perms: Permissions, p: Principal) {
  let checks = 0;
  const a = new StreamAccess(perms, p, (who, place) => {
    checks++;
    return mayAct(perms, who, place);
  });
  return { a, checks: () => checks };
}

test('one rule check per place, however many events come for it', () => {
  const perms = new Permissions([rule('r1', 'approvers', 'group:approvers')]);
  const { a, checks } = access(perms, user('bob', ['approvers']));
  for (let i = 0; i < 100; i++) {
    assert.equal(a.concerns({ type: 'created', taskId: `t${i}`, group: 'approvers' }), true);
    assert.equal(a.concerns({ type: 'created', taskId: `u${i}`, group: 'finance' }), false);
  }
  assert.equal(checks(), 2, 'one check for approvers, one for finance');
});

test('a rule taken away live: the next event of that group no longer concerns the stream', () => {
  const perms = new Permissions([rule('r1', 'approvers', 'group:approvers')], []);
  const { a } = access(perms, user('bob', ['approvers']));
  assert.equal(a.concerns({ type: 'created', taskId: 't1', group: 'approvers' }), true);
  perms.replace([], 2);
  assert.equal(a.concerns({ type: 'created', taskId: 't2', group: 'approvers' }), false, 'the remembered yes was forgotten with the rule');
});

test('a rule given live: the next event of that group concerns the stream', () => {
  const perms = new Permissions([]);
  const { a } = access(perms, user('bob', ['approvers']));
  assert.equal(a.concerns({ type: 'created', taskId: 't1', group: 'approvers' }), false);
  perms.replace([rule('r1', 'approvers', 'group:approvers')], 2);
  assert.equal(a.concerns({ type: 'created', taskId: 't2', group: 'approvers' }), true, 'the remembered no was forgotten');
});

test('the user leaves or joins a group: follow() forgets the answers that depended on it', () => {
  const perms = new Permissions([rule('r1', 'approvers', 'group:approvers')]);
  const { a } = access(perms, user('bob', ['approvers']));
  assert.equal(a.concerns({ type: 'created', taskId: 't1', group: 'approvers' }), true);
  a.follow(user('bob', []));
  assert.equal(a.concerns({ type: 'created', taskId: 't2', group: 'approvers' }), false, 'out of the group: no more of its tasks');
  a.follow(user('bob', ['approvers']));
  assert.equal(a.concerns({ type: 'created', taskId: 't3', group: 'approvers' }), true, 'back in: its tasks again');
});

test('the same groups again keep the memo (the session check every few seconds costs no checks)', () => {
  const perms = new Permissions([rule('r1', 'approvers', 'group:approvers')]);
  const { a, checks } = access(perms, user('bob', ['approvers']));
  a.concerns({ type: 'created', taskId: 't1', group: 'approvers' });
  a.follow(user('bob', ['approvers']));
  a.concerns({ type: 'created', taskId: 't2', group: 'approvers' });
  assert.equal(checks(), 1);
});

test('own tasks always; another person\'s only with consume on person:<them>; previous places count', () => {
  const perms = new Permissions([{ id: 'r1', user: 'bob', address: 'person:carol', verbs: ['consume'], source: 'console' }]);
  const { a } = access(perms, user('bob'));
  assert.equal(a.concerns({ type: 'created', taskId: 't1', assignee: 'bob' }), true);
  assert.equal(a.concerns({ type: 'created', taskId: 't2', assignee: 'carol' }), true);
  assert.equal(a.concerns({ type: 'created', taskId: 't3', assignee: 'dave' }), false);
  assert.equal(a.concerns({ type: 'delegated', taskId: 't4', assignee: 'dave', previous: { assignee: 'carol' } }), true, 'it left a place bob sees');
});

test('closed: rule changes no longer reach it; the memo is bounded', () => {
  const perms = new Permissions([rule('r1', 'approvers', 'group:**')]);
  const p = user('bob', ['approvers']);
  const a = new StreamAccess(perms, p, (who, place) => mayAct(perms, who, place), 10);
  for (let i = 0; i < 25; i++) a.mayAct({ group: `g${i}` });
  assert.ok(a.size <= 10, `at most 10 answers kept, got ${a.size}`);
  a.close();
  assert.equal(a.size, 0);
});
