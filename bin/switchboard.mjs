#!/usr/bin/env node
// Runs the compiled CLI in dist/ (built by `npm run build`, which `npm install` runs) while it is
// up to date with src/; otherwise the TypeScript sources through tsx, as before the build existed.
// Either way, flow files are compiled on load by the flow loader (tsx), never the gateway itself.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const stamp = join(root, 'dist', '.build-stamp');

/** True when some file in `dir` (recursively) was changed after `since` (ms). A few ms for src/. */
function changedSince(dir, since) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() ? changedSince(p, since) : statSync(p).mtimeMs > since) return true;
  }
  return false;
}

function distIsCurrent() {
  if (process.env.SWITCHBOARD_FROM_SOURCE === '1') return false;
  if (!existsSync(stamp)) return false;
  const built = statSync(stamp).mtimeMs;
  return !changedSince(join(root, 'src'), built) && statSync(join(root, 'tsconfig.json')).mtimeMs <= built;
}

if (distIsCurrent()) {
  await import('../dist/cli/main.js');
} else {
  // One line for a person at a terminal; scripts and tests reading stderr see only the CLI's own output.
  if (process.stderr.isTTY && process.env.SWITCHBOARD_FROM_SOURCE !== '1') {
    process.stderr.write('switchboard: dist/ is missing or older than src/; running the sources through tsx (slower start; `npm run build` fixes it)\n');
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
