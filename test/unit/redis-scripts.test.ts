import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LoginKeys, PermissionKeys, TokenKeys } from '../../src/auth/keys.ts';
import { FlowKeys, STATE_PARTS } from '../../src/flows/keys.ts';
import { TaskKeys } from '../../src/people/keys.ts';
import { indexOpenTaskKeys } from '../../src/people/open-by-due-backfill.ts';
import { leaseKey } from '../../src/store/lease.ts';
import { floatInboxKeys } from '../../src/float/float-inbox.ts';
import { TopicKeys } from '../../src/endpoints/topic/keys.ts';
import { hashTag, oneSlot } from '../../src/store/scripts.ts';

// Every Lua script is a named file with a header, takes every key it touches in KEYS, builds no
// key itself, and is called with KEYS of one hash tag: what a Redis Cluster needs to run it.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILE_NAME = /^([a-z][A-Za-z0-9]*)-(\d+)\.lua$/;

function luaFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return luaFiles(path);
    return e.name.endsWith('.lua') ? [path] : [];
  });
}

interface Script {
  file: string;
  name: string;
  numberOfKeys: number;
  header: string[];
  code: string;
}

const scripts: Script[] = luaFiles(join(ROOT, 'src')).sort().map((path) => {
  const file = relative(ROOT, path);
  const m = FILE_NAME.exec(basename(path));
  assert.ok(m, `${file}: a script file is named <camelCaseName>-<numberOfKeys>.lua`);
  const lines = readFileSync(path, 'utf8').split('\n');
  const headerEnd = lines.findIndex((l) => !l.startsWith('--'));
  return { file, name: m[1]!, numberOfKeys: Number(m[2]), header: lines.slice(0, headerEnd === -1 ? lines.length : headerEnd), code: lines.slice(headerEnd).join('\n') };
});

/** The Lua code without comments and string literals, so only operators and names remain. */
function bare(code: string): string {
  return code
    .replace(/--\[(=*)\[[\s\S]*?\]\1\]/g, ' ')
    .replace(/--[^\n]*/g, ' ')
    .replace(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"/g, "''");
}

const indexes = (text: string, array: 'KEYS' | 'ARGV') => new Set([...text.matchAll(new RegExp(`${array}\\[(\\d+)\\]`, 'g'))].map((m) => Number(m[1])));
const oneTo = (n: number) => new Set(Array.from({ length: n }, (_, i) => i + 1));

// Sample values chosen to break a careless key builder: braces in ids and names.
const PREFIX = 'sb';
const ID = 'a{b}c';
const tasks = new TaskKeys(PREFIX);
const flows = new FlowKeys(PREFIX);
const perms = new PermissionKeys(PREFIX);
const logins = new LoginKeys(PREFIX);
const tokens = new TokenKeys(PREFIX);

/** The KEYS each script is called with, built by its store's key module exactly as the store does. */
const CALLED_WITH: Record<string, () => string[]> = {
  createTask: () => tasks.createTask(ID, { assignee: '{alice}' }),
  decideTask: () => tasks.decideTask(ID, { group: 'payment}approvers' }),
  approveTask: () => tasks.approveTask(ID),
  claimTask: () => tasks.claimTask(ID),
  releaseTask: () => tasks.releaseTask(ID),
  reassignTask: () => tasks.reassignTask(ID, { group: '{ops}' }, { assignee: 'bob}' }),
  indexOpenTask: () => indexOpenTaskKeys(new TaskKeys(PREFIX, 4), ID),
  createInstance: () => flows.createInstance(ID),
  deliverMessage: () => flows.deliverMessage(ID),
  refreshLock: () => flows.refreshLock(ID),
  releaseLock: () => flows.releaseLock(ID),
  beginRun: () => flows.beginRun(ID),
  parkInstance: () => flows.parkInstance(ID),
  finishInstance: () => flows.finishInstance(ID),
  cancelInstance: () => flows.cancelInstance(ID),
  announceEventJournal: () => [`${PREFIX}:{event-journals}`],
  forgetEventJournal: () => [`${PREFIX}:{event-journals}`],
  changeRule: () => perms.changeRule(),
  countFailedLogin: () => logins.countFailedLogin('user', '{mallory}'),
  readFailedLogins: () => logins.readFailedLogins('ip', '::1'),
  renewLease: () => [leaseKey(PREFIX, 'peer-bridge:bank-b')],
  releaseLease: () => [leaseKey(PREFIX, 'tmp-sweep')],
  acceptPublication: () => new TopicKeys(PREFIX).acceptPublication('0123abcd'),
  storeFloatEntry: () => floatInboxKeys(PREFIX).storeFloatEntry('0123abcd'),
};

test('there are Lua scripts under src/, each named <name>-<numberOfKeys>.lua, names unique', () => {
  assert.ok(scripts.length >= 12, `found ${scripts.length} scripts`);
  const seen = new Map<string, string>();
  for (const s of scripts) {
    assert.equal(seen.get(s.name), undefined, `${s.file}: the name '${s.name}' is also used by ${seen.get(s.name)} (ioredis defines commands by name)`);
    seen.set(s.name, s.file);
  }
});

test('each script opens with a header naming exactly its KEYS, the ARGV it reads, and what it returns', () => {
  for (const s of scripts) {
    const header = s.header.join('\n');
    assert.match(s.header[0] ?? '', new RegExp(`^-- ${s.name}: \\S`), `${s.file}: the header starts with '-- ${s.name}: <what it does>'`);
    assert.deepEqual(indexes(header, 'KEYS'), oneTo(s.numberOfKeys), `${s.file}: the header names KEYS[1]..KEYS[${s.numberOfKeys}], as the file name says`);
    for (const i of oneTo(s.numberOfKeys)) assert.match(header, new RegExp(`^-- KEYS\\[${i}\\] \\S`, 'm'), `${s.file}: KEYS[${i}] has a line of its own saying what it is`);
    const code = bare(s.code);
    const used = indexes(code, 'ARGV');
    const variadic = /ARGV\[1\.\.n\]/.test(header);
    if (variadic) assert.match(code, /unpack\(ARGV\)/, `${s.file}: ARGV[1..n] in the header, but the code does not take ARGV whole`);
    else assert.deepEqual(indexes(header, 'ARGV'), used, `${s.file}: the header names exactly the ARGV the code reads`);
    assert.match(header, /^-- Returns /m, `${s.file}: the header says what it returns`);
  }
});

test('no script builds a key: every redis.call names a KEYS[i] the file name allows, and no string is concatenated', () => {
  for (const s of scripts) {
    const code = bare(s.code);
    assert.doesNotMatch(code, /\.\./, `${s.file}: '..' concatenates strings; keys come whole in KEYS, so nothing needs building`);
    assert.doesNotMatch(code, /KEYS\[(?!\d+\])/, `${s.file}: KEYS is indexed only by a number literal`);
    assert.doesNotMatch(code, /\b(?:_G|loadstring|load)\b/, `${s.file}: no dynamic code`);
    const calls = [...code.matchAll(/redis\.p?call\(\s*''\s*(?:,\s*([^,)]+))?/g)];
    assert.ok(calls.length > 0, `${s.file}: calls Redis`);
    // TIME is the one command without a key (a script that needs Redis's clock, not a client's).
    const keyless = [...s.code.matchAll(/redis\.p?call\(\s*'TIME'\s*\)/g)].length;
    assert.equal(calls.filter((call) => call[1] === undefined).length, keyless, `${s.file}: only TIME is called without a KEYS[i]`);
    for (const call of calls.filter((c) => c[1] !== undefined)) {
      assert.match(call[1]!.trim(), /^KEYS\[\d+\]$/, `${s.file}: '${call[0]}' — the first argument of every command is a KEYS[i]`);
    }
    assert.doesNotMatch(code, /redis\.p?call\(\s*[^'\s]/, `${s.file}: the command name is a literal`);
    for (const i of indexes(code, 'KEYS')) assert.ok(i >= 1 && i <= s.numberOfKeys, `${s.file}: uses KEYS[${i}], the file name allows ${s.numberOfKeys}`);
  }
});

test('each script is called with as many KEYS as its file name says, all of one hash tag', () => {
  assert.deepEqual(Object.keys(CALLED_WITH).sort(), scripts.map((s) => s.name).sort(), 'every script has its keys listed here, and only scripts that exist');
  for (const s of scripts) {
    const keys = CALLED_WITH[s.name]!();
    assert.equal(keys.length, s.numberOfKeys, `${s.file}: called with ${keys.length} keys`);
    assert.equal(new Set(keys).size, keys.length, `${s.file}: KEYS are distinct: ${keys.join(', ')}`);
    assert.ok(oneSlot(keys), `${s.file}: KEYS share one hash tag: ${keys.map((k) => `${k} → {${hashTag(k)}}`).join(', ')}`);
    for (const k of keys) assert.ok(k.startsWith(`${PREFIX}:`), `${s.file}: '${k}' starts with the configured prefix`);
  }
});

test('transactions share one hash tag: a token and its owner, the parts of a flow instance', () => {
  for (const [id, user] of [['0123456789abcdef', 'alice'], ['0123456789abcdef', '{bob}'], ['0123456789abcdef', 'eve}']] as const) {
    assert.ok(oneSlot(tokens.createOrRevoke(id, user)), `token keys ${tokens.createOrRevoke(id, user).join(', ')}`);
  }
  assert.ok(oneSlot(flows.consumeStep(ID)));
  assert.ok(oneSlot([...STATE_PARTS.map((p) => flows.instance(ID, p)), flows.instance(ID, 'lock')]));
  assert.notEqual(hashTag(flows.instance('one', 'meta')), hashTag(flows.instance('two', 'meta')), 'instances spread over the slots of a cluster');
});

test('hashTag follows Redis Cluster: the first non-empty {…}, else the whole key', () => {
  assert.equal(hashTag('sb:{tasks}:task:1'), 'tasks');
  assert.equal(hashTag('sb:flow:{a{b}c}:meta'), 'a{b');
  assert.equal(hashTag('{}x{y}'), '{}x{y}');
  assert.equal(hashTag('x{y'), 'x{y');
  assert.equal(hashTag('plain'), 'plain');
  assert.equal(hashTag('a{b}{c}'), 'b');
  assert.ok(oneSlot(['only-one']));
  assert.ok(!oneSlot(['sb:token:1', 'sb:tokens:alice']));
});
