/**
 * The house rules of Switchboard's layout, checked by dependency-cruiser in `npm test`
 * (`npm run lint:architecture`). docs/architecture.md draws the layers and says why each rule
 * exists; a forbidden import fails with the rule's name, the importing file and the import.
 *
 * Layers, data flowing one way:
 *   doors (src/web, src/amqp-server, src/cli) → src/auth → src/core (router) → src/endpoints/<scheme> → src/store
 */

/** The config edge: the only code that may read files (config, key files, flow files). */
const CONFIG_EDGE = [
  '^src/config/',
  '^src/cli/',
  '^src/store/', // starts the embedded redis-server in its data folder
  '^src/flows/loader\\.ts$', // finds and imports the flow files in workflows/
  '^src/flows/switchboard-resolve-hook\\.mjs$', // the loader's module-resolution hook
];

/**
 * Known violations, by rule: files that break a rule today and are being fixed (issue 12). Each
 * entry is one file with the reason; delete the entry when its fix lands, and the rule holds for
 * that file again. Keep these lists short and empty them: they are an allowance, not a place for
 * new code.
 */
const KNOWN_FILE_READERS = [
  // (none left: every file is read at the config edge)
];

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'core-knows-no-transport',
      comment:
        'src/core is the routing engine: address, message, router, endpoint interface, outbox. It finds ' +
        'transports through the scheme registry and never learns their names, nor those of the apps, ' +
        'doors, auth or the network layer above it (Camel: the core never imports a component).',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { path: '^src/(endpoints|people|flows|web|amqp-server|auth|network|amqp|cli|config|tracing|events)/' },
    },
    {
      name: 'events-go-through-the-router',
      comment:
        'src/events builds CloudEvents from what the applications report and hands them to the router ' +
        'as the gateway itself, so the pipeline, dedup and durability apply as to any message. It knows ' +
        'the core only: no transport, application, door, auth or store.',
      severity: 'error',
      from: { path: '^src/events/' },
      to: { path: '^src/(endpoints|people|flows|web|amqp-server|auth|network|amqp|cli|config|store|gateway)/' },
    },
    {
      name: 'no-transport-imports-another',
      comment:
        'Each src/endpoints/<scheme>/ folder is one transport. A transport that needs another goes ' +
        'through the router (an address), so transports can be added or removed one folder at a time.',
      severity: 'error',
      from: { path: '^src/endpoints/([^/]+)/' },
      to: { path: '^src/endpoints/', pathNot: '^src/endpoints/$1/' },
    },
    {
      name: 'doors-do-not-import-transports',
      comment:
        'Doors (HTTP, AMQP listener, peer listener, CLI) hand messages to the router after ' +
        'authentication; reaching a transport directly would bypass authorisation, audit and metrics.',
      severity: 'error',
      from: { path: '^src/(web|amqp-server|cli)/' },
      to: { path: '^src/endpoints/' },
    },
    {
      name: 'transports-do-not-import-apps-or-doors',
      comment:
        'Data flows one way: door → auth → router → transport → store. A transport that reached back ' +
        'into a door, auth, or an application (people, flows) would make a cycle of layers.',
      severity: 'error',
      from: { path: '^src/endpoints/' },
      to: { path: '^src/(flows|people|auth|web|amqp-server|cli)/' },
    },
    {
      name: 'tracing-is-a-small-room',
      comment:
        'src/tracing is the one tiny API every door, transport and application calls to carry a W3C trace ' +
        'context and make spans; it knows the message and the router pipeline (src/core) and nothing above, ' +
        'so any layer may use it without a cycle, and OpenTelemetry stays behind it.',
      severity: 'error',
      from: { path: '^src/tracing/' },
      to: { path: '^src/', pathNot: ['^src/tracing/', '^src/core/'] },
    },
    {
      name: 'flows-import-only-the-flow-api',
      comment:
        "Flow files import only 'switchboard' (src/index.ts), zod and their own relative files. All I/O " +
        'goes through ctx, which is what makes replay deterministic (Temporal: workflow code cannot ' +
        'reach the worker).',
      severity: 'error',
      from: { path: '^workflows/' },
      to: { pathNot: ['^src/index\\.ts$', '^workflows/', '(^|/)node_modules/zod/'] },
    },
    {
      name: 'only-the-config-edge-reads-files',
      comment:
        'Config and key files are read once, at the edge (src/config, src/cli, src/store, the flow ' +
        'loader), into typed objects; nothing below touches the file system, so it can be driven by ' +
        'tests and embedders with values instead of paths.',
      severity: 'error',
      from: { path: '^src/', pathNot: [...CONFIG_EDGE, ...KNOWN_FILE_READERS] },
      to: { dependencyTypes: ['core'], path: '^(node:)?fs(/promises)?$' },
    },
    {
      name: 'no-circular',
      comment: 'A cycle of imports means two modules are one; it also breaks ESM initialisation order.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-test-from-src',
      comment: 'Product code does not import test code.',
      severity: 'error',
      from: { path: '^(src|workflows)/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import the checker cannot resolve is one it cannot check.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // 'switchboard' in workflows/ is this package itself, resolved through package.json "exports".
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.mjs', '.js', '.d.ts'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
