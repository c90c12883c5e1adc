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
    throw new Error(`flows may import only 'switchboard' and 'zod' (and their own relative files), not '${specifier}': reach the world through ctx`);
  }
  return next(specifier, context);
}
