// Logs a person can read at a terminal, JSON for machines: the gateway's logger prints pino-pretty
// lines when stdout is a TTY (here a real pseudo-terminal from util-linux's `script`) and one JSON
// object a line into a pipe, with secrets redacted either way.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, test } from 'node:test';
import { logFormat } from '../../src/log.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'sb-log-'));
const probe = join(dir, 'probe.mjs');
writeFileSync(probe, `const { createLogger } = await import(${JSON.stringify(join(ROOT, 'src', 'log.ts'))});
createLogger('info').info({ password: 'hunter2', order: 'P-2041' }, 'a line for a person');
`);
after(() => rmSync(dir, { recursive: true, force: true }));

const hasScript = spawnSync('script', ['--version']).status === 0;

test('the decision: pretty only for a terminal', () => {
  assert.equal(logFormat({ isTTY: true }), 'pretty');
  assert.equal(logFormat({ isTTY: false }), 'json');
  assert.equal(logFormat({}), 'json');
});

test('into a pipe (CI, tests, a log shipper): one JSON object a line, the password redacted', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', probe], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(line.msg, 'a line for a person');
  assert.equal(line.level, 30);
  assert.equal(line.password, '[redacted]');
  assert.equal(line.order, 'P-2041');
});

test('at a terminal (a pseudo-TTY through `script`): pino-pretty lines, the password redacted', { skip: hasScript ? false : 'no `script` (util-linux) on this machine' }, () => {
  const cmd = [process.execPath, '--import', 'tsx', probe].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('script', ['-q', '-e', '-c', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  // eslint-disable-next-line no-control-regex
  const text = r.stdout.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '');
  assert.match(text, /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] INFO: a line for a person$/m);
  assert.match(text, /^\s+order: "P-2041"$/m);
  assert.match(text, /^\s+password: "\[redacted\]"$/m);
  assert.doesNotMatch(text, /hunter2/);
  assert.doesNotMatch(text, /"level":/, 'no JSON at a terminal');
});
