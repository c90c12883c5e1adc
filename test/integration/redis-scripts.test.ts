import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import '../../src/schemes.ts';
import { LoginKeys, PermissionKeys, TokenKeys } from '../../src/auth/keys.ts';
import { LoginGuard, TooManyAttempts } from '../../src/auth/login-guard.ts';
import { PermissionStore } from '../../src/auth/permission-store.ts';
import { Permissions, type PermissionRule } from '../../src/auth/permissions.ts';
import { ChangeRuleCode } from '../../src/auth/scripts/codes.ts';
import { TokenStore } from '../../src/auth/tokens.ts';
import type { StoredMessage } from '../../src/core/message.ts';
import type { Decision, HistoryEntry } from '../../src/core/task.ts';
import { FlowKeys } from '../../src/flows/keys.ts';
import { CreateInstanceCode, DeliverCode, LockCode } from '../../src/flows/scripts/codes.ts';
import { LifecycleJournal } from '../../src/core/event-journal.ts';
import { InstanceStore, type InstanceMeta } from '../../src/flows/store.ts';
import { TaskKeys } from '../../src/people/keys.ts';
import { ApproveCode, CreateTaskCode, TaskCode } from '../../src/people/scripts/codes.ts';
import { TaskStore, type Task } from '../../src/people/task-store.ts';
import { freePort, redisServerBinary } from '../../src/store/embedded-redis.ts';
import { CrossSlotKeys, loadScripts, ScriptFileError } from '../../src/store/scripts.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// Each script's named return codes, through its store and called directly, on a real
// redis-server; and the stores on a one-node Redis Cluster, where Redis itself refuses any script
// or MULTI whose keys are not of one slot.

const PREFIX = 'rs';
const log = pino({ level: 'silent' });
const dir = (store: string) => new URL(`../../src/${store}/scripts/`, import.meta.url);

let server: TestRedis;
let redis: Redis;

before(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url, { maxRetriesPerRequest: 1 });
});

after(async () => {
  redis?.disconnect();
  await server?.dispose();
});

const now = () => new Date().toISOString();
const entry = (by: string, action: HistoryEntry['action']): HistoryEntry => ({ at: now(), by, action });
const decision = (by: string): Decision => ({ action: 'approve', by, at: now() }) as Decision;

function newTask(id: string, owner: { assignee?: string; group?: string }): Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'> {
  return { id, title: `task ${id}`, data: {}, actions: ['approve', 'reject'], sender: 'flow:test', createdAt: now(), ...owner } as unknown as Omit<Task, 'status' | 'history' | 'claimedBy' | 'decision'>;
}

/** The script calls themselves, on the same client the stores register them on. */
const tasksScripts = () => loadScripts(redis, dir('people'), { createTask: 5, decideTask: 6, approveTask: 2, claimTask: 3, releaseTask: 2, reassignTask: 5 });
const flowScripts = () => loadScripts(redis, dir('flows'), { createInstance: 4, deliverMessage: 3, refreshLock: 1, releaseLock: 1 });
const authScripts = () => loadScripts(redis, dir('auth'), { changeRule: 4, countFailedLogin: 1, readFailedLogins: 1 });

test('createTask: Created, then Exists for the same id (nothing overwritten)', async () => {
  const store = new TaskStore(redis, PREFIX);
  const keys = new TaskKeys(PREFIX);
  assert.equal(await store.create(newTask('c1', { group: 'ops' }), { messageId: 'm1' }), true);
  assert.equal(await store.create(newTask('c1', { assignee: 'eve' }), { messageId: 'm2' }), false);
  const code = await tasksScripts().createTask(keys.createTask('c1', { group: 'ops' }), '{}', now(), '{}', Date.now(), 'c1', 'group', 'ops', '+inf');
  assert.equal(code, CreateTaskCode.Exists);
  const t = await store.get('c1');
  assert.equal(t?.group, 'ops');
  assert.equal(t?.assignee, undefined);
  assert.deepEqual(await store.open({ group: 'ops' }), ['c1']);
});

test('claimTask and releaseTask: Ok, Claimed naming the holder, Missing, Decided', async () => {
  const store = new TaskStore(redis, PREFIX);
  await store.create(newTask('cl1', { group: 'ops' }), { messageId: 'm' });
  assert.deepEqual(await store.claim('cl1', 'user:ann'), { ok: true });
  assert.deepEqual(await store.claim('cl1', 'user:ann'), { ok: true }, 'claiming again is a no-op');
  assert.deepEqual(await store.claim('cl1', 'user:bob'), { ok: false, reason: TaskCode.Claimed, holder: 'user:ann' });
  assert.deepEqual(await store.claim('cl1', 'user:bob', undefined, 'release'), { ok: false, reason: TaskCode.Claimed, holder: 'user:ann' });
  assert.deepEqual(await store.claim('cl1', 'user:ann', undefined, 'release'), { ok: true });
  assert.deepEqual(await store.claim('cl1', 'user:ann', undefined, 'release'), { ok: false, reason: TaskCode.Claimed, holder: '' }, 'nobody holds it now');
  assert.deepEqual(await store.claim('nope', 'user:ann'), { ok: false, reason: TaskCode.Missing, holder: '' });
  assert.deepEqual(await store.claim('nope', 'user:ann', undefined, 'release'), { ok: false, reason: TaskCode.Missing, holder: '' });
  const t = (await store.get('cl1'))!;
  assert.deepEqual(await store.decide(t, decision('user:bob')), { ok: true });
  assert.deepEqual(await store.claim('cl1', 'user:ann'), { ok: false, reason: TaskCode.Decided, holder: 'user:bob' });
  assert.deepEqual(await store.claim('cl1', 'user:bob', undefined, 'release'), { ok: false, reason: TaskCode.Decided, holder: 'user:bob' });
  assert.deepEqual((await store.get('cl1'))!.history.map((h) => h.action), ['created', 'claimed', 'released', 'decided']);
});

test('decideTask: Ok once (the task leaves its index, awaits notification), Decided naming the winner, Claimed, Missing', async () => {
  const store = new TaskStore(redis, PREFIX);
  await store.create(newTask('d1', { group: 'payments' }), { messageId: 'm' });
  const t = (await store.get('d1'))!;
  const both = await Promise.all([store.decide(t, decision('user:ann')), store.decide(t, decision('user:bob'))]);
  assert.equal(both.filter((o) => o.ok).length, 1, 'exactly one of two deciding at once wins');
  const loser = both.find((o) => !o.ok)!;
  assert.equal(loser.ok === false && loser.reason, TaskCode.Decided);
  assert.deepEqual(await store.open({ group: 'payments' }), []);
  assert.ok((await store.unnotified()).includes('d1'));

  await store.create(newTask('d2', { group: 'payments' }), { messageId: 'm' });
  await store.claim('d2', 'user:ann');
  assert.deepEqual(await store.decide((await store.get('d2'))!, decision('user:bob')), { ok: false, reason: TaskCode.Claimed, holder: 'user:ann' });
  assert.deepEqual(await store.decide({ ...t, id: 'gone' }, decision('user:bob')), { ok: false, reason: TaskCode.Missing, holder: '' });
});

test('openByDue: the shard-wide open index counts late, on time and undated tasks; a decision, also a lost one or one after a move, counts once', async () => {
  const prefix = 'obd';
  const store = new TaskStore(redis, prefix, 4);
  const hour = 3_600_000;
  const past = new Date(Date.now() - hour).toISOString();
  const future = new Date(Date.now() + hour).toISOString();
  for (let i = 0; i < 6; i++) await store.create({ ...newTask(`late${i}`, { group: 'g' }), due: past }, { messageId: `l${i}` });
  for (let i = 0; i < 3; i++) await store.create({ ...newTask(`soon${i}`, { assignee: 'ann' }), due: future }, { messageId: `s${i}` });
  await store.create(newTask('undated', { group: 'g' }), { messageId: 'u' });
  assert.equal(await store.create({ ...newTask('late0', { group: 'g' }), due: future }, { messageId: 'again' }), false);
  assert.deepEqual(await store.openByDue(), { late: 6, on_time: 3, none: 1 });
  assert.deepEqual(await store.openByDue(Date.now() + 2 * hour), { late: 9, on_time: 0, none: 1 }, 'a later clock sees the dated ones overdue');

  const t = (await store.get('late0'))!;
  const both = await Promise.all([store.decide(t, decision('user:ann')), store.decide(t, decision('user:bob'))]);
  assert.equal(both.filter((o) => o.ok).length, 1);
  assert.deepEqual(await store.reassign('soon0', 'group:other', entry('system', 'escalated')), { ok: true });
  assert.deepEqual(await store.openByDue(), { late: 5, on_time: 3, none: 1 }, 'a move keeps a task open and counted once');
  await store.decide((await store.get('undated'))!, decision('user:ann'));
  await store.decide((await store.get('soon0'))!, decision('user:ann'));
  assert.deepEqual(await store.openByDue(), { late: 5, on_time: 2, none: 0 });
  const tags = new Set(Array.from({ length: 10 }, (_, i) => store.shardOf(i < 6 ? `late${i}` : i < 9 ? `soon${i - 6}` : 'undated')));
  assert.ok(tags.size > 1, 'the tasks spread over several shards, so the sum crosses shards');
});

test('decideTask: StaleIndex when the task moved since it was read; nothing written; the store re-reads and succeeds', async () => {
  const store = new TaskStore(redis, PREFIX);
  const keys = new TaskKeys(PREFIX);
  await store.create(newTask('s1', { group: 'ops-s1' }), { messageId: 'm' });
  const read = (await store.get('s1'))!; // read while it is the group's
  assert.deepEqual(await store.reassign('s1', 'person:cat', { ...entry('system', 'escalated') }), { ok: true });
  assert.deepEqual(await store.open({ group: 'ops-s1' }), []);
  assert.deepEqual(await store.open({ assignee: 'cat' }), ['s1']);

  const raw = await tasksScripts().decideTask(keys.decideTask('s1', { group: 'ops-s1' }), 'user:cat', '{}', '{}', now(), 's1', 'group', 'ops-s1');
  assert.deepEqual(raw, [TaskCode.StaleIndex, '']);
  assert.equal((await store.get('s1'))!.status, 'open', 'a stale call writes nothing');
  assert.deepEqual(await store.open({ assignee: 'cat' }), ['s1']);

  assert.deepEqual(await store.decide(read, decision('user:cat')), { ok: true }, 'decide with the stale read retries with the stored owner');
  assert.deepEqual(await store.open({ assignee: 'cat' }), [], 'and removes it from the index it really was in');
  assert.equal((await store.get('s1'))!.status, 'decided');
});

test('reassignTask: Ok moves between indexes; Claimed for a delegate who does not hold it; Decided; Missing; StaleIndex raw', async () => {
  const store = new TaskStore(redis, PREFIX);
  const keys = new TaskKeys(PREFIX);
  await store.create(newTask('r1', { assignee: 'ann-r1' }), { messageId: 'm' });
  assert.deepEqual(await store.reassign('r1', 'group:ops-r1', entry('user:ann', 'delegated'), 'user:ann'), { ok: true });
  assert.deepEqual(await store.open({ assignee: 'ann-r1' }), []);
  assert.deepEqual(await store.open({ group: 'ops-r1' }), ['r1']);
  await store.claim('r1', 'user:bob');
  assert.deepEqual(await store.reassign('r1', 'person:cat', entry('user:ann', 'delegated'), 'user:ann'), { ok: false, reason: TaskCode.Claimed, holder: 'user:bob' });
  assert.deepEqual(await store.reassign('r1', 'person:cat-r1', entry('user:bob', 'delegated'), 'user:bob'), { ok: true });
  const moved = (await store.get('r1'))!;
  assert.equal(moved.assignee, 'cat-r1');
  assert.equal(moved.claimedBy, undefined, 'a moved task is unclaimed');
  assert.deepEqual(await store.open({ group: 'ops-r1' }), []);
  assert.deepEqual(await store.open({ assignee: 'cat-r1' }), ['r1']);

  const raw = await tasksScripts().reassignTask(keys.reassignTask('r1', { group: 'ops-r1' }, { assignee: 'dan' }), 'assignee', 'dan', '{}', now(), 'r1', '', Date.now(), 'group', 'ops-r1');
  assert.deepEqual(raw, [TaskCode.StaleIndex, '']);
  assert.equal((await store.get('r1'))!.assignee, 'cat-r1', 'a stale call writes nothing');

  await store.decide(moved, decision('user:cat'));
  assert.deepEqual(await store.reassign('r1', 'person:dan', entry('system', 'escalated')), { ok: false, reason: TaskCode.Decided, holder: 'user:cat' });
  assert.deepEqual(await store.reassign('nope', 'person:dan', entry('system', 'escalated')), { ok: false, reason: TaskCode.Missing, holder: '' });
});

test('reassign racing reassign: every move lands, the task is listed in exactly one index', async () => {
  const store = new TaskStore(redis, PREFIX);
  await store.create(newTask('race', { group: 'g0' }), { messageId: 'm' });
  const targets = Array.from({ length: 8 }, (_, i) => `group:g${i + 1}`);
  const results = await Promise.all(targets.map((to) => store.reassign('race', to, entry('system', 'escalated'))));
  assert.ok(results.every((r) => r.ok));
  const final = (await store.get('race'))!.group!;
  for (const g of ['g0', ...targets.map((t) => t.slice('group:'.length))]) {
    assert.deepEqual(await store.open({ group: g }), g === final ? ['race'] : [], `index of ${g}`);
  }
});

const meta = (id: string): InstanceMeta => ({ id, flow: 'f', status: 'running', input: { a: 1 }, createdAt: now(), updatedAt: now(), startedBy: 'user:ann' });
const message = (id: string) => ({ id, to: 'flow:f/x', sender: { kind: 'user', name: 'ann' }, headers: {}, body: {}, createdAt: now() }) as unknown as StoredMessage;

test('approveTask: Recorded with the count, ApprovedAlready for the same approver, Final without writing, Claimed, Decided, Missing', async () => {
  const store = new TaskStore(redis, PREFIX);
  const keys = new TaskKeys(PREFIX);
  const call = tasksScripts().approveTask;
  const approval = (by: string) => ({ by, action: 'approve', at: now() });
  assert.ok(await store.create(newTask('ap1', { group: 'g' }), { messageId: 'm-ap1' }));
  const approve = (by: string) => call(keys.approveTask('ap1'), by, JSON.stringify(approval(by)), JSON.stringify(entry(by, 'approved')), now(), 3) as Promise<[string, string]>;
  assert.deepEqual(await approve('user:a'), [ApproveCode.Recorded, '1']);
  assert.deepEqual(await approve('user:a'), [ApproveCode.ApprovedAlready, 'user:a']);
  assert.deepEqual(await approve('user:b'), [ApproveCode.Recorded, '2']);
  const [code, earlier] = await approve('user:c');
  assert.equal(code, ApproveCode.Final);
  assert.deepEqual((JSON.parse(earlier) as { by: string }[]).map((a) => a.by), ['user:a', 'user:b'], 'the final approval is not written: the decision records it');
  assert.deepEqual((await store.get('ap1'))!.history.map((h) => h.action), ['created', 'approved', 'approved']);
  await store.claim('ap1', 'user:x');
  assert.deepEqual(await approve('user:d'), [TaskCode.Claimed, 'user:x']);
  await store.claim('ap1', 'user:x', undefined, 'release');
  assert.deepEqual(await store.decide((await store.get('ap1'))!, decision('user:c')), { ok: true });
  assert.deepEqual(await approve('user:e'), [TaskCode.Decided, 'user:c']);
  assert.deepEqual(await call(keys.approveTask('nope'), 'user:a', '{}', '{}', now(), 2), [TaskCode.Missing, '']);
});

test('createInstance: Created, then Exists; deliverMessage: Delivered, Duplicate, NoInstance, Finished', async () => {
  const store = new InstanceStore(redis, PREFIX);
  const keys = new FlowKeys(PREFIX);
  assert.equal(await store.create(meta('i1')), true);
  assert.equal(await store.create(meta('i1')), false);
  assert.equal(await flowScripts().createInstance(keys.createInstance('i1'), '', 0, '', 0, 'id', 'i1'), CreateInstanceCode.Exists);
  assert.deepEqual(await store.list('f', 10), [{ flow: 'f', id: 'i1' }]);

  assert.equal(await store.deliver('nope', message('m1')), DeliverCode.NoInstance);
  assert.equal(await store.deliver('i1', message('m1')), DeliverCode.Delivered);
  assert.equal(await store.deliver('i1', message('m1')), DeliverCode.Duplicate);
  assert.equal((await store.inbox('i1')).length, 1);
  await store.update('i1', { status: 'completed' });
  assert.equal(await store.deliver('i1', message('m2')), DeliverCode.Finished);
  assert.equal(await store.deliver('i1', message('m1')), DeliverCode.Duplicate, 'a repeat after the end is still a duplicate');
});

test('refreshLock and releaseLock: Done for the holder, NotHeld for anyone else', async () => {
  const store = new InstanceStore(redis, PREFIX);
  const keys = new FlowKeys(PREFIX);
  assert.equal(await store.lock('l1', 'a', 5000), true);
  assert.equal(await store.lock('l1', 'b', 5000), false);
  assert.equal(await store.refreshLock('l1', 'b', 5000), false);
  assert.equal(await flowScripts().refreshLock(keys.refreshLock('l1'), 'b', 5000), LockCode.NotHeld);
  assert.equal(await flowScripts().refreshLock(keys.refreshLock('l1'), 'a', 9000), LockCode.Done);
  assert.ok((await redis.pttl(keys.instance('l1', 'lock'))) > 5000);
  await store.unlock('l1', 'b');
  assert.equal(await redis.get(keys.instance('l1', 'lock')), 'a', "another's unlock leaves the lock");
  assert.equal(await flowScripts().releaseLock(keys.releaseLock('l1'), 'b'), LockCode.NotHeld);
  assert.equal(await flowScripts().releaseLock(keys.releaseLock('l1'), 'a'), LockCode.Done);
  assert.equal(await redis.exists(keys.instance('l1', 'lock')), 0);
});

test('changeRule: a new version, RuleExists, NoSuchRule; nothing written for either', async () => {
  const store = new PermissionStore(redis, PREFIX, new Permissions([]), [], log);
  const keys = new PermissionKeys(PREFIX);
  const rule = await store.add({ group: 'ops', address: 'queue:x.**', verbs: ['send'] }, 'user:admin');
  assert.equal(await store.version(), 1);
  const code = await authScripts().changeRule(keys.changeRule(), 'add', rule.id, JSON.stringify(rule), JSON.stringify({ rule }));
  assert.equal(code, ChangeRuleCode.RuleExists);
  assert.equal((await store.remove(rule.id, 'user:admin'))?.id, rule.id);
  assert.equal(await authScripts().changeRule(keys.changeRule(), 'remove', rule.id, '{}', '{}'), ChangeRuleCode.NoSuchRule);
  assert.equal(await store.remove(rule.id, 'user:admin'), null, 'removing a removed rule changes nothing');
  assert.equal(await store.version(), 2);
  assert.deepEqual((await store.history()).map((c) => [c.version, c.op]), [[2, 'remove'], [1, 'add']]);
});

test('tokens: created under {tokens} in one MULTI; a token stored at the old keys still lists, verifies and revokes', async () => {
  const store = new TokenStore(redis, PREFIX);
  const keys = new TokenKeys(PREFIX);
  const made = await store.create('ann', 'deploy');
  assert.equal(await redis.exists(keys.token(made.id)), 1);
  assert.equal(await redis.sismember(keys.user('ann'), made.id), 1);
  assert.deepEqual(await store.verify(made.token), { user: 'ann', id: made.id });

  // A token issued before the {tokens} layout.
  const id = '00112233aabbccdd';
  const secret = 'A'.repeat(43);
  const { createHash } = await import('node:crypto');
  await redis.hset(keys.legacyToken(id), { id, name: 'old', user: 'ann', createdAt: '2020-01-01T00:00:00.000Z', hash: createHash('sha256').update(secret).digest('hex') });
  await redis.sadd(keys.legacyUser('ann'), id);
  assert.deepEqual(await store.verify(`sbt_${id}_${secret}`), { user: 'ann', id });
  assert.deepEqual((await store.list('ann')).map((t) => t.name), ['old', 'deploy']);
  await assert.rejects(store.revoke('bob', id), /no token/);
  await store.revoke('ann', id);
  assert.equal(await store.verify(`sbt_${id}_${secret}`), null);
  assert.equal(await redis.exists(keys.legacyToken(id), keys.legacyUser('ann')), 0);
  await store.revoke('ann', made.id);
  assert.deepEqual(await store.list('ann'), []);
  assert.equal(await store.verify(made.token), null);
});

test('countFailedLogin and readFailedLogins: a window from the first failure; over the limit is TooManyAttempts', async () => {
  const guard = new LoginGuard(redis, PREFIX, { perUser: 3, perIp: 100, windowMs: 60_000 });
  const keys = new LoginKeys(PREFIX);
  assert.deepEqual(await authScripts().readFailedLogins(keys.readFailedLogins('user', 'zed')), [0, 0]);
  await guard.check('Zed', '10.0.0.1');
  for (let i = 0; i < 3; i++) await guard.failed('Zed', '10.0.0.1');
  assert.equal(await redis.get(keys.failures('user', 'zed')), '3', 'the same key as before: <prefix>:rl:user:<lower-cased name>');
  assert.equal(await redis.get(keys.failures('ip', '10.0.0.1')), '3');
  const [count, ms] = (await authScripts().readFailedLogins(keys.readFailedLogins('user', 'zed'))) as [number, number];
  assert.equal(count, 3);
  assert.ok(ms > 50_000 && ms <= 60_000, `window ends in ${ms} ms`);
  const err = await guard.check('zed', '10.0.0.2').then(() => null, (e: unknown) => e);
  assert.ok(err instanceof TooManyAttempts, String(err));
  assert.ok(err.retryAfterSeconds > 50 && err.retryAfterSeconds <= 60);
  await guard.check('other', '10.0.0.1');
  assert.deepEqual(await authScripts().countFailedLogin(keys.countFailedLogin('user', 'yan'), 1000), [1, 1000]);
});

test('the loader refuses keys of two hash tags, the wrong number of keys, and a script with no file', async () => {
  const scripts = tasksScripts();
  const keys = new TaskKeys(PREFIX);
  await assert.rejects(scripts.claimTask([keys.task('x'), `${PREFIX}:other:history`, keys.events('x')], 'a', '{}', now()), CrossSlotKeys);
  await assert.rejects((scripts.claimTask as (k: string[], ...a: string[]) => Promise<unknown>)([keys.task('x')], 'a', '{}', now()), ScriptFileError);
  assert.throws(() => loadScripts(redis, dir('people'), { claimTask: 2 }), ScriptFileError);
  assert.throws(() => loadScripts(redis, dir('people'), { noSuchScript: 1 }), ScriptFileError);
});

/** A one-node Redis Cluster owning every slot: Redis itself checks each script and MULTI for CROSSSLOT. */
async function oneNodeCluster(): Promise<{ port: number; stop: () => Promise<void> }> {
  const bin = redisServerBinary();
  assert.ok(bin, 'redis-server is installed');
  const folder = mkdtempSync(join(tmpdir(), 'sb-cluster-'));
  const port = await freePort();
  const child: ChildProcess = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', folder, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-announce-ip', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // Retries the connection until the server listens (no lazyConnect, no request limit).
  const admin = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  admin.on('error', () => {});
  await admin.ping();
  await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
  for (let i = 0; !String(await admin.call('CLUSTER', 'INFO')).includes('cluster_state:ok'); i++) {
    assert.ok(i < 100, 'the one-node cluster comes up');
    await new Promise((r) => setTimeout(r, 100));
  }
  admin.disconnect();
  return {
    port,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      rmSync(folder, { recursive: true, force: true });
    },
  };
}

test('on a Redis Cluster every store operation runs: no CROSSSLOT from any script or MULTI', { timeout: 60_000 }, async () => {
  const node = await oneNodeCluster();
  const cluster = new Cluster([{ host: '127.0.0.1', port: node.port }], { redisOptions: { maxRetriesPerRequest: 1 } });
  try {
    const c = cluster as unknown as Redis;
    // Redis really refuses what the stores used to do.
    await assert.rejects(cluster.multi().hset(`${PREFIX}:token:1`, 'a', '1').sadd(`${PREFIX}:tokens:ann`, '1').exec(), /CROSSSLOT|same slot/i);

    const tasks = new TaskStore(c, PREFIX);
    await tasks.create(newTask('k1', { group: 'ops' }), { messageId: 'm' });
    const read = (await tasks.get('k1'))!;
    assert.deepEqual(await tasks.claim('k1', 'user:ann'), { ok: true });
    assert.deepEqual(await tasks.claim('k1', 'user:ann', undefined, 'release'), { ok: true });
    assert.deepEqual(await tasks.reassign('k1', 'person:bob', entry('system', 'escalated')), { ok: true });
    assert.deepEqual(await tasks.decide(read, decision('user:bob')), { ok: true });
    assert.deepEqual(await tasks.unnotified(), ['k1']);

    const flows = new InstanceStore(c, PREFIX);
    assert.equal(await flows.create(meta('k2')), true);
    assert.equal(await flows.deliver('k2', message('m1')), DeliverCode.Delivered);
    const [m] = await flows.inbox('k2');
    await flows.consume('k2', { n: 0, kind: 'receive', at: now(), done: true, consumed: 'm1' }, m!.raw);
    assert.equal(await flows.lock('k2', 't', 5000), true);
    assert.equal(await flows.refreshLock('k2', 't', 5000), true);
    await flows.unlock('k2', 't');
    await flows.expire('k2', 'f', 60_000);
    await flows.persist('k2');
    await flows.update('k2', { status: 'completed' }, ['waitingOn']);

    const perms = new PermissionStore(c, PREFIX, new Permissions([]), [], log);
    const rule: PermissionRule = await perms.add({ user: 'ann', address: 'queue:a', verbs: ['send'] }, 'user:admin');
    assert.equal((await perms.remove(rule.id, 'user:admin'))?.id, rule.id);

    const tokens = new TokenStore(c, PREFIX);
    const t = await tokens.create('ann', 'ci');
    assert.deepEqual(await tokens.verify(t.token), { user: 'ann', id: t.id });
    assert.equal((await tokens.list('ann')).length, 1);
    await tokens.revoke('ann', t.id);

    const guard = new LoginGuard(c, PREFIX, { perUser: 1, perIp: 10, windowMs: 60_000 });
    await guard.failed('ann', '::1');
    await assert.rejects(guard.check('ann', '::1'), TooManyAttempts);

    // With lifecycle events journaled: the journal in each change's slot, the index sharded.
    const forwarded: string[] = [];
    const journal = new LifecycleJournal({
      redis: c, prefix: 'kj', shards: 2, log, graceMs: 0,
      encode: (events) => events.map((e): [string, string] => [`${e.type}:${e.key}`, JSON.stringify({ type: e.type })]),
      forward: async (id) => { forwarded.push(id); },
    });
    const jTasks = new TaskStore(c, 'kj', 2, journal);
    await jTasks.create(newTask('j1', { group: 'ops' }), { messageId: 'm' }, () => [{ type: 'switchboard.task.created', subject: 'task:j1', key: 'j1', data: {} }]);
    const jFlows = new InstanceStore(c, 'kj', journal);
    await jFlows.create(meta('j2'), () => [{ type: 'switchboard.flow.started', subject: 'flow:f/j2', key: 'j2', data: {} }]);
    await jFlows.cancel('j2', 'user:ann', () => [{ type: 'switchboard.flow.cancelled', subject: 'flow:f/j2', key: 'j2', data: {} }]);
    const jPerms = new PermissionStore(c, 'kj', new Permissions([]), [], log);
    await jPerms.add({ user: 'ann', address: 'queue:a', verbs: ['send'] }, 'user:admin', undefined, (r) => ({ journal, events: () => [{ type: 'switchboard.permission.changed', subject: 'permissions', key: r.id, data: {} }] }));
    for (let i = 0; i < 100 && forwarded.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    await journal.poll(); // due at once (no grace): drains nothing new, then empties the index
    assert.deepEqual(forwarded.map((f) => f.split(':')[0]).sort(), ['switchboard.flow.cancelled', 'switchboard.flow.started', 'switchboard.permission.changed', 'switchboard.task.created']);
    await journal.close();
  } finally {
    cluster.disconnect();
    await node.stop();
  }
});
