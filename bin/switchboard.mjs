#!/usr/bin/env node
// Runs the TypeScript sources through tsx, the same loader that compiles flows on load, so there
// is one copy of every module and no build step between a checkout and a running gateway.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
