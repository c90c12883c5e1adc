import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFloatConfig } from '../../src/config/float-load.ts';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/core/errors.ts';

const FLOAT = `
peers: { port: 7443 }
tunnel: { port: 7444, key: t.key, cert: t.crt, ca: gw-ca.crt, gatewaySubject: 'CN=gateway,O=Bank A' }
network: { ca: network-ca.crt }
`;

test('a float config needs only peers, tunnel and network; its Redis defaults to its own prefix and data folder', () => {
  const c = parseFloatConfig(FLOAT, 'float.yaml', {});
  assert.equal(c.redis.prefix, 'float');
  assert.equal(c.redis.dataDir, 'data/float-redis');
  assert.equal(c.peers.host, '0.0.0.0');
  assert.equal(c.peers.credit, 50);
  assert.equal(c.network.eventHorizon, 7 * 86_400_000);
});

test('a float config with gateway sections (directory, flows, a signing key) is refused, each problem named', () => {
  const text = `${FLOAT}\ndirectory: { type: file }\nnetwork2: {}\ntunnel2: 1\n`;
  assert.throws(() => parseFloatConfig(text.replace('network: { ca: network-ca.crt }', "network: { ca: network-ca.crt, signingKey: a.key }"), 'float.yaml', {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /directory: unknown key/);
    assert.match(err.message, /network\.signingKey: unknown key/);
    return true;
  });
  assert.throws(() => parseFloatConfig(FLOAT.replace("gatewaySubject: 'CN=gateway,O=Bank A'", 'gatewaySubject: gateway'), 'float.yaml', {}), /tunnel\.gatewaySubject: expected an X\.500 name/);
});

const GATEWAY = (network: string) => `
http: { port: 0 }
directory: { type: file }
network: { identity: 'O=Bank A,C=GB', key: a.key, cert: a.crt, ca: ca.crt, signingKey: s.key${network} }
`;

test('a gateway needs network.port or network.float; network.float names an amqps URL and the float subject', () => {
  assert.throws(() => parseConfig(GATEWAY(''), 'g.yaml', {}), /network\.port: give network\.port \(the peer listener\) or network\.float/);
  const c = parseConfig(GATEWAY(", float: { url: 'amqps://float.dmz:7444', key: t.key, cert: t.crt, ca: f.crt, floatSubject: 'CN=float.dmz,O=Bank A' }"), 'g.yaml', {});
  assert.equal(c.network?.float?.credit, 20);
  assert.throws(() => parseConfig(GATEWAY(", float: { url: 'amqp://float.dmz', key: t.key, cert: t.crt, ca: f.crt, floatSubject: 'CN=f' }"), 'g.yaml', {}), /network\.float\.url: expected amqps:\/\/host:port/);
});

test("the float's operations port is off unless given, loopback by default, and takes nothing but host and port", () => {
  assert.equal(parseFloatConfig(FLOAT, 'float.yaml', {}).http, undefined);
  const c = parseFloatConfig(`${FLOAT}http: { port: 9464 }\n`, 'float.yaml', {});
  assert.deepEqual(c.http, { host: '127.0.0.1', port: 9464 });
  assert.throws(() => parseFloatConfig(`${FLOAT}http: { port: 9464, console: true }\n`, 'float.yaml', {}), /http\.console: unknown key/);
  assert.throws(() => parseFloatConfig(`${FLOAT}http: { port: 70000 }\n`, 'float.yaml', {}), /http\.port/);
});

test('network.float.lease: 6s by default, a duration of at least 1s', () => {
  const float = (extra: string) => GATEWAY(`, float: { url: 'amqps://float.dmz:7444', key: t.key, cert: t.crt, ca: f.crt, floatSubject: 'CN=float.dmz,O=Bank A'${extra} }`);
  assert.equal(parseConfig(float(''), 'g.yaml', {}).network?.float?.lease, 6000);
  assert.equal(parseConfig(float(', lease: 2s'), 'g.yaml', {}).network?.float?.lease, 2000);
  assert.throws(() => parseConfig(float(', lease: 200ms'), 'g.yaml', {}), /network\.float\.lease: expected at least 1s/);
  assert.throws(() => parseConfig(float(', lease: soon'), 'g.yaml', {}), /network\.float\.lease: expected a duration/);
});
