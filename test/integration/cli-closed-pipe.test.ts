import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs');

// `switchboard --help | head -2`, `switchboard browse … | head`: a reader that has read enough
// closes the pipe before the command has written everything. That is not the user's error and
// not the command's: no stack trace, and the exit status of a command that did its work.
test('a command whose reader closes the pipe early ends quietly, status 0', { timeout: 60_000 }, async () => {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(process.execPath, [BIN, '--help'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  // Closed before the command writes: its first write meets a pipe with no reader (EPIPE).
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  assert.equal(stderr.includes('EPIPE') || stderr.includes('    at '), false, `no stack trace on stderr:\n${stderr}`);
  assert.equal(code, 0);
});
