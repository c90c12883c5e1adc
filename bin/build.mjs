#!/usr/bin/env node
// `npm run build` (and `prepare`, so `npm install` builds): compiles src/ into dist/ with tsc,
// copies what tsc does not emit (Lua scripts, the flow loader's .mjs hook), and stamps the build.
// bin/switchboard.mjs runs dist/ only while that stamp is newer than every file in src/.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';

const root = join(import.meta.dirname, '..');
const src = join(root, 'src');
const dist = join(root, 'dist');
const stamp = join(dist, '.build-stamp');

// The stamp goes first: a build that fails leaves no stamp, so the CLI falls back to tsx.
rmSync(stamp, { force: true });
const started = new Date();
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
if (r.status !== 0) {
  console.error('switchboard build: tsc failed; the CLI keeps running the TypeScript sources through tsx');
  // `prepare` passes --if-possible: a type error must not make `npm install` fail (the sources still run).
  process.exit(process.argv.includes('--if-possible') ? 0 : (r.status ?? 1));
}

function copyAssets(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const from = join(dir, e.name);
    if (e.isDirectory()) copyAssets(from);
    else if (!/\.(ts|tsx|mts|cts)$/.test(e.name)) {
      const to = join(dist, relative(src, from));
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(from, to);
    }
  }
}
copyAssets(src);
// Stamped with the time the build started: a source saved during the build is newer than the stamp.
writeFileSync(stamp, `${started.toISOString()}\n`);
const { utimesSync } = await import('node:fs');
utimesSync(stamp, started, started);
