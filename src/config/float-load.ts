import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigError } from '../core/errors.ts';
import { networkMapFile } from './network-map-file.ts';
import { KeyFileError, readPem, readPublicKey } from './key-files.ts';
import { crlFile } from './materials.ts';
import { describe, formatPath, substitute } from './load.ts';
import { floatConfigSchema, type FloatConfig } from './float-schema.ts';
import type { NetworkMapSource, PeerEntry } from '../network/network-map.ts';
import { crlUrl, type CrlSource } from '../network/revocation.ts';

/** Parses and validates a float config (YAML, `${VAR}` substituted); throws ConfigError listing every problem. */
export function parseFloatConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): FloatConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw new ConfigError(file, doc.errors.map((e) => `YAML syntax: ${e.message.split('\n')[0]}`));
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, ['(top): expected a mapping of sections (redis, peers, tunnel, network)']);
  const problems: string[] = [];
  const substituted = substitute(raw, env, '', problems);
  const parsed = floatConfigSchema.safeParse(substituted);
  const missingAt = new Set(problems.map((p) => p.slice(0, p.indexOf(':'))));
  if (!parsed.success) problems.push(...parsed.error.issues.filter((i) => !missingAt.has(formatPath(i.path))).flatMap((i) => describe(i).split('\n')));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(file, problems);
  return parsed.data;
}

export function loadFloatConfig(path: string): { file: string; config: FloatConfig } {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [code === 'ENOENT' ? 'file not found (pass --config FILE)' : `cannot read: ${code ?? (err as Error).message}`]);
  }
  return { file, config: parseFloatConfig(text, file) };
}

/** The float's files, read once at start: tunnel TLS, the network CA, peers' verify keys, CRL and map file sources. */
export interface FloatMaterials {
  tunnel: { key: string; cert: string; ca: string };
  ca: string;
  peers: PeerEntry[];
  mapFile?: NetworkMapSource;
  crl?: CrlSource;
}

export function readFloatMaterials(c: FloatConfig): FloatMaterials {
  const problems: string[] = [];
  const attempt = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof KeyFileError)) throw err;
      problems.push(...err.problems);
      return undefined;
    }
  };
  const tunnel = { key: attempt(() => readPem('tunnel.key', c.tunnel.key)), cert: attempt(() => readPem('tunnel.cert', c.tunnel.cert)), ca: attempt(() => readPem('tunnel.ca', c.tunnel.ca)) };
  const ca = attempt(() => readPem('network.ca', c.network.ca));
  const peers = c.network.peers.map((p, i) => ({ ...p, verifyKey: attempt(() => readPublicKey(`network.peers[${i}].verifyKey`, p.verifyKey)) }));
  if (problems.length > 0) throw new KeyFileError(problems);
  const n = c.network;
  return {
    tunnel: { key: tunnel.key!, cert: tunnel.cert!, ca: tunnel.ca! },
    ca: ca!,
    peers: peers.map((p) => ({ ...p, verifyKey: p.verifyKey! })),
    ...(n.mapFile ? { mapFile: networkMapFile(n.mapFile) } : {}),
    ...(n.crl?.file ? { crl: crlFile(n.crl.file) } : n.crl?.url ? { crl: crlUrl(n.crl.url) } : {}),
  };
}
