import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { SwitchboardError } from '../core/errors.ts';

/** An outbound proxy for peer connections (network.proxy). */
export interface ProxyConfig {
  /** `http://host:port` (HTTP CONNECT) or `socks5://host:port` (SOCKS5, RFC 1928). */
  url: string;
  /** Proxy user: Basic Proxy-Authorization for HTTP, username/password (RFC 1929) for SOCKS5. */
  username?: string;
  /** The proxy user's password (write `${VAR}` in the config to keep it out of the file). */
  password?: string;
}

/** The proxy answered but would not open the tunnel (HTTP 407/403…, a SOCKS failure): retry later. */
export class ProxyRefused extends SwitchboardError {
  constructor(readonly proxy: string, readonly target: string, readonly reason: string) {
    super('proxy_refused', `proxy ${proxy} refused CONNECT to ${target}: ${reason}`, 502, true);
  }
}

/** The proxy as shown in logs and states: scheme, host and port, never its credentials. */
export function proxyLabel(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}`;
}

/** How long the proxy may take to answer, from the TCP connect to the end of its handshake. */
const HANDSHAKE_MS = 15_000;

/** Reads exact byte counts off a socket during a handshake, then gives back what it read too far. */
class HandshakeReader {
  private buffered = Buffer.alloc(0);
  private waiter?: () => void;
  private failure?: Error;
  private readonly onData = (d: Buffer) => { this.buffered = Buffer.concat([this.buffered, d]); this.waiter?.(); };
  private readonly onEnd = () => { this.failure ??= new Error('the proxy closed the connection during the handshake'); this.waiter?.(); };
  private readonly onError = (err: Error) => { this.failure ??= err; this.waiter?.(); };

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData).on('end', this.onEnd).on('close', this.onEnd).on('error', this.onError);
  }

  private async until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => { this.waiter = r; });
      this.waiter = undefined;
    }
  }

  async bytes(n: number): Promise<Buffer> {
    await this.until(() => this.buffered.length >= n);
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** Everything up to and including `marker` (an HTTP header block). */
  async through(marker: string, max = 16_384): Promise<string> {
    await this.until(() => this.buffered.includes(marker) || this.buffered.length > max);
    const end = this.buffered.indexOf(marker);
    if (end < 0) throw new Error(`the proxy's answer has no end of headers within ${max} bytes`);
    const out = this.buffered.subarray(0, end + marker.length).toString('latin1');
    this.buffered = this.buffered.subarray(end + marker.length);
    return out;
  }

  /** Stops listening; bytes past the handshake (the tunnel's first bytes) go back into the socket. */
  release(): void {
    this.socket.off('data', this.onData).off('end', this.onEnd).off('close', this.onEnd).off('error', this.onError);
    this.socket.pause();
    if (this.buffered.length) this.socket.unshift(this.buffered);
  }
}

const hostPort = (host: string, port: number) => `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;

async function httpConnect(socket: net.Socket, read: HandshakeReader, proxy: ProxyConfig, target: string): Promise<void> {
  const auth = proxy.username !== undefined ? `Proxy-Authorization: Basic ${Buffer.from(`${proxy.username}:${proxy.password ?? ''}`).toString('base64')}\r\n` : '';
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
  const head = await read.through('\r\n\r\n');
  const status = /^HTTP\/1\.[01] (\d{3}) ?([^\r\n]*)/.exec(head);
  if (!status) throw new ProxyRefused(proxyLabel(proxy.url), target, `not an HTTP answer (${JSON.stringify(head.slice(0, 40))})`);
  if (!status[1]!.startsWith('2')) throw new ProxyRefused(proxyLabel(proxy.url), target, `${status[1]} ${status[2]}`.trim());
}

/** SOCKS5 reply codes (RFC 1928 §6), as a user reads them in the bridge's state. */
const SOCKS_REPLIES: Record<number, string> = {
  1: 'general SOCKS server failure', 2: 'connection not allowed by ruleset', 3: 'network unreachable', 4: 'host unreachable',
  5: 'connection refused', 6: 'TTL expired', 7: 'command not supported', 8: 'address type not supported',
};

async function socks5Connect(socket: net.Socket, read: HandshakeReader, proxy: ProxyConfig, host: string, port: number, target: string): Promise<void> {
  const refused = (reason: string) => new ProxyRefused(proxyLabel(proxy.url), target, reason);
  const withAuth = proxy.username !== undefined;
  // Greeting: offer "no authentication", and username/password when we have one.
  socket.write(Buffer.from(withAuth ? [5, 2, 0, 2] : [5, 1, 0]));
  const [version, method] = await read.bytes(2);
  if (version !== 5) throw refused(`not a SOCKS5 server (version ${version})`);
  if (method === 0xff) throw refused(withAuth ? 'no acceptable authentication method' : 'the proxy requires authentication (no username configured)');
  if (method === 2) {
    if (!withAuth) throw refused('the proxy requires username/password authentication');
    const user = Buffer.from(proxy.username!);
    const pass = Buffer.from(proxy.password ?? '');
    if (user.length > 255 || pass.length > 255) throw refused('username or password longer than 255 bytes');
    socket.write(Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]));
    const [, status] = await read.bytes(2);
    if (status !== 0) throw refused('username/password rejected');
  } else if (method !== 0) {
    throw refused(`the proxy chose an unsupported authentication method (${method})`);
  }
  // CONNECT by name: the proxy resolves the peer's host, as a corporate network usually requires.
  const addr = net.isIPv4(host) ? Buffer.from([1, ...host.split('.').map(Number)])
    : net.isIPv6(host) ? Buffer.concat([Buffer.from([4]), ipv6Bytes(host)])
    : Buffer.concat([Buffer.from([3, Buffer.byteLength(host)]), Buffer.from(host)]);
  socket.write(Buffer.concat([Buffer.from([5, 1, 0]), addr, Buffer.from([port >> 8, port & 0xff])]));
  const [, rep, , atyp] = await read.bytes(4);
  if (rep !== 0) throw refused(SOCKS_REPLIES[rep!] ?? `SOCKS reply ${rep}`);
  // The bound address (unused), then the tunnel is open.
  const len = atyp === 1 ? 4 : atyp === 4 ? 16 : (await read.bytes(1))[0]!;
  await read.bytes(len + 2);
}

function ipv6Bytes(host: string): Buffer {
  const [head, tail] = host.split('::') as [string, string | undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = words(tail);
  const all = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/**
 * A TCP connection to `host:port` through the proxy: connects to the proxy, asks it for the tunnel
 * (HTTP CONNECT or SOCKS5 CONNECT) and resolves with the socket once the tunnel is open. A proxy
 * that says no rejects with ProxyRefused naming the proxy, the target and its answer.
 */
export async function dialThroughProxy(proxy: ProxyConfig, host: string, port: number): Promise<net.Socket> {
  const u = new URL(proxy.url);
  const socks = u.protocol === 'socks5:' || u.protocol === 'socks5h:';
  if (!socks && u.protocol !== 'http:') throw new Error(`unsupported proxy scheme ${u.protocol} (expected http: or socks5:)`);
  const target = hostPort(host, port);
  const socket = net.connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (socks ? 1080 : 3128)) });
  const read = new HandshakeReader(socket);
  socket.setTimeout(HANDSHAKE_MS, () => socket.destroy(new ProxyRefused(proxyLabel(proxy.url), target, `no answer within ${HANDSHAKE_MS / 1000} s`)));
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new Error(`proxy ${proxyLabel(proxy.url)} unreachable: ${err.message}`)));
    });
    if (socks) await socks5Connect(socket, read, proxy, host, port, target);
    else await httpConnect(socket, read, proxy, target);
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    socket.setTimeout(0);
  }
  read.release();
  return socket;
}

/** rhea's connect hook: `(port, host, options, connected) => socket`, the socket returned at once. */
export type DialFn = (port: number, host: string, options: tls.ConnectionOptions, connected: () => void) => Duplex;

/**
 * rhea wants its socket synchronously; the tunnel takes a handshake first. This stands in for the
 * socket: writes wait for the TLS socket, reads and errors (a proxy's refusal among them) come
 * from it, so rhea sees one stream and handles a refusal like any failed connect (reconnect with
 * backoff, `disconnected` with the reason).
 */
class TunnelledSocket extends Duplex {
  private secure?: tls.TLSSocket;
  private readonly attached: Promise<tls.TLSSocket>;
  private attach!: (s: tls.TLSSocket) => void;
  readonly encrypted = true;

  constructor() {
    super();
    this.attached = new Promise((r) => { this.attach = r; });
  }

  use(secure: tls.TLSSocket): void {
    this.secure = secure;
    secure.on('data', (d: Buffer) => { if (!this.push(d)) secure.pause(); });
    secure.on('end', () => this.push(null));
    secure.on('error', (err) => this.destroy(err));
    secure.on('close', () => { if (!this.destroyed) this.destroy(); });
    this.attach(secure);
  }

  get authorized(): boolean { return this.secure?.authorized ?? false; }
  getPeerCertificate(detailed?: boolean): tls.PeerCertificate | object { return this.secure?.getPeerCertificate(detailed) ?? {}; }
  setNoDelay(noDelay?: boolean): this { this.secure?.setNoDelay(noDelay); return this; }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    void this.attached.then((s) => s.write(chunk, cb));
  }

  override _read(): void { this.secure?.resume(); }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.secure) this.secure.end(cb);
    else cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.secure?.destroy();
    cb(err);
  }
}

/**
 * A connect hook for rhea that opens the TLS connection through the proxy: the same TLS options
 * rhea would use (key, cert, ca, checkServerIdentity), on a socket tunnelled to the peer.
 */
export function proxiedTlsDial(proxy: ProxyConfig): DialFn {
  return (port, host, options, connected) => {
    const out = new TunnelledSocket();
    dialThroughProxy(proxy, host, port).then((raw) => {
      if (out.destroyed) { raw.destroy(); return; }
      out.use(tls.connect({ ...options, host, port, socket: raw }, connected));
    }, (err: Error) => out.destroy(err));
    return out;
  };
}
