import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCa, issue, type NodeMaterial } from '../../src/cli/network-certificates.ts';
import { freePort } from '../../src/store/embedded-redis.ts';

export interface TestNode extends NodeMaterial {
  alias: string;
  identity: string;
  port: number;
}

/** A development network in a temp folder: a CA and node material for each identity. */
export async function testNetwork(nodes: { alias: string; identity: string }[]): Promise<{ dir: string; ca: string; nodes: Record<string, TestNode> }> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-net-'));
  const ca = await initCa(dir);
  const out: Record<string, TestNode> = {};
  for (const n of nodes) out[n.alias] = { ...n, ...(await issue(n.identity, dir, dir, n.alias)), port: await freePort() };
  return { dir, ca: ca.cert, nodes: out };
}

/** The `network:` config of `self`, with `peers` as its map (each allowed `allow`). */
export function networkConfig(net: { ca: string; nodes: Record<string, TestNode> }, self: string, peers: { alias: string; allow: string[]; port?: number }[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const me = net.nodes[self]!;
  return {
    identity: me.identity, port: me.port, key: me.key, cert: me.cert, ca: net.ca, signingKey: me.signingKey,
    peers: peers.map((p) => ({ alias: p.alias, identity: net.nodes[p.alias]!.identity, host: '127.0.0.1', port: p.port ?? net.nodes[p.alias]!.port, verifyKey: net.nodes[p.alias]!.verifyKey, allow: p.allow })),
    ...extra,
  };
}
