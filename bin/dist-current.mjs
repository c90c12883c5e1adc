// Whether dist/ (`npm run build`) is up to date with src/: the CLI runs it only then, and the
// benchmarks measure it only then (bench/run-all.ts builds it first when it is not).
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

export function distIsCurrent() {
  if (process.env.SWITCHBOARD_FROM_SOURCE === '1') return false;
  if (!existsSync(stamp)) return false;
  const built = statSync(stamp).mtimeMs;
  return !changedSince(join(root, 'src'), built) && statSync(join(root, 'tsconfig.json')).mtimeMs <= built;
}
