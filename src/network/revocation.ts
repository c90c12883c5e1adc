/** Certificate revocation for peer connections (DESIGN §10): CRLs checked on both sides, refreshed on a schedule. */
import { EventEmitter } from 'node:events';
import { X509Certificate, createPublicKey, verify } from 'node:crypto';
import type { Logger } from 'pino';

/** off: no check; soft-fail: a CRL that cannot be had is logged and peers are allowed; hard-fail: no valid CRL, no peer. */
export type RevocationMode = 'off' | 'soft-fail' | 'hard-fail';

/** Where the CRL comes from: a file (read at the config edge) or a URL (fetched here). */
export interface CrlSource {
  /** The path or URL, for the log. */
  readonly name: string;
  /** The CRL as PEM or DER; throws when it cannot be had. */
  read(): Promise<string | Buffer>;
}

/** A CRL fetched over HTTP(S). */
export function crlUrl(url: string, timeoutMs = 10_000): CrlSource {
  return {
    name: url,
    async read() {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
      return Buffer.from(await res.arrayBuffer());
    },
  };
}

/** The parsed, signature-checked CRL: revoked serial numbers (uppercase hex, no leading zeros). */
export interface Crl {
  revoked: Set<string>;
  thisUpdate: string;
  nextUpdate?: string;
}

type Tlv = { tag: number; start: number; body: Buffer; end: number };

function tlv(buf: Buffer, at: number): Tlv {
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let off = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('CRL: unsupported DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[off + i]!;
    off += n;
  }
  if (off + len > buf.length) throw new Error('CRL: truncated DER');
  return { tag, start: at, body: buf.subarray(off, off + len), end: off + len };
}

function children(b: Buffer): Tlv[] {
  const out: Tlv[] = [];
  for (let at = 0; at < b.length;) { const t = tlv(b, at); out.push(t); at = t.end; }
  return out;
}

/** Signature algorithms a network CA uses, by the DER of their OID: the hash for crypto.verify. */
const SIGNATURE_ALGORITHMS: Record<string, string | null> = {
  '2a8648ce3d040302': 'sha256', '2a8648ce3d040303': 'sha384', '2a8648ce3d040304': 'sha512', // ecdsa-with-SHA*
  '2a864886f70d01010b': 'sha256', '2a864886f70d01010c': 'sha384', '2a864886f70d01010d': 'sha512', // sha*WithRSAEncryption
  '2b6570': null, // Ed25519
};

const serialKey = (hex: string) => hex.replace(/^0+(?=.)/, '').toUpperCase();

function time(t: Tlv): string {
  const s = t.body.toString('latin1');
  // UTCTime YYMMDDHHMMSSZ; GeneralizedTime YYYYMMDDHHMMSSZ
  const full = t.tag === 0x17 ? `${Number(s.slice(0, 2)) >= 50 ? '19' : '20'}${s}` : s;
  return `${full.slice(0, 4)}-${full.slice(4, 6)}-${full.slice(6, 8)}T${full.slice(8, 10)}:${full.slice(10, 12)}:${full.slice(12, 14)}Z`;
}

/**
 * Parses a CRL (PEM or DER) and checks it is signed by the network CA: a CRL anyone could edit
 * would let anyone un-revoke a certificate. Throws with the reason.
 */
export function parseCrl(data: string | Buffer, caPem: string): Crl {
  const text = Buffer.isBuffer(data) ? data.toString('latin1') : data;
  const pem = /-----BEGIN X509 CRL-----([\s\S]+?)-----END X509 CRL-----/.exec(text);
  const der = pem ? Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64') : Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
  const top = tlv(der, 0);
  if (top.tag !== 0x30) throw new Error('not a CRL (expected a DER SEQUENCE or a PEM X509 CRL)');
  const [tbs, alg, sig] = children(top.body);
  if (!tbs || !alg || !sig || sig.tag !== 0x03) throw new Error('not a CRL (expected tbsCertList, algorithm, signature)');
  const oid = children(alg.body)[0];
  const hash = oid ? SIGNATURE_ALGORITHMS[oid.body.toString('hex')] : undefined;
  if (hash === undefined) throw new Error('CRL signed with an unsupported algorithm');
  const caKey = createPublicKey(new X509Certificate(caPem).publicKey.export({ format: 'pem', type: 'spki' }));
  if (!verify(hash, top.body.subarray(tbs.start, tbs.end), caKey, sig.body.subarray(1))) throw new Error('the CRL is not signed by the network CA');
  const parts = children(tbs.body);
  let i = parts[0]?.tag === 0x02 ? 1 : 0; // version
  i += 2; // signature algorithm, issuer
  const thisUpdate = parts[i++];
  if (!thisUpdate || (thisUpdate.tag !== 0x17 && thisUpdate.tag !== 0x18)) throw new Error('CRL: no thisUpdate');
  let nextUpdate: string | undefined;
  if (parts[i] && (parts[i]!.tag === 0x17 || parts[i]!.tag === 0x18)) nextUpdate = time(parts[i++]!);
  const revoked = new Set<string>();
  if (parts[i]?.tag === 0x30) for (const entry of children(parts[i]!.body)) revoked.add(serialKey(children(entry.body)[0]!.body.toString('hex')));
  return { revoked, thisUpdate: time(thisUpdate), ...(nextUpdate ? { nextUpdate } : {}) };
}

/** A certificate as the TLS layer gives it (DER) → its serial number as the CRL holds it. */
export function certificateSerial(raw: Buffer): string {
  return serialKey(new X509Certificate(raw).serialNumber);
}

export interface RevocationOptions {
  mode: RevocationMode;
  /** The CRL file or URL; required unless mode is off. */
  source?: CrlSource;
  /** The network CA (PEM) that must have signed the CRL. */
  ca: string;
  /** How often the CRL is read again. */
  refreshMs: number;
  log: Logger;
}

/** Why a certificate is refused, or undefined when it may connect. */
export type RevocationVerdict = string | undefined;

/**
 * The CRL as last read, and the verdict on a peer certificate. Emits `changed` after every
 * refresh, so open connections are checked again (a peer revoked later is cut off within the
 * refresh period). A CRL that cannot be read keeps the last good one.
 */
export class RevocationList extends EventEmitter {
  private crl?: Crl;
  private lastError = '';
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: RevocationOptions) {
    super();
  }

  get mode(): RevocationMode {
    return this.o.mode;
  }

  /** Reads the CRL now; errors are kept (and logged), never thrown. */
  async refresh(): Promise<void> {
    if (this.o.mode === 'off' || !this.o.source) return;
    try {
      this.crl = parseCrl(await this.o.source.read(), this.o.ca);
      this.lastError = '';
      this.o.log.debug({ crl: this.o.source.name, revoked: this.crl.revoked.size }, 'CRL loaded');
    } catch (err) {
      this.lastError = (err as Error).message;
      this.o.log[this.crl ? 'warn' : 'error']({ crl: this.o.source.name, err: this.lastError, mode: this.o.mode }, this.crl ? 'CRL not refreshed: keeping the last good one' : this.o.mode === 'hard-fail' ? 'no valid CRL: every peer connection is refused (hard-fail)' : 'no valid CRL: peers are allowed (soft-fail)');
    }
    this.emit('changed');
  }

  async start(): Promise<void> {
    if (this.o.mode === 'off') return;
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.o.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Why this certificate (DER) may not connect now, or undefined. */
  check(raw: Buffer | undefined): RevocationVerdict {
    if (this.o.mode === 'off') return undefined;
    if (!this.crl) return this.o.mode === 'hard-fail' ? `no valid CRL is loaded (${this.lastError || 'not read yet'}) and revocation is hard-fail` : undefined;
    if (!raw) return undefined;
    const serial = certificateSerial(raw);
    return this.crl.revoked.has(serial) ? `certificate ${serial} is revoked by the network CA` : undefined;
  }
}
