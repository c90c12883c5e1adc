import { existsSync, readdirSync } from 'node:fs';
import { register } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FlowLoadError } from './errors.ts';
import { isFlowDefinition, type FlowDefinition } from './define.ts';

const FLOW_NAME = /^[A-Za-z0-9_-]+$/;
let registeredFor: string | undefined;

/** Installs the resolve hook once per process (flows dir fixed at first load). */
function installHook(dir: string): void {
  if (registeredFor !== undefined) return;
  registeredFor = dir;
  register(new URL('./switchboard-resolve-hook.mjs', import.meta.url), {
    data: {
      flowsDir: pathToFileURL(dir + '/').href,
      targets: {
        switchboard: new URL('../index.ts', import.meta.url).href,
        zod: import.meta.resolve('zod'),
      },
    },
  });
}

/**
 * Loads every `.ts`/`.js` file in `dir` (not subfolders: those hold shared helpers) whose
 * default export is a flow. A file that fails to load, or defines no flow, or a name used twice,
 * stops the start with an error naming the file.
 */
export async function loadFlows(dir: string): Promise<Map<string, FlowDefinition>> {
  const abs = resolve(dir);
  const flows = new Map<string, FlowDefinition>();
  const files = new Map<string, string>();
  if (!existsSync(abs)) return flows;
  installHook(abs);
  const entries = readdirSync(abs, { withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|js|mts|mjs)$/.test(e.name) && !e.name.endsWith('.d.ts') && !/\.(test|spec)\./.test(e.name))
    .map((e) => e.name)
    .sort();
  for (const name of entries) {
    const file = join(abs, name);
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
    } catch (err) {
      throw new FlowLoadError(file, `cannot be loaded: ${(err as Error).message.split('\n')[0]}`);
    }
    const def = mod.default;
    if (!isFlowDefinition(def)) throw new FlowLoadError(file, "the default export is not a flow: write `export default defineFlow({ name, input, run })` with defineFlow from 'switchboard'");
    if (typeof def.name !== 'string' || !FLOW_NAME.test(def.name)) throw new FlowLoadError(file, `flow name ${JSON.stringify(def.name)} is not valid: use letters, digits, _ and -`);
    if (typeof def.run !== 'function') throw new FlowLoadError(file, 'run must be an async function (ctx, input) => result');
    if (!def.input || typeof (def.input as { safeParse?: unknown }).safeParse !== 'function') throw new FlowLoadError(file, 'input must be a zod schema, e.g. z.object({ … })');
    if (flows.has(def.name)) throw new FlowLoadError(file, `flow name '${def.name}' is already defined in ${files.get(def.name)}`);
    flows.set(def.name, def);
    files.set(def.name, file);
  }
  return flows;
}
