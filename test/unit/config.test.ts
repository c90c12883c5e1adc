import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { FileDirectory } from '../../src/auth/file-directory.ts';
import { hashPassword } from '../../src/auth/password.ts';
import { Permissions, rulesFromConfig } from '../../src/auth/permissions.ts';
import { configFile, loadConfig, parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { ConfigError } from '../../src/core/errors.ts';

const FILE = '/etc/switchboard/test.yaml';
const DEMO = fileURLToPath(new URL('../../config/switchboard.yaml', import.meta.url));

/** The users of a `type: file` directory, failing the test for any other directory type. */
function fileUsers(config: Config) {
  if (config.directory.type !== 'file') assert.fail(`expected a file directory, got ${config.directory.type}`);
  return config.directory.users;
}

/** Runs parseConfig expecting a ConfigError; returns it. */
function configError(text: string, env: NodeJS.ProcessEnv = {}, file = FILE): ConfigError {
  try {
    parseConfig(text, file, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'bad_config');
    assert.equal(err.file, file);
    assert.ok(err.message.startsWith(`${file}:`), `message names the file: ${err.message}`);
    for (const p of err.problems) assert.ok(err.message.includes(p), `message lists problem ${p}`);
    return err;
  }
  assert.fail('expected parseConfig to throw a ConfigError');
}

/** The problem reported for `path` (the text before the first ': '), failing if there is none. */
function problemAt(err: ConfigError, path: string): string {
  const found = err.problems.find((p) => p.startsWith(`${path}: `));
  assert.ok(found, `expected a problem at ${path}, got:\n${err.problems.join('\n')}`);
  return found;
}

describe('parseConfig: a valid config', () => {
  test('a minimal config (just http) gets every default', () => {
    const c = parseConfig('http: {}\n', FILE, {});
    assert.equal(c.http.port, 3000);
    assert.equal(c.http.host, '127.0.0.1');
    assert.equal(c.http.bodyLimit, '1mb');
    assert.equal(c.http.baseUrl, undefined);
    assert.deepEqual(c.redis, { prefix: 'sb', dataDir: 'data/redis', memoryLimit: 0.9, source: 'file' });
    assert.deepEqual(c.queues, { maxAttempts: 5, backoff: 1000, dedupTtl: 86_400_000, dedup: [], lockTimeout: 30_000, stalledCheck: 15_000, limits: [], idleClose: 60_000, maxOpen: 1000, depthSeries: 100 });
    assert.deepEqual(c.directory, { type: 'file', users: [] });
    assert.deepEqual(c.permissions, []);
    assert.deepEqual(c.routes, []);
    assert.deepEqual(c.log, { level: 'info' });
  });

  test('given values are kept and durations are turned into milliseconds', () => {
    const c = parseConfig(
      [
        'http: { port: 8080, host: 0.0.0.0, baseUrl: "https://sb.example.com", bodyLimit: 256kb }',
        'redis: { url: "redis://10.0.0.1:6379", prefix: prod }',
        'queues: { maxAttempts: 3, backoff: 500ms, dedupTtl: 7d, lockTimeout: 1m, stalledCheck: 2500, limits: [{ address: "queue:orders.*", maxDepth: 100 }] }',
        'routes: [{ from: "mq:legacy/payments.requests", to: "flow:payment-approval" }]',
        'log: { level: debug }',
      ].join('\n'),
      FILE,
      {},
    );
    assert.equal(c.http.port, 8080);
    assert.equal(c.http.host, '0.0.0.0');
    assert.equal(c.http.baseUrl, 'https://sb.example.com');
    assert.equal(c.http.bodyLimit, '256kb');
    assert.deepEqual(c.redis, { url: 'redis://10.0.0.1:6379', prefix: 'prod', dataDir: 'data/redis', memoryLimit: 0.9, source: 'file' });
    assert.equal(c.queues.backoff, 500);
    assert.equal(c.queues.dedupTtl, 7 * 86_400_000);
    assert.equal(c.queues.lockTimeout, 60_000);
    assert.equal(c.queues.stalledCheck, 2500);
    assert.deepEqual(c.queues.limits, [{ address: 'queue:orders.*', maxDepth: 100 }]);
    assert.deepEqual(c.routes, [{ from: 'mq:legacy/payments.requests', to: 'flow:payment-approval', concurrency: 20 }]);
    assert.equal(c.log.level, 'debug');
  });

  test('permissions with a group, a user or a peer selector are accepted as written', () => {
    const c = parseConfig(
      [
        'http: {}',
        'permissions:',
        '  - group: cn=payment-approvers,ou=groups,dc=example,dc=com',
        "    allow: [{ address: 'group:payment-approvers', verbs: [consume, browse] }]",
        '  - user: alice',
        "    allow: [{ address: 'person:alice', verbs: [consume] }]",
        '  - peer: bank-b',
        "    allow: [{ address: 'queue:inbound.**', verbs: [send] }, { address: '**', verbs: [start] }]",
      ].join('\n'),
      FILE,
      {},
    );
    assert.deepEqual(c.permissions, [
      { group: 'cn=payment-approvers,ou=groups,dc=example,dc=com', allow: [{ address: 'group:payment-approvers', verbs: ['consume', 'browse'] }] },
      { user: 'alice', allow: [{ address: 'person:alice', verbs: ['consume'] }] },
      { peer: 'bank-b', allow: [{ address: 'queue:inbound.**', verbs: ['send'] }, { address: '**', verbs: ['start'] }] },
    ]);
  });

  test('file directory users are kept, with groups defaulting to none', async () => {
    const hash = await hashPassword('pw');
    const c = parseConfig(`http: {}\ndirectory:\n  type: file\n  users:\n    - { name: alice, passwordHash: '${hash}', groups: [ops] }\n    - { name: bob, passwordHash: '${hash}' }\n`, FILE, {});
    assert.deepEqual(c.directory, { type: 'file', users: [{ name: 'alice', passwordHash: hash, groups: ['ops'] }, { name: 'bob', passwordHash: hash, groups: [] }] });
  });
});

describe('parseConfig: problems', () => {
  test('every problem is reported at once, each naming the path inside the file', () => {
    const err = configError(
      [
        'http: { port: "x" }',
        'queues: { backoff: 5x }',
        'routes:',
        "  - { from: 'queue:in', to: 'nowhere' }",
        "  - { from: 'queue:in', to: 'queue:out', concurrency: 0 }",
        'permissions:',
        "  - { group: ops, allow: [{ address: 'queue:orders-*', verbs: [send] }] }",
        'log: { level: loud }',
      ].join('\n'),
    );
    problemAt(err, 'http.port');
    problemAt(err, 'queues.backoff');
    assert.match(problemAt(err, 'routes[0].to'), /expected an address like queue:orders.*"nowhere"/);
    problemAt(err, 'routes[1].concurrency');
    problemAt(err, 'permissions[0].allow[0].address');
    problemAt(err, 'log.level');
    assert.equal(err.problems.length, 6);
    assert.match(err.message, /6 problem\(s\)/);
  });

  test('unknown keys are errors naming the key, at the top level and inside sections', () => {
    const err = configError('http: { prot: 3000 }\nrouts: []\nqueues: { limits: [{ address: "queue:x", maxDepth: 5, max: 1 }] }\n');
    assert.match(problemAt(err, 'routs'), /unknown key/);
    assert.match(problemAt(err, 'http.prot'), /unknown key/);
    assert.match(problemAt(err, 'queues.limits[0].max'), /unknown key/);
    assert.equal(err.problems.length, 3);
  });

  test('a missing http section is reported at the path http', () => {
    const err = configError('redis: { prefix: x }\n');
    problemAt(err, 'http');
  });

  test('an empty file is reported as a missing http section', () => {
    problemAt(configError(''), 'http');
  });

  test('a file that is not a mapping is refused at (top)', () => {
    assert.match(problemAt(configError('- http\n- redis\n'), '(top)'), /expected a mapping/);
  });

  test('bad YAML is a ConfigError saying it is a syntax error and where', () => {
    const err = configError('http:\n  port: [3000\nredis: {}\n');
    assert.equal(err.problems.length >= 1, true);
    assert.match(err.problems[0]!, /^YAML syntax: .*line \d+/);
  });

  test('a key given twice is a YAML error', () => {
    const err = configError('http: {}\nhttp: { port: 1 }\n');
    assert.match(err.problems[0]!, /^YAML syntax: .*unique/i);
  });

  test('bad durations are errors naming the path and the accepted forms', () => {
    const err = configError('http: {}\nqueues: { backoff: 5x, dedupTtl: -1s, lockTimeout: "", stalledCheck: -5 }\n');
    for (const path of ['queues.backoff', 'queues.dedupTtl', 'queues.lockTimeout', 'queues.stalledCheck']) {
      assert.match(problemAt(err, path), /expected a duration like 500ms, 30s/);
    }
    assert.match(problemAt(err, 'queues.backoff'), /"5x"/);
  });

  test('a bad address in a route names the route and the field', () => {
    const err = configError("http: {}\nroutes:\n  - { from: 'mq:legacy', to: 'queue:ok' }\n  - { from: 'queue:ok', to: 'Queue:out' }\n");
    assert.match(problemAt(err, 'routes[0].from'), /"mq:legacy"/);
    assert.match(problemAt(err, 'routes[1].to'), /"Queue:out"/);
    assert.equal(err.problems.length, 2);
  });

  test('a route without a destination is an error at routes[0].to', () => {
    problemAt(configError("http: {}\nroutes: [{ from: 'queue:in' }]\n"), 'routes[0].to');
  });

  test('a bad pattern in permissions or queue limits is an error quoting the pattern problem', () => {
    const err = configError(
      "http: {}\npermissions:\n  - { group: ops, allow: [{ address: 'queue:ok', verbs: [send] }, { address: 'queue:**.x', verbs: [send] }] }\nqueues: { limits: [{ address: 'nats:x', maxDepth: 1 }] }\n",
    );
    assert.match(problemAt(err, 'permissions[0].allow[1].address'), /'\*\*' may only be the last segment/);
    assert.match(problemAt(err, 'queues.limits[0].address'), /unknown scheme 'nats'/);
  });

  test('an unknown verb or an empty verb list is an error at its path', () => {
    const err = configError("http: {}\npermissions:\n  - { group: ops, allow: [{ address: 'queue:**', verbs: [send, delete] }] }\n  - { group: ops, allow: [{ address: 'queue:**', verbs: [] }] }\n");
    problemAt(err, 'permissions[0].allow[0].verbs[1]');
    problemAt(err, 'permissions[1].allow[0].verbs');
  });

  test('a permission entry with two selectors, or none, is an error naming the entry', () => {
    const err = configError(
      "http: {}\npermissions:\n  - { group: ops, user: alice, allow: [{ address: 'queue:**', verbs: [send] }] }\n  - { allow: [{ address: 'queue:**', verbs: [send] }] }\n  - { peer: bank-b, allow: [{ address: 'queue:**', verbs: [send] }] }\n",
    );
    assert.match(problemAt(err, 'permissions[0]'), /exactly one of group, user or peer/);
    assert.match(problemAt(err, 'permissions[1]'), /exactly one of group, user or peer/);
    assert.equal(err.problems.some((p) => p.startsWith('permissions[2]')), false);
  });

  test('a file directory user with something other than a scrypt hash is an error at its path', () => {
    const err = configError('http: {}\ndirectory: { type: file, users: [{ name: alice, passwordHash: secret }] }\n');
    assert.match(problemAt(err, 'directory.users[0].passwordHash'), /hash-password/);
  });

  test('a bad redis url is an error at redis.url', () => {
    assert.match(problemAt(configError('http: {}\nredis: { url: "http://127.0.0.1:6379" }\n'), 'redis.url'), /redis:\/\//);
  });
});

describe('parseConfig: ${VAR} substitution', () => {
  test('${VAR} is replaced from the environment anywhere in a string', () => {
    const c = parseConfig('http: { baseUrl: "https://${HOST}:${PORT}/sb" }\nredis: { url: "redis://:${REDIS_PW}@db:6379" }\n', FILE, { HOST: 'sb.example.com', PORT: '8443', REDIS_PW: 's3cret' });
    assert.equal(c.http.baseUrl, 'https://sb.example.com:8443/sb');
    assert.equal(c.redis.url, 'redis://:s3cret@db:6379');
  });

  test('${VAR} works inside lists', () => {
    const c = parseConfig("http: {}\npermissions:\n  - { group: '${ADMIN_GROUP}', allow: [{ address: '**', verbs: [admin] }] }\n", FILE, { ADMIN_GROUP: 'cn=admins,dc=example,dc=com' });
    assert.equal(c.permissions[0]?.group, 'cn=admins,dc=example,dc=com');
  });

  test('a missing variable is an error naming the variable and the path, and all missing ones are reported', () => {
    const err = configError("http: {}\nredis: { url: 'redis://:${REDIS_PW}@db' }\npermissions:\n  - { group: '${ADMIN_GROUP}', allow: [{ address: '**', verbs: [admin] }] }\n", { OTHER: 'x' });
    assert.match(problemAt(err, 'redis.url'), /environment variable REDIS_PW is not set/);
    const group = err.problems.find((p) => p.startsWith('permissions[0].group: environment variable ADMIN_GROUP'));
    assert.ok(group, err.problems.join('\n'));
  });

  test('text without ${…} is left alone, including a lone $', () => {
    const c = parseConfig('http: { baseUrl: "https://example.com/$HOME/a$b" }\n', FILE, { HOME: '/root' });
    assert.equal(c.http.baseUrl, 'https://example.com/$HOME/a$b');
  });
});

describe('parseConfig: which Redis (url, cluster, sentinel) and where it comes from', () => {
  test('SWITCHBOARD_REDIS_URL replaces redis.url from the file, keeps the other redis settings and is named as the source', () => {
    const c = parseConfig('http: {}\nredis: { url: "redis://file:6379", prefix: mine }\n', FILE, { SWITCHBOARD_REDIS_URL: 'redis://env:6380' });
    assert.equal(c.redis.url, 'redis://env:6380');
    assert.equal(c.redis.prefix, 'mine');
    assert.equal(c.redis.source, 'SWITCHBOARD_REDIS_URL');
  });

  test('SWITCHBOARD_REDIS_URL supplies redis.url when the file has no redis section', () => {
    const c = parseConfig('http: {}\n', FILE, { SWITCHBOARD_REDIS_URL: 'rediss://env:6380' });
    assert.equal(c.redis.url, 'rediss://env:6380');
    assert.equal(c.redis.prefix, 'sb');
  });

  test('SWITCHBOARD_REDIS_URL replaces a cluster or sentinel form from the file (one form, from the environment)', () => {
    const c = parseConfig('http: {}\nredis: { cluster: { nodes: [redis://a:7000] }, prefix: p }\n', FILE, { SWITCHBOARD_REDIS_URL: 'redis://env:6380' });
    assert.equal(c.redis.url, 'redis://env:6380');
    assert.equal(c.redis.cluster, undefined);
    assert.equal(c.redis.prefix, 'p');
  });

  test('a generic REDIS_URL in the environment no longer overrides the file', () => {
    const c = parseConfig('http: {}\nredis: { url: "redis://file:6379" }\n', FILE, { REDIS_URL: 'redis://someone-elses:6379' });
    assert.equal(c.redis.url, 'redis://file:6379');
    assert.equal(c.redis.source, 'file');
    assert.equal(parseConfig('http: {}\n', FILE, { REDIS_URL: 'redis://someone-elses:6379' }).redis.url, undefined);
  });

  test('${REDIS_URL} written in the file is the way to use that variable', () => {
    const c = parseConfig('http: {}\nredis: { url: "${REDIS_URL}" }\n', FILE, { REDIS_URL: 'redis://r:1' });
    assert.equal(c.redis.url, 'redis://r:1');
    assert.equal(c.redis.source, 'file');
  });

  test('without SWITCHBOARD_REDIS_URL and without url, cluster or sentinel there is nothing to connect to (a private redis-server is started)', () => {
    const r = parseConfig('http: {}\n', FILE, {}).redis;
    assert.equal(r.url, undefined);
    assert.equal(r.cluster, undefined);
    assert.equal(r.sentinel, undefined);
  });

  test('an invalid SWITCHBOARD_REDIS_URL is reported at redis.url, naming the variable', () => {
    assert.match(problemAt(configError('http: {}\n', { SWITCHBOARD_REDIS_URL: 'localhost:6379' }), 'redis.url'), /SWITCHBOARD_REDIS_URL/);
  });

  test('redis.cluster.nodes with password and TLS from the environment', () => {
    const c = parseConfig('http: {}\nredis:\n  cluster: { nodes: [redis://10.0.0.1:6379, redis://10.0.0.2:6379] }\n  password: ${REDIS_PASSWORD}\n  tls: { ca: certs/redis-ca.pem }\n', FILE, { REDIS_PASSWORD: 'pw-from-env' });
    assert.deepEqual(c.redis.cluster, { nodes: ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379'] });
    assert.equal(c.redis.password, 'pw-from-env');
    assert.deepEqual(c.redis.tls, { ca: 'certs/redis-ca.pem', rejectUnauthorized: true });
  });

  test('redis.sentinel with sentinels, the master name and the sentinels\' own password', () => {
    const c = parseConfig('http: {}\nredis:\n  sentinel: { sentinels: [redis://10.0.0.5:26379], name: mymaster, password: "${S_PW}" }\n', FILE, { S_PW: 'spw' });
    assert.deepEqual(c.redis.sentinel, { sentinels: ['redis://10.0.0.5:26379'], name: 'mymaster', password: 'spw' });
  });

  test('two forms at once are an error naming both', () => {
    assert.match(problemAt(configError('http: {}\nredis: { url: redis://a:1, sentinel: { sentinels: [redis://b:2], name: m } }\n'), 'redis'), /one of url, cluster or sentinel, got url and sentinel/);
  });

  test('an empty node list, a missing master name and a bad node URL are errors at their paths', () => {
    problemAt(configError('http: {}\nredis: { cluster: { nodes: [] } }\n'), 'redis.cluster.nodes');
    problemAt(configError('http: {}\nredis: { sentinel: { sentinels: [redis://b:2] } }\n'), 'redis.sentinel.name');
    assert.match(problemAt(configError('http: {}\nredis: { cluster: { nodes: [10.0.0.1:6379] } }\n'), 'redis.cluster.nodes[0]'), /redis:\/\//);
  });

  test('redis.memoryLimit is a fraction of maxmemory', () => {
    assert.equal(parseConfig('http: {}\nredis: { memoryLimit: 0.8 }\n', FILE, {}).redis.memoryLimit, 0.8);
    problemAt(configError('http: {}\nredis: { memoryLimit: 90 }\n'), 'redis.memoryLimit');
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sb-config-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('a missing file is a ConfigError naming the file and saying how to name another', () => {
    const file = join(dir, 'does-not-exist.yaml');
    assert.throws(
      () => loadConfig(file, {}),
      (err: unknown) =>
        err instanceof ConfigError && err.file === file && err.message.includes(file) && /file not found/.test(err.problems[0] ?? '') && /SWITCHBOARD_CONFIG|--config/.test(err.message),
    );
  });

  test('loads and validates the named file, reporting problems against its absolute path', () => {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'http: { port: 4000 }\n');
    const loaded = loadConfig(good, {});
    assert.equal(loaded.file, good);
    assert.equal(loaded.config.http.port, 4000);

    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'http: { port: 4000, extra: 1 }\n');
    assert.throws(() => loadConfig(bad, {}), (err: unknown) => err instanceof ConfigError && err.file === bad && err.message.startsWith(`${bad}:`) && err.problems.some((p) => p.startsWith('http.extra:')));
  });

  test('SWITCHBOARD_CONFIG names the file when no explicit file is given; an explicit one wins', () => {
    const viaEnv = join(dir, 'env.yaml');
    writeFileSync(viaEnv, 'http: { port: 4100 }\n');
    const explicit = join(dir, 'explicit.yaml');
    writeFileSync(explicit, 'http: { port: 4200 }\n');
    assert.equal(loadConfig(undefined, { SWITCHBOARD_CONFIG: viaEnv }).config.http.port, 4100);
    assert.equal(loadConfig(explicit, { SWITCHBOARD_CONFIG: viaEnv }).config.http.port, 4200);
    assert.equal(configFile(undefined, { SWITCHBOARD_CONFIG: viaEnv }), viaEnv);
  });

  test('the environment given to loadConfig is used for ${VAR} and SWITCHBOARD_REDIS_URL', () => {
    const file = join(dir, 'vars.yaml');
    writeFileSync(file, 'http: { baseUrl: "http://${SB_HOST}:3000" }\n');
    const { config } = loadConfig(file, { SB_HOST: 'gw.internal', SWITCHBOARD_REDIS_URL: 'redis://r:1' });
    assert.equal(config.http.baseUrl, 'http://gw.internal:3000');
    assert.equal(config.redis.url, 'redis://r:1');
  });
});

describe('the shipped demo config', () => {
  test('config/switchboard.yaml parses without a redis url (private redis-server)', () => {
    const { file, config } = loadConfig(DEMO, {});
    assert.equal(file, DEMO);
    assert.equal(config.http.port, 3000);
    assert.equal(config.redis.url, undefined);
    assert.equal(config.directory.type, 'file');
    assert.deepEqual(fileUsers(config).map((u) => u.name), ['alice', 'bob', 'ops']);
    assert.deepEqual(config.routes, [{ from: 'queue:demo.in', to: 'queue:demo.out', concurrency: 20 }, { from: 'queue:legacy.requests', to: 'flow:legacy-responder', concurrency: 20 }]);
    // Its events example (test/integration/demo-config.test.ts runs it).
    assert.deepEqual(config.events.map((e) => e.to), ['queue:ops.events']);
  });

  test("the demo users' documented passwords (alice-pw, bob-pw, ops-pw) log in", async () => {
    const { config } = loadConfig(DEMO, {});
    const dir = new FileDirectory(fileUsers(config));
    assert.deepEqual(await dir.authenticate('alice', 'alice-pw'), { kind: 'user', name: 'alice', groups: ['payment-approvers'] });
    assert.deepEqual(await dir.authenticate('bob', 'bob-pw'), { kind: 'user', name: 'bob', groups: ['payment-approvers', 'clerks'] });
    assert.deepEqual(await dir.authenticate('ops', 'ops-pw'), { kind: 'user', name: 'ops', groups: ['ops', 'admins'] });
  });

  test('the demo permissions let ops use every queue and clerks only the demo queues', () => {
    const { config } = loadConfig(DEMO, {});
    const p = new Permissions(rulesFromConfig(config.permissions));
    const ops = { kind: 'user', name: 'ops', groups: ['ops', 'admins'] } as const;
    const bob = { kind: 'user', name: 'bob', groups: ['payment-approvers', 'clerks'] } as const;
    assert.equal(p.check(ops, 'send', 'queue:anything').allowed, true);
    assert.equal(p.check(ops, 'admin', 'mq:legacy/x').allowed, true);
    assert.equal(p.check(bob, 'send', 'queue:demo.in').allowed, true);
    assert.equal(p.check(bob, 'consume', 'queue:demo.out').allowed, true);
    assert.equal(p.check(bob, 'send', 'queue:demo.out').allowed, false);
    assert.equal(p.check(bob, 'send', 'queue:other').allowed, false);
  });
});

describe('environment variables fill typed fields', () => {
  test('a scalar that is only ${VAR} takes the type YAML would read: port: ${PORT}', () => {
    const config = parseConfig('http:\n  port: ${PORT}\n', FILE, { PORT: '8080' });
    assert.equal(config.http.port, 8080);
  });
  test('a missing variable is reported once, not again as a bad value at the same path', () => {
    const err = configError('http:\n  port: 3000\npermissions:\n  - group: ${GROUP}\n    allow: [{ address: "queue:x", verbs: [send] }]\n');
    const atGroup = err.problems.filter((p) => p.startsWith('permissions[0].group'));
    assert.equal(atGroup.length, 1, err.problems.join(' | '));
    assert.match(atGroup[0]!, /GROUP is not set/);
  });
});

describe('ldap directory section', () => {
  test('a complete ldap section parses with defaults for filters, cache and timeout', () => {
    const config = parseConfig('http: {}\ndirectory:\n  type: ldap\n  url: ldap://127.0.0.1:389\n  bindDN: cn=sb,dc=example,dc=com\n  bindPassword: ${PW}\n  userBase: ou=people,dc=example,dc=com\n', FILE, { PW: 'secret' });
    assert.equal(config.directory.type, 'ldap');
    if (config.directory.type !== 'ldap') return;
    assert.equal(config.directory.userFilter, '(uid={username})');
    assert.equal(config.directory.cacheTtl, 60_000);
    assert.equal(config.directory.bindPassword, 'secret');
  });
  test('a user filter without {username} and a non-ldap URL are refused with what was expected', () => {
    const err = configError('http: {}\ndirectory:\n  type: ldap\n  url: http://x\n  bindDN: a\n  bindPassword: b\n  userBase: c\n  userFilter: (uid=alice)\n');
    assert.match(problemAt(err, 'directory.url'), /ldap:\/\/ or ldaps:\/\//);
    assert.match(problemAt(err, 'directory.userFilter'), /\{username\}/);
  });
});
