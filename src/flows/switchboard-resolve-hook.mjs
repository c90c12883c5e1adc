// Module resolution hook for flow files (Node's module.register). Flows import only
// 'switchboard' and 'zod', resolved to this installation's copies even when the flows folder
// lies outside the checkout; any other bare import from a flow file is refused, because flows
// must reach the world only through ctx (that is what makes replay deterministic).
let targets = {};
let flowsDir = '';

export async function initialize(data) {
  targets = data.targets;
  flowsDir = data.flowsDir;
}

export async function resolve(specifier, context, next) {
  // Handed on (not short-circuited) so the TypeScript loader still sees the target and compiles it.
  if (Object.hasOwn(targets, specifier)) return next(targets[specifier], context);
  const fromFlow = context.parentURL?.startsWith(flowsDir);
  const relative = specifier.startsWith('./') || specifier.startsWith('../');
  if (fromFlow && !relative) {
    const file = decodeURIComponent(new URL(context.parentURL).pathname);
    throw new Error(`${file} imports '${specifier}': flows may import only 'switchboard' and 'zod' (and their own relative files); reach the world through ctx`);
  }
  const resolved = await next(specifier, context);
  // A flow file is an ES module wherever it lies: without a package.json saying "type": "module"
  // the TypeScript loader would compile it to CommonJS, whose require() calls bypass this hook.
  if (resolved.url.startsWith(flowsDir) && /\.(ts|js)$/.test(resolved.url)) return { ...resolved, format: resolved.url.endsWith('.ts') ? 'module-typescript' : 'module' };
  return resolved;
}
