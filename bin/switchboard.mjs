#!/usr/bin/env node
// Runs the compiled CLI in dist/ (built by `npm run build`, which `npm install` runs) while it is
// up to date with src/; otherwise the TypeScript sources through tsx, as before the build existed.
// Either way, flow files are compiled on load by the flow loader (tsx), never the gateway itself.
import { distIsCurrent } from './dist-current.mjs';

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
