import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

/** One readiness check as /readyz shows it (the gateway's shape: `{ok, detail?}`). */
export interface Check {
  ok: boolean;
  detail?: string;
}

export interface FloatHttpOptions {
  host: string;
  port: number;
  redis: Redis;
  registry: Registry;
  /** True while the tunnel listener accepts connections. */
  tunnelListening(): boolean;
  /** True while a gateway holds the tunnel (has handed over its key). */
  tunnelHeld(): boolean;
  /** True while the peer listener is open (only after a gateway handed over its key). */
  peerListenerOpen(): boolean;
  log: Logger;
}

/** How long /readyz waits for Redis to answer a PING. */
const PING_MS = 2000;

/**
 * The float's operations port: `/healthz` (the process answers), `/readyz` (its Redis answers and
 * its tunnel listener is up; says whether a gateway holds the tunnel) and `/metrics`. No other
 * path, no method but GET, no body read: nothing here changes the float.
 */
export class FloatHttp {
  private server?: Server;

  constructor(private readonly o: FloatHttpOptions) {}

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.o.port;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.o.port, this.o.host, () => { server.off('error', reject); resolve(); });
    });
    this.o.log.info({ host: this.o.host, port: this.port }, 'float HTTP port listening (/healthz, /readyz, /metrics)');
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: { code: 'method_not_allowed', message: `the float's HTTP port answers GET only, not ${req.method}` } }, { allow: 'GET, HEAD' });
      if (path === '/healthz') return json(res, 200, { status: 'ok' });
      if (path === '/readyz') return await this.readyz(res);
      if (path === '/metrics') {
        const text = await this.o.registry.metrics();
        res.writeHead(200, { 'content-type': this.o.registry.contentType });
        res.end(text);
        return;
      }
      json(res, 404, { error: { code: 'not_found', message: `the float's HTTP port has /healthz, /readyz and /metrics only, not ${path}` } });
    } catch (err) {
      this.o.log.error({ err: (err as Error).message, path }, 'float HTTP request failed');
      if (!res.headersSent) json(res, 503, { error: { code: 'unavailable', message: 'the float could not answer now' } }, { 'retry-after': '5' });
      else res.destroy();
    }
  }

  private async readyz(res: ServerResponse): Promise<void> {
    const held = this.o.tunnelHeld();
    const checks: Record<string, Check> = {
      redis: await this.ping(),
      tunnelListener: this.o.tunnelListening() ? { ok: true } : { ok: false, detail: 'the tunnel listener is not listening' },
      // Not a condition of readiness: a float without its gateway still takes what peers send.
      tunnel: { ok: true, detail: held ? 'held by the gateway' : 'no gateway connected: inbound messages wait on the float' },
      peerListener: { ok: true, detail: this.o.peerListenerOpen() ? 'open' : 'closed until a gateway hands over its peer key' },
    };
    const ready = checks.redis!.ok && checks.tunnelListener!.ok;
    json(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', tunnelHeld: held, checks }, ready ? {} : { 'retry-after': '5' });
  }

  private async ping(): Promise<Check> {
    if (this.o.redis.status !== 'ready') return { ok: false, detail: `connection is ${this.o.redis.status}` };
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([this.o.redis.ping(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer to PING within ${PING_MS} ms`)), PING_MS); })]);
      return { ok: true };
    } catch (err) {
      return { ok: false, detail: (err as Error).message };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); });
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}
