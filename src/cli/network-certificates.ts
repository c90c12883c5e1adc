import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { SwitchboardError } from '../core/errors.ts';

// `switchboard network init-ca | issue`: the files an operator asks for on the command line.
// They live with the CLI because writing key files is the config edge's business; the gateway
// only ever reads them (src/config/materials.ts).

const run = promisify(execFile);

/** Certificates are made with the openssl command every Debian/Ubuntu host has; it says so if missing. */
async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new SwitchboardError('openssl_missing', 'the openssl command is needed to make certificates (Debian/Ubuntu: apt-get install openssl)', 500);
    throw new SwitchboardError('openssl_failed', `openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().split('\n').pop()}`, 500);
  }
}

function writeSecret(path: string, data: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function writePublic(path: string, data: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data, { mode: 0o644 });
}

/** 'O=Bank B,L=London,C=GB' → openssl's '/O=Bank B/L=London/C=GB' (slashes in values escaped). */
function subjectArg(identity: string): string {
  if (!/^\s*[A-Za-z]+=/.test(identity)) throw new SwitchboardError('bad_identity', `'${identity}' is not an X.500 name like 'O=Bank B,L=London,C=GB'`);
  return '/' + identity.split(/,(?=\s*[A-Za-z]+=)/).map((p) => p.trim().replace(/\//g, '\\/')).join('/');
}

/** A development network CA: `<dir>/network-ca.key` (0600) and `network-ca.crt`. */
export async function initCa(dir: string, name = 'CN=Switchboard Development Network CA', days = 3650): Promise<{ key: string; cert: string }> {
  mkdirSync(dir, { recursive: true });
  const paths = { key: join(dir, 'network-ca.key'), cert: join(dir, 'network-ca.crt') };
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', paths.key, '-out', paths.cert, '-days', String(days), '-subj', subjectArg(name),
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  chmodSync(paths.key, 0o600);
  return paths;
}

/** The files `issue` wrote (paths). */
export interface NodeMaterial {
  key: string;
  cert: string;
  signingKey: string;
  verifyKey: string;
}

/**
 * Node material for `identity`, signed by the CA in `caDir`: a TLS key and certificate whose
 * subject is the identity (for server and client use), and an Ed25519 signing key pair.
 */
export async function issue(identity: string, caDir: string, outDir: string, alias: string, hosts: string[] = ['localhost', '127.0.0.1'], days = 825): Promise<NodeMaterial> {
  mkdirSync(outDir, { recursive: true });
  const paths = { key: join(outDir, `${alias}.key`), cert: join(outDir, `${alias}.crt`), signingKey: join(outDir, `${alias}-sign.key`), verifyKey: join(outDir, `${alias}-sign.pub`) };
  const work = mkdtempSync(join(tmpdir(), 'sb-issue-'));
  try {
    const csr = join(work, 'node.csr');
    const ext = join(work, 'ext.cnf');
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', paths.key, '-out', csr, '-subj', subjectArg(identity)]);
    chmodSync(paths.key, 0o600);
    const san = hosts.map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
    writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`);
    await openssl(['x509', '-req', '-in', csr, '-CA', join(caDir, 'network-ca.crt'), '-CAkey', join(caDir, 'network-ca.key'), '-CAcreateserial', '-CAserial', join(work, 'ca.srl'), '-out', paths.cert, '-days', String(days), '-sha256', '-extfile', ext]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const ed = generateKeyPairSync('ed25519');
  writeSecret(paths.signingKey, ed.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  writePublic(paths.verifyKey, ed.publicKey.export({ format: 'pem', type: 'spki' }).toString());
  return paths;
}
