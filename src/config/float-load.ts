import { resolve } from 'node:path';
import { networkMapFile } from './network-map-file.ts';
import { keyFileProblems, readPem, readPublicKey } from './key-files.ts';
import { crlFile } from './materials.ts';
import { readConfigText, readSections, validateSections } from './load.ts';
import { floatConfigSchema, type FloatConfig } from './float-schema.ts';
import type { NetworkMapSource, PeerEntry } from '../network/network-map.ts';
import { crlUrl, type CrlSource } from '../network/revocation.ts';

/** Parses and validates a float config (YAML, `${VAR}` substituted); throws ConfigError listing every problem. */
export function parseFloatConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): FloatConfig {
  const { substituted, problems } = readSections(text, file, env, 'redis, peers, tunnel, network, http');
  return validateSections(floatConfigSchema, substituted, problems, file);
}

export function loadFloatConfig(path: string): { file: string; config: FloatConfig } {
  const file = resolve(path);
  return { file, config: parseFloatConfig(readConfigText(file, 'pass --config FILE'), file) };
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
  // Each read either gives its value or adds its problem; the error is thrown once, at the end.
  const { attempt, done } = keyFileProblems();
  const tunnel = { key: attempt(() => readPem('tunnel.key', c.tunnel.key)), cert: attempt(() => readPem('tunnel.cert', c.tunnel.cert)), ca: attempt(() => readPem('tunnel.ca', c.tunnel.ca)) };
  const ca = attempt(() => readPem('network.ca', c.network.ca));
  const peers = c.network.peers.map((p, i) => ({ ...p, verifyKey: attempt(() => readPublicKey(`network.peers[${i}].verifyKey`, p.verifyKey)) }));
  done();
  const n = c.network;
  return {
    tunnel: { key: tunnel.key!, cert: tunnel.cert!, ca: tunnel.ca! },
    ca: ca!,
    peers: peers.map((p) => ({ ...p, verifyKey: p.verifyKey! })),
    ...(n.mapFile ? { mapFile: networkMapFile(n.mapFile) } : {}),
    ...(n.crl?.file ? { crl: crlFile(n.crl.file) } : n.crl?.url ? { crl: crlUrl(n.crl.url) } : {}),
  };
}
