import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { GATEWAY_NODE_FLAGS } from '../../bin/node-flags.mjs';

const root = join(import.meta.dirname, '..', '..');

// The gateway's V8 flags are written where nothing can import them (an npm script): this keeps
// it the same as the list the benchmark runner imports.
test('npm start runs the gateway with its V8 flags', () => {
  const start: string = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start;
  assert.ok(GATEWAY_NODE_FLAGS.length > 0);
  for (const flag of GATEWAY_NODE_FLAGS) assert.ok(start.split(' ').includes(flag), `package.json's start script lacks ${flag}: ${start}`);
});
