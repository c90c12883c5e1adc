/**
 * In-process gateways wired to a test RabbitMQ as the broker `legacy`, shared by the RabbitMQ
 * test files (round trips and backpressure; outages). Each gateway has its own Redis prefix, so
 * its queues are its own, and keeps its recent log in memory for failure messages.
 */
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { startGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { api, testConfig, waitFor } from './gateway.ts';
import { GatewayFleet, prefixFor } from './fleet.ts';
import type { TestRabbit } from './rabbitmq.ts';
import type { TestRedis } from './servers.ts';

export const PERMISSIONS = [
  { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'mq:legacy/**', verbs: ['send'] }, { address: 'flow:**', verbs: ['start', 'send', 'browse'] }] },
  { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
];

export const QUEUES = { maxAttempts: 3, backoff: '100ms', lockTimeout: '5s', stalledCheck: '1s' };

export async function readyz(base: string): Promise<{ status: number; body: any }> {
  const r = await api(base, 'GET', '/readyz');
  return { status: r.status, body: r.body };
}

export interface MqParts {
  redis: TestRedis;
  rabbit: TestRabbit;
  /** One flows folder per process (the loader's resolve hook is installed once). */
  flowsDir: string;
}

export class MqGateways {
  readonly fleet: GatewayFleet;
  private readonly logs = new Map<Gateway, string[]>();

  constructor(private readonly parts: () => MqParts) {
    this.fleet = new GatewayFleet(() => parts().redis.url);
  }

  brokers(replies = true) {
    return { legacy: { url: this.parts().rabbit.url, addressFormat: 'rabbitmq', ...(replies ? { replyQueue: 'replies' } : {}), maxAttempts: 3, sendTimeout: '3s' } };
  }

  /** The recent log lines of a gateway started here (without the noisy per-send failures). */
  recentLog(g: Gateway, n = 40): string {
    return (this.logs.get(g) ?? []).filter((l) => !l.includes('"msg":"send failed"')).slice(-n).join('\n');
  }

  /**
   * A gateway stopped by `fleet.stopAll()`. Only one gateway should serve the broker's reply
   * queue: a second consumer of it would take replies meant for flows it does not have.
   */
  async start(extra: Record<string, unknown>, replies = false): Promise<Gateway> {
    const { redis, flowsDir } = this.parts();
    const raw = await testConfig(redis.url, {
      brokers: this.brokers(replies),
      queues: QUEUES,
      permissions: PERMISSIONS,
      flows: { dir: flowsDir, concurrency: 20, lockTimeout: '5s', stalledCheck: '1s' },
      ...extra,
      redis: { url: redis.url, prefix: prefixFor('mq') },
    });
    const config = parseConfig(stringify(raw), 'test-config.yaml', {});
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n')) if (line) lines.push(line);
        if (lines.length > 2000) lines.splice(0, lines.length - 1000);
        done();
      },
    });
    const g = await startGateway({ config, log: createLogger(process.env.SB_TEST_LOG ?? 'info', sink) });
    this.fleet.track(g);
    this.logs.set(g, lines);
    await waitFor(async () => (await readyz(g.url)).status === 200, 60_000, 'the gateway to be ready (broker connected)');
    return g;
  }
}
