import type { Express } from 'express';

/** `GET /api/tasks/{id}`: one route, written the way the OpenAPI document writes it. */
export type RouteKey = string;

interface Layer {
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
  slash?: boolean;
  name?: string;
}

function keyOf(method: string, expressPath: string): RouteKey {
  return `${method.toUpperCase()} ${expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`;
}

/**
 * Every route the express app really has under `/api`, by walking its router stack. Routers are
 * mounted at the root in this app (their routes carry the full path); one mounted under a
 * prefix would hide its paths from the walk, so it is an error here, not a silent gap.
 */
export function apiRoutesOf(app: Express): RouteKey[] {
  const found = new Set<RouteKey>();
  const walk = (stack: Layer[], depth: number) => {
    for (const layer of stack) {
      if (layer.route) {
        for (const path of Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path]) {
          if (!path.startsWith('/api/') && path !== '/api') continue;
          for (const [method, on] of Object.entries(layer.route.methods)) if (on && method !== '_all') found.add(keyOf(method, path));
        }
      } else if (layer.handle?.stack) {
        if (layer.slash === false) throw new Error(`a router (${layer.name ?? 'anonymous'}) is mounted under a path prefix at depth ${depth}: mount it at the root with full paths so its routes can be checked against the API description`);
        walk(layer.handle.stack, depth + 1);
      }
    }
  };
  const router = (app as unknown as { router?: { stack: Layer[] } }).router;
  if (!router) throw new Error('the app has no router yet: add routes before walking them');
  walk(router.stack, 0);
  return [...found].sort();
}

/** Every operation in an OpenAPI document, as `METHOD /path`. */
export function documentedRoutesOf(doc: { paths?: Record<string, Record<string, unknown>> }): RouteKey[] {
  const methods = new Set(['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace']);
  return Object.entries(doc.paths ?? {}).flatMap(([path, item]) => Object.keys(item).filter((m) => methods.has(m)).map((m) => `${m.toUpperCase()} ${path}`)).sort();
}

/** What differs between the app and its description: both lists empty when they agree. */
export function compareRoutes(app: Express, doc: { paths?: Record<string, Record<string, unknown>> }): { undocumented: RouteKey[]; missing: RouteKey[] } {
  const real = apiRoutesOf(app);
  const documented = documentedRoutesOf(doc);
  return { undocumented: real.filter((r) => !documented.includes(r)), missing: documented.filter((d) => !real.includes(d)) };
}
