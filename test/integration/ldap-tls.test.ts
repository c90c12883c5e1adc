import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { LdapDirectory, type LdapOptions } from '../../src/auth/ldap-directory.ts';
import { DependencyUnavailable } from '../../src/core/errors.ts';
import { createLogger } from '../../src/log.ts';
import { LDAP, startTestLdap, type TestLdap } from '../support/ldap.ts';

// LDAPS and StartTLS against a real slapd with a certificate from a throwaway CA: the directory
// logs users in only over a connection whose certificate the configured CA vouches for.

let ldap: TestLdap;
before(async () => {
  ldap = await startTestLdap({ tls: true });
});
after(async () => {
  await ldap?.dispose();
});

function directory(url: string, tls?: LdapOptions['tls']): LdapDirectory {
  return new LdapDirectory({
    url,
    bindDN: LDAP.service,
    bindPassword: LDAP.servicePassword,
    userBase: `ou=people,${LDAP.base}`,
    userFilter: '(uid={username})',
    usernameAttribute: 'uid',
    groupBase: `ou=groups,${LDAP.base}`,
    groupFilter: '(|(member={dn})(uniqueMember={dn}))',
    nestedGroups: false,
    cacheTtlMs: 1000,
    timeoutMs: 3000,
    ...(tls ? { tls } : {}),
  }, createLogger('silent'));
}

test('ldaps:// with the CA file: users log in and get their groups', async () => {
  const d = directory(ldap.ldapsUrl!, { ca: readFileSync(ldap.caFile!, 'utf8') });
  const alice = await d.authenticate('alice', 'alice-pw');
  assert.ok(alice);
  assert.ok(alice.groups?.includes('ops'));
  assert.equal(await d.authenticate('alice', 'wrong'), null);
  assert.equal((await d.health()).ok, true);
});

test('StartTLS on ldap:// with the CA file works too', async () => {
  const d = directory(ldap.url, { ca: readFileSync(ldap.caFile!, 'utf8'), startTls: true });
  const bob = await d.authenticate('bob', 'bob-pw');
  assert.ok(bob?.groups?.includes('payment-approvers'));
});

test('without the CA the certificate is not trusted: fail closed as unavailable, never a login', async () => {
  const d = directory(ldap.ldapsUrl!, {});
  await assert.rejects(d.authenticate('alice', 'alice-pw'), (err) => err instanceof DependencyUnavailable && /LDAP directory cannot be reached/.test(err.message));
  assert.equal((await d.health()).ok, false);
});
