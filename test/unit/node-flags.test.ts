import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { GATEWAY_NODE_FLAGS } from '../../bin/node-flags.mjs';

const root = join(import.meta.dirname, '..', '..');

// The gateway's V8 flags are written in three places that cannot import each other (a shebang,
// an npm script, the benchmark runner's import): these keep the first two the same as the list.
test('npm start runs the gateway with its V8 flags', () => {
  const start: string = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start;
  assert.ok(GATEWAY_NODE_FLAGS.length > 0);
  for (const flag of GATEWAY_NODE_FLAGS) assert.ok(start.split(' ').includes(flag), `package.json's start script lacks ${flag}: ${start}`);
});

test('the switchboard command runs with the gateway V8 flags', () => {
  const shebang = readFileSync(join(root, 'bin', 'switchboard.mjs'), 'utf8').split('\n')[0]!;
  // `env -S` splits the rest of the line into arguments: without it Linux passes them as one.
  assert.match(shebang, /^#!\/usr\/bin\/env -S node( |$)/);
  for (const flag of GATEWAY_NODE_FLAGS) assert.ok(shebang.split(' ').includes(flag), `bin/switchboard.mjs's shebang lacks ${flag}: ${shebang}`);
});
