import { execFile } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
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

const run = promisify(execFile);

/**
 * A CRL of the network CA revoking the certificates of `revoked` (aliases), written to
 * `<dir>/network.crl` (PEM) with `openssl ca` and a throwaway CA database (Debian's openssl needs
 * an index file and a crlnumber for -gencrl). Called again, it replaces the CRL.
 */
export async function writeCrl(net: { dir: string; nodes: Record<string, TestNode> }, revoked: string[], out = join(net.dir, 'network.crl')): Promise<string> {
  const work = mkdtempSync(join(tmpdir(), 'sb-crl-'));
  try {
    const cnf = join(work, 'ca.cnf');
    writeFileSync(join(work, 'index.txt'), '');
    writeFileSync(join(work, 'crlnumber'), '01\n');
    writeFileSync(cnf, `[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = ${join(work, 'index.txt')}\ncrlnumber = ${join(work, 'crlnumber')}\ndefault_md = sha256\ndefault_crl_days = 30\n`);
    const ca = ['-config', cnf, '-keyfile', join(net.dir, 'network-ca.key'), '-cert', join(net.dir, 'network-ca.crt')];
    for (const alias of revoked) await run('openssl', ['ca', ...ca, '-revoke', net.nodes[alias]!.cert]);
    await run('openssl', ['ca', ...ca, '-gencrl', '-out', join(work, 'crl.pem')]);
    // Replaced in one step, so a refresh never reads half a file.
    renameSync(join(work, 'crl.pem'), out);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}
