import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { FileDirectory } from '../../src/auth/file-directory.ts';
import { hashPassword, isPasswordHash, verifyPassword } from '../../src/auth/password.ts';

describe('hashPassword / verifyPassword', () => {
  let hash: string;
  before(async () => {
    hash = await hashPassword('correct horse battery staple');
  });

  test('a hash is self-describing scrypt$N$r$p$salt$hash and recognised as a hash', () => {
    assert.match(hash, /^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.equal(isPasswordHash(hash), true);
  });

  test('the password that was hashed verifies', async () => {
    assert.equal(await verifyPassword('correct horse battery staple', hash), true);
  });

  test('a wrong password does not verify', async () => {
    assert.equal(await verifyPassword('correct horse battery stapl', hash), false);
    assert.equal(await verifyPassword('Correct horse battery staple', hash), false);
    assert.equal(await verifyPassword('correct horse battery staple ', hash), false);
  });

  test('an empty password never verifies', async () => {
    assert.equal(await verifyPassword('', hash), false);
  });

  test('hashing an empty password is refused', async () => {
    await assert.rejects(hashPassword(''), /empty password/);
  });

  test('two hashes of the same password differ (random salt) and both verify', async () => {
    const again = await hashPassword('correct horse battery staple');
    assert.notEqual(again, hash);
    assert.equal(await verifyPassword('correct horse battery staple', again), true);
  });

  test('non-ASCII passwords round-trip', async () => {
    const h = await hashPassword('pässwörd-密码');
    assert.equal(await verifyPassword('pässwörd-密码', h), true);
    assert.equal(await verifyPassword('passwort-密码', h), false);
  });

  test('a string that is not a scrypt hash never verifies', async () => {
    for (const notHash of ['', 'plain-text-password', 'bcrypt$10$abc', 'scrypt$16384$8$1$onlyfive']) {
      assert.equal(await verifyPassword('plain-text-password', notHash), false, notHash);
      assert.equal(isPasswordHash(notHash), false, notHash);
    }
  });
});

describe('FileDirectory', () => {
  let dir: FileDirectory;
  before(async () => {
    dir = new FileDirectory([
      { name: 'alice', passwordHash: await hashPassword('alice-pw'), groups: ['payment-approvers'] },
      { name: 'ops', passwordHash: await hashPassword('ops-pw'), groups: ['ops', 'admins'] },
      { name: 'loner', passwordHash: await hashPassword('loner-pw'), groups: [] },
    ]);
  });

  test('the right password authenticates the user as a user principal with their groups', async () => {
    assert.deepEqual(await dir.authenticate('ops', 'ops-pw'), { kind: 'user', name: 'ops', groups: ['ops', 'admins'] });
    assert.deepEqual(await dir.authenticate('loner', 'loner-pw'), { kind: 'user', name: 'loner', groups: [] });
  });

  test("a wrong password, or another user's password, gives null", async () => {
    assert.equal(await dir.authenticate('alice', 'wrong'), null);
    assert.equal(await dir.authenticate('alice', 'ops-pw'), null);
  });

  test('an empty password gives null', async () => {
    assert.equal(await dir.authenticate('alice', ''), null);
  });

  test('an unknown user gives null, the same answer as a wrong password', async () => {
    assert.equal(await dir.authenticate('mallory', 'alice-pw'), null);
    assert.equal(await dir.authenticate('', ''), null);
  });

  test('user names are case-sensitive', async () => {
    assert.equal(await dir.authenticate('Alice', 'alice-pw'), null);
  });

  test('lookup returns the user and their groups without a password', async () => {
    assert.deepEqual(await dir.lookup('alice'), { kind: 'user', name: 'alice', groups: ['payment-approvers'] });
    assert.deepEqual(await dir.lookup('ops'), { kind: 'user', name: 'ops', groups: ['ops', 'admins'] });
  });

  test('lookup of an unknown user returns null', async () => {
    assert.equal(await dir.lookup('mallory'), null);
  });

  test('health reports ok with the number of users', async () => {
    const h = await dir.health();
    assert.equal(h.ok, true);
    assert.match(h.detail ?? '', /3 user/);
  });
});

describe('hashes with impossible parameters', () => {
  test('are not accepted as hashes and never verify (no exception at login)', async () => {
    const bad = 'scrypt$3$8$1$YWJjZGVmZ2hpamtsbW5vcA==$ZGVmZGVmZGVmZGVmZGVmZGVm';
    assert.equal(isPasswordHash(bad), false);
    assert.equal(await verifyPassword('pw', bad), false);
  });
});
