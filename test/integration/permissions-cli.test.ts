import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { hashPassword } from '../../src/auth/password.ts';
import type { Gateway } from '../../src/gateway.ts';
import { api, startTestGateway } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// `switchboard permissions ls|add|rm|history|revert|who-can` — the real CLI (node
// bin/switchboard.mjs, credentials from SWITCHBOARD_URL/USER/PASSWORD) against an in-process
// gateway on a real redis-server. The CLI goes through the HTTP API with the caller's
// credentials, so the same checks apply: admins manage rules, a delegated admin only inside their
// pattern, everyone else gets 403. Effects are checked through the API as the member concerned.

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'switchboard.mjs');

const PASSWORDS = { ops: 'ops-pw', clerk: 'clerk-pw', nobody: 'nobody-pw', lead: 'lead-pw' } as const;
type User = keyof typeof PASSWORDS;

const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }] },
  { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
  // Delegated administration: lead manages rules inside queue:team.** and nothing wider.
  { user: 'lead', allow: [{ address: 'queue:team.**', verbs: ['admin'] }] },
];
const CONFIG_RULES = 4;

let redis: TestRedis;
let gw: Gateway;

before(async () => {
  redis = await startTestRedis();
  const users = await Promise.all(([['ops', ['ops', 'admins']], ['clerk', ['clerks']], ['nobody', []], ['lead', ['leads']]] as const).map(async ([name, groups]) => ({ name, passwordHash: await hashPassword(PASSWORDS[name]), groups: [...groups] })));
  gw = await startTestGateway(redis.url, { directory: { type: 'file', users }, permissions: PERMISSIONS });
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], user: User | { name: string; password: string } = 'ops'): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['SWITCHBOARD_URL', 'SWITCHBOARD_USER', 'SWITCHBOARD_PASSWORD', 'SWITCHBOARD_CONFIG', 'SWITCHBOARD_TOKEN', 'NODE_OPTIONS']) delete env[k];
  const [name, password] = typeof user === 'string' ? [user, PASSWORDS[user]] : [user.name, user.password];
  Object.assign(env, { SWITCHBOARD_URL: gw.url, SWITCHBOARD_USER: name, SWITCHBOARD_PASSWORD: password });
  return new Promise((res, rej) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      if (err && code === -1) return rej(new Error(`the CLI did not run: ${err.message}\n${stderr}`));
      res({ code, stdout, stderr });
    });
  });
}

function json(r: Run): any {
  assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A refused command: the exit code, a one-line message on stderr (no stack), nothing on stdout. */
function refused(r: Run, code: number, message: RegExp): void {
  assert.equal(r.code, code, `expected exit ${code}, got ${r.code}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
  assert.equal(r.stdout, '');
}

async function ls(): Promise<{ version: number; rules: any[] }> {
  return json(await cli(['permissions', 'ls']));
}

async function send(user: User, to: string): Promise<number> {
  return (await api(gw.url, 'POST', '/api/messages', { user: { name: user, password: PASSWORDS[user] }, body: { to, body: { n: 1 } } })).status;
}

test('permissions ls: the config rules (read-only baseline) and the rule set version', async () => {
  const r = await ls();
  assert.equal(r.version, 0);
  assert.equal(r.rules.length, CONFIG_RULES);
  assert.ok(r.rules.every((x) => x.source === 'config'));
  assert.deepEqual(r.rules.find((x) => x.id === 'config-4-1'), { id: 'config-4-1', user: 'lead', address: 'queue:team.**', verbs: ['admin'], source: 'config' });
});

test('permissions add: the rule is stored, versioned and effective at once; rm takes it away again', async () => {
  assert.equal(await send('clerk', 'queue:cli.x'), 403);
  const added = json(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:cli.**', '--verbs', 'send, browse']));
  assert.match(added.rule.id, /^r[0-9a-f]+$/);
  assert.deepEqual({ ...added.rule, id: undefined, createdAt: undefined }, { id: undefined, group: 'clerks', address: 'queue:cli.**', verbs: ['send', 'browse'], source: 'console', createdBy: 'user:ops', createdAt: undefined });
  assert.ok(!Number.isNaN(Date.parse(added.rule.createdAt)));
  assert.equal(added.version, 1);
  assert.equal(await send('clerk', 'queue:cli.x'), 202, 'the member may send now, without a restart');

  const after = await ls();
  assert.equal(after.version, 1);
  assert.equal(after.rules.length, CONFIG_RULES + 1);
  assert.deepEqual(after.rules.find((x) => x.id === added.rule.id), added.rule);

  const removed = json(await cli(['permissions', 'rm', added.rule.id]));
  assert.deepEqual(removed, { removed: added.rule, version: 2 });
  assert.equal(await send('clerk', 'queue:cli.x'), 403, 'removed: refused again');
  assert.equal((await ls()).rules.length, CONFIG_RULES);
});

test('permissions add refuses unknown verbs, bad patterns, unknown groups (unless --force), duplicates and two selectors; nothing changes', async () => {
  const before = await ls();
  const cases: [string[], number, RegExp][] = [
    [['--group', 'clerks', '--address', 'queue:cli.**', '--verbs', 'send,fly'], 1, /400: unknown verb "fly" \(expected send, consume, browse, start, admin\)/],
    [['--group', 'clerks', '--address', 'queue:cli-*', '--verbs', 'send'], 1, /400: .*wildcards must be a whole segment/],
    [['--group', 'clerks', '--address', 'nats:x', '--verbs', 'send'], 1, /400: .*unknown scheme 'nats'/],
    [['--group', 'clerks', '--address', 'queue:**.x', '--verbs', 'send'], 1, /400: .*'\*\*' may only be the last segment/],
    [['--group', 'ghosts', '--address', 'queue:cli.**', '--verbs', 'send'], 1, /400: the directory has no group 'ghosts' \(add with force: true/],
    [['--peer', 'bank-z', '--address', 'queue:cli.**', '--verbs', 'send'], 1, /400: no peer 'bank-z' in the network map/],
    [['--group', 'ops', '--address', 'queue:**', '--verbs', 'consume,send,browse'], 1, /409: the same rule exists already \(config-1-1, from config\)/],
    [['--group', 'clerks', '--peer', 'bank-b', '--address', 'queue:cli.**', '--verbs', 'send'], 2, /exactly one of --group, --user or --peer/],
    [['--address', 'queue:cli.**', '--verbs', 'send'], 2, /exactly one of --group, --user or --peer/],
    [['--group', 'clerks', '--address', 'queue:cli.**'], 2, /required option '--verbs <verbs>' not specified/],
  ];
  for (const [args, code, message] of cases) {
    refused(await cli(['permissions', 'add', ...args]), code, message);
    const now = await ls();
    assert.equal(now.version, before.version, `version unchanged after ${args.join(' ')}`);
    assert.equal(now.rules.length, before.rules.length, `rule count unchanged after ${args.join(' ')}`);
  }

  // A group the directory does not show yet: --force adds it; the same again is a duplicate.
  const forced = json(await cli(['permissions', 'add', '--group', 'ghosts', '--address', 'queue:cli.**', '--verbs', 'send', '--force']));
  assert.equal(forced.rule.group, 'ghosts');
  assert.equal(forced.version, before.version + 1);
  refused(await cli(['permissions', 'add', '--group', 'ghosts', '--address', 'queue:cli.**', '--verbs', 'send', '--force']), 1, /409: the same rule exists already/);
  assert.equal((await ls()).rules.length, before.rules.length + 1);
  json(await cli(['permissions', 'rm', forced.rule.id]));
});

test('permissions rm: a config rule → 409 naming the configuration file; an unknown id → 404', async () => {
  const before = await ls();
  refused(await cli(['permissions', 'rm', 'config-1-1']), 1, /409: rule 'config-1-1' lives in the configuration file; change it there/);
  refused(await cli(['permissions', 'rm', 'r000000000000']), 1, /404: no rule 'r000000000000'/);
  assert.deepEqual(await ls(), before);
});

test('permissions history lists every change with version, author and action; revert restores an earlier set', async () => {
  const v0 = (await ls()).version;
  const a = json(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:hist.a', '--verbs', 'send']));
  const b = json(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:team.b', '--verbs', 'send'], 'lead'));
  json(await cli(['permissions', 'rm', a.rule.id]));
  assert.equal(await send('clerk', 'queue:hist.a'), 403);
  assert.equal(await send('clerk', 'queue:team.b'), 202);

  const { changes } = json(await cli(['permissions', 'history']));
  assert.deepEqual(changes.slice(0, 3).map((c: any) => [c.version, c.by, c.action, c.op, c.rule.id]), [
    [v0 + 3, 'user:ops', 'remove', 'remove', a.rule.id],
    [v0 + 2, 'user:lead', 'add', 'add', b.rule.id],
    [v0 + 1, 'user:ops', 'add', 'add', a.rule.id],
  ]);
  for (const c of changes) assert.ok(!Number.isNaN(Date.parse(c.at)), `a time on ${JSON.stringify(c)}`);
  assert.deepEqual(changes.map((c: any) => c.version), [...changes.map((c: any) => c.version)].sort((x: number, y: number) => y - x), 'newest first');

  // Back to right after the first add: a is back (same id), b is gone.
  const reverted = json(await cli(['permissions', 'revert', String(v0 + 1)]));
  assert.deepEqual(reverted.added.map((r: any) => r.id), [a.rule.id]);
  assert.deepEqual(reverted.removed.map((r: any) => r.id), [b.rule.id]);
  assert.equal(reverted.version, v0 + 5);
  assert.equal(await send('clerk', 'queue:hist.a'), 202);
  assert.equal(await send('clerk', 'queue:team.b'), 403);
  const consoleIds = (await ls()).rules.filter((r) => r.source === 'console').map((r) => r.id);
  assert.deepEqual(consoleIds, [a.rule.id]);
  const after = json(await cli(['permissions', 'history'])).changes;
  assert.deepEqual(after.slice(0, 2).map((c: any) => [c.version, c.by, c.action, c.op]), [[v0 + 5, 'user:ops', 'revert', 'add'], [v0 + 4, 'user:ops', 'revert', 'remove']]);

  refused(await cli(['permissions', 'revert', 'latest']), 2, /version must be a number, got 'latest'/);
  refused(await cli(['permissions', 'revert', '9999']), 1, /400: there is no version 9999 yet/);
  // Back to v0 for the tests that follow.
  json(await cli(['permissions', 'revert', String(v0)]));
  assert.equal(await send('clerk', 'queue:hist.a'), 403);
});

test('permissions who-can lists the granting rules with the members of each group', async () => {
  const added = json(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:wc.*', '--verbs', 'consume']));
  const send = json(await cli(['permissions', 'who-can', 'send', 'queue:wc.x']));
  assert.deepEqual(send, { address: 'queue:wc.x', verb: 'send', grants: [{ group: 'ops', verbs: ['send', 'consume', 'browse'], rule: 'config-1-1', source: 'config', members: ['ops'] }] });
  const consume = json(await cli(['permissions', 'who-can', 'consume', 'queue:wc.x']));
  assert.deepEqual(consume.grants.map((g: any) => [g.group, g.rule, g.source, g.members]), [['ops', 'config-1-1', 'config', ['ops']], ['clerks', added.rule.id, 'console', ['clerk']]]);
  const admin = json(await cli(['permissions', 'who-can', 'admin', 'queue:team.x']));
  assert.deepEqual(admin.grants.map((g: any) => [g.group ?? `user ${g.user}`, g.rule, g.members]), [['admins', 'config-3-1', ['ops']], ['user lead', 'config-4-1', undefined]]);
  refused(await cli(['permissions', 'who-can', 'fly', 'queue:wc.x']), 1, /400: query parameter 'verb' must be one of/);
  json(await cli(['permissions', 'rm', added.rule.id]));
});

test('a delegated admin manages rules inside their pattern only; non-admins and bad credentials are refused', async () => {
  const before = await ls();
  const inside = json(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:team.payments.*', '--verbs', 'send'], 'lead'));
  assert.equal(inside.rule.createdBy, 'user:lead');
  for (const address of ['queue:other.*', 'queue:**', '**', 'queue:team/**']) {
    refused(await cli(['permissions', 'add', '--group', 'clerks', '--address', address, '--verbs', 'send'], 'lead'), 1, /403: .*\(you may manage rules inside queue:team\.\*\*\)/);
  }
  refused(await cli(['permissions', 'rm', 'config-4-1'], 'lead'), 1, /409: .*configuration file/);
  refused(await cli(['permissions', 'who-can', 'send', 'queue:other.x'], 'lead'), 1, /403/);
  assert.equal(json(await cli(['permissions', 'who-can', 'send', 'queue:team.payments.x'], 'lead')).grants.length, 2);

  for (const user of ['clerk', 'nobody'] as const) {
    refused(await cli(['permissions', 'ls'], user), 1, /403/);
    refused(await cli(['permissions', 'history'], user), 1, /403/);
    refused(await cli(['permissions', 'add', '--group', 'clerks', '--address', 'queue:in.*', '--verbs', 'send,consume'], user), 1, /403/);
    refused(await cli(['permissions', 'rm', inside.rule.id], user), 1, /403/);
    refused(await cli(['permissions', 'who-can', 'send', 'queue:in.x'], user), 1, /403/);
  }
  refused(await cli(['permissions', 'ls'], { name: 'ops', password: 'wrong' }), 1, /401: invalid user name or password/);

  json(await cli(['permissions', 'rm', inside.rule.id], 'lead'));
  const after = await ls();
  assert.deepEqual(after.rules, before.rules);
  assert.equal(after.version, before.version + 2);
});

test('permissions add --user <name> makes a rule for that user (the login user comes from SWITCHBOARD_USER)', async () => {
  const before = (await ls()).rules.length;
  const r = await cli(['permissions', 'add', '--user', 'clerk', '--address', 'queue:cli.user-rule', '--verbs', 'browse']);
  assert.equal(r.code, 0, r.stderr);
  const rule = json(r).rule;
  assert.equal(rule.user, 'clerk');
  assert.equal(rule.group, undefined);
  assert.equal(rule.createdBy, 'user:ops');
  assert.equal((await ls()).rules.length, before + 1);
  assert.equal((await cli(['permissions', 'rm', rule.id])).code, 0);
});
