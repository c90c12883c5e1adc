/** Who a gateway is on the network (X.500 identities, certificate subjects) and the Ed25519 signatures on its envelopes. Keys arrive as KeyObjects, read at the config edge. */
import { sign as edSign, verify as edVerify, type KeyObject, X509Certificate as NodeX509 } from 'node:crypto';

/** `O=Bank B,L=London,C=GB` → a set of `type=value` pairs, order and spacing insensitive. */
export function identityKey(identity: string): string {
  return identity
    .split(/,(?=\s*[A-Za-z]+=)/)
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => {
      const eq = p.indexOf('=');
      return `${p.slice(0, eq).trim().toUpperCase()}=${p.slice(eq + 1).trim()}`;
    })
    .sort()
    .join(',');
}

export function sameIdentity(a: string, b: string): boolean {
  return identityKey(a) === identityKey(b);
}

/** The subject of a PEM/DER certificate as `C=GB,L=London,O=Bank B` (comparable with identityKey). */
export function certificateIdentity(cert: string | Buffer): string {
  const subject = new NodeX509(cert).subject; // one `type=value` per line
  return identityKey(subject.split('\n').join(','));
}

export function signBytes(key: KeyObject, data: Buffer): string {
  return edSign(null, data, key).toString('base64');
}

export function verifyBytes(key: KeyObject, data: Buffer, signature: string): boolean {
  try {
    return edVerify(null, data, key, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
