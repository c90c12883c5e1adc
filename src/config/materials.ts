import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { NetworkMapSource, PeerEntry } from '../network/network-map.ts';
import { crlUrl, type CrlSource } from '../network/revocation.ts';
import { keyFileProblems, readPem, readPrivateKey, readPublicKey } from './key-files.ts';
import { networkMapFile } from './network-map-file.ts';
import type { Config } from './schema.ts';

export { KeyFileError } from './key-files.ts';

/** PEM texts (not paths) for a TLS connection. */
export interface PemFiles {
  key?: string;
  cert?: string;
  ca?: string;
}

/** The network's TLS material and keys, ready to use. */
export interface NetworkMaterials {
  /** network.key, network.cert, network.ca: PEM texts. */
  key: string;
  cert: string;
  ca: string;
  /** network.signingKey: this gateway's Ed25519 signing key. */
  signingKey: KeyObject;
  /** network.peers with their verify keys loaded. */
  peers: PeerEntry[];
  /** network.mapFile, as a source the network map reads and watches. */
  mapFile?: NetworkMapSource;
  /** network.crl.file or .url, as a source read again on every refresh. */
  crl?: CrlSource;
  /** network.float: the tunnel's own key, certificate and the float's CA (PEM texts). */
  float?: { key: string; cert: string; ca: string };
}

/**
 * Every key and certificate file the config names, read once at start (the config edge), so
 * nothing below it touches the file system: the steps of the start get contents and KeyObjects.
 */
export interface Materials {
  /** directory.tls.caFile (PEM text). */
  directoryCa?: string;
  /** brokers.<name>.tls ca/cert/key (PEM texts), by broker name; absent for a broker without tls. */
  brokers: Record<string, PemFiles>;
  /** amqp.tls: the embedded AMQP endpoint's key, certificate and optional client CA (PEM texts). */
  amqpTls?: { key: string; cert: string; ca?: string };
  network?: NetworkMaterials;
}

/**
 * Reads the files named in a validated config. Every unreadable file is reported, not just the
 * first, as one KeyFileError whose lines name the config path and the file
 * (`network.key: cannot read certs/a.key: ENOENT`).
 */
export function readMaterials(config: Config): Materials {
  // Each read either gives its value or adds its problem; the error is thrown once, at the end.
  const { attempt, done } = keyFileProblems();
  const pem = (where: string, path: string | undefined): string | undefined => (path === undefined ? undefined : attempt(() => readPem(where, path)));

  const d = config.directory;
  const directoryCa = d.type === 'ldap' ? pem('directory.tls.caFile', d.tls?.caFile) : undefined;

  const brokers: Record<string, PemFiles> = {};
  for (const [name, b] of Object.entries(config.brokers)) {
    if (!b.tls) continue;
    const at = `brokers.${name}.tls`;
    brokers[name] = withoutUndefined({ ca: pem(`${at}.ca`, b.tls.ca), cert: pem(`${at}.cert`, b.tls.cert), key: pem(`${at}.key`, b.tls.key) });
  }

  const t = config.amqp?.tls;
  const amqp = t ? { key: pem('amqp.tls.key', t.key), cert: pem('amqp.tls.cert', t.cert), ca: pem('amqp.tls.ca', t.ca) } : undefined;

  const n = config.network;
  const network = n
    ? {
        key: pem('network.key', n.key),
        cert: pem('network.cert', n.cert),
        ca: pem('network.ca', n.ca),
        signingKey: attempt(() => readPrivateKey('network.signingKey', n.signingKey)),
        peers: n.peers.map((p, i) => ({ ...p, verifyKey: attempt(() => readPublicKey(`network.peers[${i}].verifyKey`, p.verifyKey)) })),
        float: n.float ? { key: pem('network.float.key', n.float.key), cert: pem('network.float.cert', n.float.cert), ca: pem('network.float.ca', n.float.ca) } : undefined,
      }
    : undefined;

  done();
  // No problems: every file that was named has been read, so the `!`s below hold.
  return {
    brokers,
    ...(directoryCa !== undefined ? { directoryCa } : {}),
    ...(amqp ? { amqpTls: { key: amqp.key!, cert: amqp.cert!, ...(amqp.ca !== undefined ? { ca: amqp.ca } : {}) } } : {}),
    ...(n && network
      ? {
          network: {
            key: network.key!, cert: network.cert!, ca: network.ca!, signingKey: network.signingKey!,
            peers: network.peers.map((p) => ({ ...p, verifyKey: p.verifyKey! })),
            ...(n.mapFile ? { mapFile: networkMapFile(n.mapFile) } : {}),
            ...(n.crl?.file ? { crl: crlFile(n.crl.file) } : n.crl?.url ? { crl: crlUrl(n.crl.url) } : {}),
            ...(network.float ? { float: { key: network.float.key!, cert: network.float.cert!, ca: network.float.ca! } } : {}),
          },
        }
      : {}),
  };
}

function withoutUndefined(o: PemFiles): PemFiles {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as PemFiles;
}

/** A CRL file, read again on every refresh (so a missing file is the revocation mode's business, not a start error). */
export function crlFile(path: string): CrlSource {
  return { name: path, read: () => readFile(path) };
}
