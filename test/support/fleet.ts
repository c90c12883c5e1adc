import type { Gateway } from '../../src/gateway.ts';
import { spawnGateway, startTestGateway, type GatewayProcess } from './gateway.ts';

// The gateways of a crash or shutdown test: in-process ones and `switchboard start` processes on
// one Redis, all stopped at the end however the test ended.

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A fresh Redis key prefix, so each test's queues are its own. */
export const prefixFor = (name: string) => `${name}${Math.random().toString(36).slice(2, 8)}`;

/** The last warnings and errors a spawned gateway logged (pino levels warn, error, fatal). */
export function logWarnings(p: GatewayProcess, lines = 10): string {
  return p.output().split('\n').filter((l) => /"level":(40|50|60)/.test(l)).slice(-lines).join('\n').slice(0, 4000);
}

export class GatewayFleet {
  readonly gateways: Gateway[] = [];
  readonly processes: GatewayProcess[] = [];

  /** @param redisUrl the Redis every gateway of the fleet uses (read when a gateway starts) */
  constructor(private readonly redisUrl: () => string) {}

  /** An in-process gateway on `prefix`, through the real config parser. */
  async start(prefix: string, extra: Record<string, unknown> = {}): Promise<Gateway> {
    const url = this.redisUrl();
    const g = await startTestGateway(url, { ...extra, redis: { url, prefix } });
    this.gateways.push(g);
    return g;
  }

  /** Stops `g` with the rest (a gateway the test started its own way, e.g. to capture its log). */
  track(g: Gateway): Gateway {
    this.gateways.push(g);
    return g;
  }

  /** A gateway in its own process (`switchboard start`) on `prefix`, to kill -9 or SIGTERM. */
  async spawn(prefix: string, extra: Record<string, unknown> = {}): Promise<GatewayProcess> {
    const p = await spawnGateway(this.redisUrl(), extra, prefix);
    this.processes.push(p);
    return p;
  }

  /**
   * Kills every process (SIGKILL) and stops every in-process gateway. A gateway whose Redis is
   * gone waits for it forever (commands queue until a reconnect): each stop is bounded, so a
   * failed test still gets to stop Redis and end.
   */
  async stopAll(stopTimeoutMs = 15_000): Promise<void> {
    for (const p of this.processes) await p.kill('SIGKILL').catch(() => {});
    for (const g of this.gateways.reverse()) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([g.stop().catch(() => {}), new Promise((r) => { timer = setTimeout(r, stopTimeoutMs); })]);
      clearTimeout(timer);
    }
  }
}
