import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { KeyFileError, readMaterials } from '../../src/config/materials.ts';
import { parseConfig } from '../../src/config/load.ts';
import { networkMapFile } from '../../src/config/network-map-file.ts';
import { createLogger } from '../../src/log.ts';
import { NetworkMap, type NetworkMapSource, type PeerEntry } from '../../src/network/network-map.ts';

// Key and certificate files are read once, at the config edge, with errors that name the config
// path and the file; the network map below it takes peers with their keys, from a source object.

const dir = mkdtempSync(join(tmpdir(), 'sb-materials-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ed = generateKeyPairSync('ed25519');
const files = {
  key: join(dir, 'a.key'),
  cert: join(dir, 'a.crt'),
  ca: join(dir, 'ca.crt'),
  sign: join(dir, 'a-sign.key'),
  verify: join(dir, 'b-sign.pub'),
};
writeFileSync(files.key, '-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n');
writeFileSync(files.cert, '-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n');
writeFileSync(files.ca, '-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n');
writeFileSync(files.sign, ed.privateKey.export({ format: 'pem', type: 'pkcs8' }));
writeFileSync(files.verify, ed.publicKey.export({ format: 'pem', type: 'spki' }));

function config(network: Record<string, string>, extra = '') {
  const n = { key: files.key, cert: files.cert, ca: files.ca, signingKey: files.sign, verifyKey: files.verify, ...network };
  return parseConfig(
    `http: {}\n${extra}network:\n  identity: 'O=Bank A,L=London,C=GB'\n  port: 10002\n  key: ${n.key}\n  cert: ${n.cert}\n  ca: ${n.ca}\n  signingKey: ${n.signingKey}\n` +
      `  peers:\n    - { alias: bank-b, identity: 'O=Bank B,L=Paris,C=FR', host: 127.0.0.1, port: 10003, verifyKey: ${n.verifyKey}, allow: ['inbound.**'] }\n`,
    '/test.yaml',
    {},
  );
}

function keyFileError(fn: () => unknown): KeyFileError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof KeyFileError, `expected a KeyFileError, got ${String(err)}`);
    return err;
  }
  return assert.fail('expected a KeyFileError');
}

describe('readMaterials: the files the config names, read at the edge', () => {
  test('PEM files become their text and Ed25519 keys become KeyObjects', () => {
    const m = readMaterials(config({}, `amqp: { tls: { key: ${files.key}, cert: ${files.cert} } }\n`));
    assert.match(m.network!.key, /BEGIN PRIVATE KEY/);
    assert.match(m.network!.ca, /\nca\n/);
    assert.equal(m.network!.signingKey.asymmetricKeyType, 'ed25519');
    assert.equal(m.network!.peers[0]!.verifyKey.type, 'public');
    assert.deepEqual(m.network!.peers[0]!.allow, ['inbound.**']);
    assert.match(m.amqpTls!.cert, /\ncert\n/);
    assert.equal(m.amqpTls!.ca, undefined);
  });

  test('a missing file is named with its config path; every problem is listed, not only the first', () => {
    const err = keyFileError(() => readMaterials(config({ key: join(dir, 'missing.key'), verifyKey: join(dir, 'missing.pub') })));
    assert.deepEqual(err.problems, [
      `network.key: cannot read ${join(dir, 'missing.key')}: ENOENT`,
      `network.peers[0].verifyKey: cannot read ${join(dir, 'missing.pub')}: ENOENT`,
    ]);
    assert.match(err.message, /2 key or certificate files/);
  });

  test('a file that is not a key of the expected kind says so', () => {
    const err = keyFileError(() => readMaterials(config({ signingKey: files.cert })));
    assert.equal(err.problems.length, 1);
    assert.match(err.message, new RegExp(`^network\\.signingKey: ${files.cert.replace(/[.]/g, '\\.')} is not a PEM private key`));
  });

  test('the LDAP CA and broker TLS files are read too', () => {
    const c = parseConfig(
      `http: {}\ndirectory: { type: ldap, url: 'ldaps://x', bindDN: cn=a, bindPassword: p, userBase: ou=p, tls: { caFile: ${files.ca} } }\n` +
        `brokers: { legacy: { url: 'amqps://h', tls: { ca: ${files.ca}, cert: ${files.cert}, key: ${join(dir, 'nope.key')} } } }\n`,
      '/test.yaml',
      {},
    );
    const err = keyFileError(() => readMaterials(c));
    assert.deepEqual(err.problems, [`brokers.legacy.tls.key: cannot read ${join(dir, 'nope.key')}: ENOENT`]);
    writeFileSync(join(dir, 'nope.key'), 'k');
    const m = readMaterials(c);
    assert.match(m.directoryCa!, /\nca\n/);
    assert.deepEqual(m.brokers.legacy, { ca: m.directoryCa, cert: '-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n', key: 'k' });
  });
});

describe('the network map file, a source built at the config edge', () => {
  test('reads a list or {peers: [...]} and loads each verify key; a bad key names the file and entry', () => {
    const mapPath = join(dir, 'map.yaml');
    writeFileSync(mapPath, `peers:\n  - { alias: bank-c, identity: 'O=Bank C,L=Rome,C=IT', host: 10.0.0.3, port: 10004, verifyKey: ${files.verify} }\n`);
    const [c] = networkMapFile(mapPath).read();
    assert.equal(c!.alias, 'bank-c');
    assert.equal(c!.verifyKey.type, 'public');
    writeFileSync(mapPath, `- { alias: bank-c, identity: 'O=Bank C,L=Rome,C=IT', host: 10.0.0.3, port: 10004, verifyKey: ${files.cert} }\n`);
    assert.throws(() => networkMapFile(mapPath).read(), new RegExp(`${mapPath.replace(/[.]/g, '\\.')}: peers\\[0\\]\\.verifyKey: .* is not a PEM public key`));
  });
});

describe('NetworkMap takes peers and a source, not paths', () => {
  const verifyKey: KeyObject = ed.publicKey;
  const peer = (alias: string, host: string): PeerEntry => ({ alias, identity: `O=${alias},C=GB`, host, port: 1, verifyKey, allow: ['inbound.**'] });

  test('a changed source reloads the map and names the peers that moved; a broken one keeps the last good map', () => {
    let current: PeerEntry[] = [peer('c', '10.0.0.3')];
    let changed = () => {};
    let watching = false;
    const source: NetworkMapSource = {
      name: 'test-source',
      read: () => current,
      watch: (fn) => { changed = fn; watching = true; return () => { watching = false; }; },
    };
    const map = new NetworkMap({ peers: [peer('b', '10.0.0.2')], source, log: createLogger('silent') });
    map.start();
    assert.deepEqual(map.aliases, ['b', 'c']);
    assert.equal(map.get('b')!.allow[0]!.raw, 'queue:inbound.**', 'a pattern without a scheme is a queue');
    const moved: string[] = [];
    map.on('peer-changed', (alias: string) => moved.push(alias));
    current = [peer('c', '10.0.0.33')];
    changed();
    assert.deepEqual(moved, ['c']);
    assert.equal(map.get('c')!.host, '10.0.0.33');
    source.read = () => { throw new Error('not valid YAML'); };
    changed();
    assert.equal(map.get('c')!.host, '10.0.0.33');
    map.stop();
    assert.equal(watching, false);
  });
});
