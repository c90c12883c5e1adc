import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fillFilter } from '../../src/auth/ldap-directory.ts';
import { depthOf } from '../../src/web/middleware/json-depth.ts';

test("an LDAP filter is filled literally: $&, $' and $` in a user name splice nothing of the filter in", () => {
  assert.equal(fillFilter('(uid={username})', '{username}', "a$&b"), '(uid=a$&b)');
  assert.equal(fillFilter('(&(objectClass=person)(uid={username}))', '{username}', "x$'y"), "(&(objectClass=person)(uid=x$'y))");
  assert.equal(fillFilter('(uid={username})', '{username}', 'x$`y'), '(uid=x$`y)');
  // RFC 4515 escaping still applies to the characters that are special in a filter.
  assert.equal(fillFilter('(uid={username})', '{username}', '*)(uid=admin'), '(uid=\\2a\\29\\28uid=admin)');
});

test('JSON depth is measured without recursion, even for 200,000 levels', () => {
  assert.equal(depthOf(1), 0);
  assert.equal(depthOf({ a: { b: [1, { c: null }] } }), 4);
  let deep: unknown = 1;
  for (let i = 0; i < 200_000; i++) deep = [deep];
  assert.equal(depthOf(deep), 200_000);
  assert.equal(depthOf(deep, 32), 33, 'stops counting once past the limit');
});
