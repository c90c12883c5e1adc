// Module hooks (registered by compiled.mjs): an import that resolves to src/<path>.ts loads
// dist/<path>.js instead, so a benchmark measures the compiled gateway users run.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SRC = new URL('../../src/', import.meta.url).href;
const DIST = new URL('../../dist/', import.meta.url).href;

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (r.url.startsWith(SRC) && r.url.endsWith('.ts')) {
    const compiled = `${DIST}${r.url.slice(SRC.length, -3)}.js`;
    if (existsSync(fileURLToPath(compiled))) return { ...r, url: compiled, format: 'module' };
  }
  return r;
}
