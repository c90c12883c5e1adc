// src/endpoints/queue/discard-waiting.ts runs BullMQ's own removeJob script, imported from a file
// inside the package (bullmq/dist/esm/scripts/removeJob-2.js), behind a guard that passes it
// KEYS[3..6]. Neither the file's name nor its KEYS are a public API: a minor BullMQ release may
// rename the file (the gateway would then fail to start: queue-endpoint.ts imports it) or give it
// a third key (the guard's keys would be read as BullMQ's). So the version is pinned exactly, and
// this test says what to check before moving it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { removeJob } from 'bullmq/dist/esm/scripts/removeJob-2.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> };
const lock = JSON.parse(readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8')) as { packages: Record<string, { version?: string; dependencies?: Record<string, string> }> };

test('bullmq is pinned to one version (an internal script of it is imported), the one installed', () => {
  const spec = pkg.dependencies.bullmq!;
  assert.match(spec, /^\d+\.\d+\.\d+$/, `package.json has bullmq '${spec}': pin it exactly; before moving it, check that removeJob-2.js still exists with KEYS[1] job key and KEYS[2] repeat key only`);
  assert.equal(lock.packages['']!.dependencies!.bullmq, spec, 'package-lock.json agrees with package.json');
  assert.equal(lock.packages['node_modules/bullmq']!.version, spec);
});

test('BullMQ\'s removeJob takes the two KEYS the discard guard leaves it (job key, repeat key), no more', () => {
  assert.equal(removeJob.keys, 2);
  const used = new Set([...removeJob.content.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
  assert.deepEqual([...used].sort(), [1, 2], 'removeJob reads only KEYS[1] and KEYS[2]; the guard\'s KEYS[3..6] are its own');
});

// src/endpoints/queue/guarded-add.ts runs BullMQ's addStandardJob inside its dedup and depth guard: the guard
// reads KEYS[1] wait, KEYS[2] paused and KEYS[6] delayed as addStandardJob names them, adds its
// own KEYS[10] (prioritized), KEYS[11] (the dedup key), ARGV[4] (the limit) and ARGV[5] (the dedup window), and stands in for the client's runCommand
// that BullMQ's addJobToTransaction calls with 'addStandardJob:<version>'.
test("BullMQ's addStandardJob has the 9 KEYS and 3 ARGV the depth guard builds on, and adds through runCommand", async () => {
  const { addStandardJob } = await import('bullmq/dist/esm/scripts/addStandardJob-9.js');
  assert.equal(addStandardJob.keys, 9);
  const keys = new Set([...addStandardJob.content.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
  assert.ok([...keys].every((k) => k >= 1 && k <= 9), `addStandardJob reads only KEYS[1..9]: ${[...keys]}`);
  const argv = new Set([...addStandardJob.content.matchAll(/ARGV\[(\d+)\]/g)].map((m) => Number(m[1])));
  assert.ok([...argv].every((a) => a >= 1 && a <= 3), `addStandardJob reads only ARGV[1..3] (the guard's limit is ARGV[4]): ${[...argv]}`);
  assert.match(addStandardJob.content, /KEYS\[1\] 'wait'/);
  assert.match(addStandardJob.content, /KEYS\[2\] 'paused'/);
  assert.match(addStandardJob.content, /KEYS\[6\] 'delayed'/);
  const backend = readFileSync(new URL('../../node_modules/bullmq/dist/cjs/classes/redis-queue-backend.js', import.meta.url), 'utf8');
  assert.match(backend, /return client\.runCommand\(commandNameWithVersion, args\);/, 'BullMQ runs its scripts through the client\'s runCommand');
  assert.match(backend, /this\.execCommand\(client, 'addStandardJob', argsList\)/, 'addJobToTransaction adds a standard job through execCommand on the client it is given');
});
