/** The V8 flags the gateway process runs with (see node-flags.mjs for why). */
export const GATEWAY_NODE_FLAGS: readonly string[];
