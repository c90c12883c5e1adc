/**
 * The V8 settings the gateway process runs with: `npm start` passes them (package.json; a unit
 * test keeps it the same as this list), `npm run bench` runs every benchmark (both sides of each
 * comparison) with them, and docs/operations.md tells a launcher of one's own to pass them. Not
 * in the shebang of bin/switchboard.mjs: `#!/usr/bin/env -S node …` needs an env that splits its
 * arguments, and BusyBox's (Alpine images) does not, which would leave the command unusable there.
 *
 * A 64 MB semi-space (V8's default is 16 MB): every message in flight holds a chain of promises
 * and its envelope until Redis answers, so with the default young generation each scavenge
 * copies the objects of all of them, about every 400 messages. Four times the room scavenges a
 * quarter as often over the same survivors. Measured on the route benchmark (queue → route →
 * queue, 2 cores, 5 rounds each, back to back): CPU-cost ratio against raw BullMQ 0.81–0.83 →
 * 0.83–0.88. The price is memory under load: the route benchmark's process peaked at ~300 MB
 * RSS against ~235 MB (the young generation can reach three semi-spaces, 192 MB).
 */
export const GATEWAY_NODE_FLAGS = ['--max-semi-space-size=64'];
