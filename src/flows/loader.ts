import { existsSync, readdirSync } from 'node:fs';
import { register } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FlowLoadError } from './errors.ts';
import { isFlowDefinition, type FlowDefinition } from './define.ts';

const FLOW_NAME = /^[A-Za-z0-9_-]+$/;
let registeredFor: string | undefined;

/**
 * Where this module runs from: `.ts` under tsx (a checkout without a build, the tests), `.js` in
 * the compiled dist/. Flows must import the same copy of `switchboard` the gateway runs.
 */
const compiled = import.meta.url.endsWith('.js');

/**
 * Installs the resolve hook once per process (flows dir fixed at first load). The compiled
 * gateway has no TypeScript loader of its own, so flow files get one here (tsx, registered
 * before the hook so the hook runs first and hands on to it): flows are still compiled on load.
 */
async function installHook(dir: string): Promise<void> {
  if (registeredFor !== undefined) return;
  registeredFor = dir;
  if (compiled) (await import('tsx/esm/api')).register();
  register(new URL('./switchboard-resolve-hook.mjs', import.meta.url), {
    data: {
      flowsDir: pathToFileURL(dir + '/').href,
      targets: {
        switchboard: new URL(compiled ? '../index.js' : '../index.ts', import.meta.url).href,
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
  await installHook(abs);
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
