import { Cluster, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { SendResult } from '../core/endpoint.ts';
import { DependencyUnavailable, SwitchboardError } from '../core/errors.ts';
import { CLIENT_DOORS, type SendInput, type SendInterceptor, type SendNext } from '../core/pipeline.ts';

/** Redis may evict keys under memory pressure: queued messages would vanish without a trace. */
export class EvictingRedis extends SwitchboardError {
  constructor(readonly node: string, readonly policy: string) {
    super('redis_can_evict', `Redis ${node} has maxmemory-policy ${policy}, which evicts keys (queued messages would be lost without a trace) when memory runs out: set \`CONFIG SET maxmemory-policy noeviction\` (and \`maxmemory-policy noeviction\` in redis.conf so it survives a restart), then start again`, 500);
  }
}

export interface MemoryGuardOptions {
  /** The gateway's connection (a cluster client is checked node by node). */
  redis: Redis;
  /** New inbound work is refused above this fraction of maxmemory. @defaultValue 0.9 */
  limit?: number;
  /** Accepted again below `limit - resumeMargin`, so it does not flap at the edge. @defaultValue 0.05 */
  resumeMargin?: number;
  /** How often INFO memory is read. @defaultValue 1000 */
  intervalMs?: number;
  log: Logger;
}

interface NodeMemory {
  node: string;
  used: number;
  max: number;
  policy: string;
}

/**
 * DESIGN §9: when Redis nears its memory limit, new inbound work is refused with a clear, retryable
 * error (HTTP 503 + Retry-After, AMQP: the door releases or holds credit), never evicted or dropped,
 * and accepted again by itself once memory frees. Only messages from client doors are refused:
 * routes, flows and the gateway's own notices move work already accepted, and stopping them would
 * keep the memory full. At start it refuses a Redis whose maxmemory-policy can evict.
 */
export class MemoryGuard implements SendInterceptor {
  readonly name = 'memory-guard';
  private readonly limit: number;
  private readonly resumeAt: number;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  /** Set while refusing: the fullest node, for the error message. */
  private full: NodeMemory | undefined;

  constructor(private readonly options: MemoryGuardOptions) {
    this.limit = options.limit ?? 0.9;
    this.resumeAt = this.limit - (options.resumeMargin ?? 0.05);
    this.intervalMs = options.intervalMs ?? 1000;
  }

  /** Checks the eviction policy of every node (throws EvictingRedis), then polls in the background. */
  async start(): Promise<void> {
    const nodes = await this.read();
    for (const n of nodes) if (n.policy !== 'noeviction') throw new EvictingRedis(n.node, n.policy);
    this.update(nodes);
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** True while new inbound work is refused. */
  get refusing(): boolean {
    return this.full !== undefined;
  }

  send(input: SendInput, next: SendNext): Promise<SendResult> {
    const full = this.full;
    if (full && CLIENT_DOORS.has(input.caller?.door)) {
      throw new DependencyUnavailable('redis', `its memory is nearly full (${mb(full.used)} of maxmemory ${mb(full.max)} on ${full.node}, limit ${Math.round(this.limit * 100)}%): new messages are refused until queues are drained; nothing was stored, try again later`);
    }
    return next(input);
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      this.update(await this.read());
    } catch {
      // Redis unreachable: the doors already answer 503 for that; keep the last known state.
    } finally {
      this.polling = false;
    }
  }

  private update(nodes: NodeMemory[]): void {
    const fullest = nodes.filter((n) => n.max > 0).sort((a, b) => b.used / b.max - a.used / a.max)[0];
    const ratio = fullest ? fullest.used / fullest.max : 0;
    if (!this.full && fullest && ratio >= this.limit) {
      this.full = fullest;
      this.options.log.warn({ node: fullest.node, used: fullest.used, maxmemory: fullest.max, limit: this.limit }, 'redis memory nearly full: refusing new inbound messages until it frees');
    } else if (this.full && ratio < this.resumeAt) {
      this.full = undefined;
      this.options.log.info({ used: fullest?.used, maxmemory: fullest?.max }, 'redis memory freed: accepting new inbound messages again');
    } else if (this.full && fullest) {
      this.full = fullest;
    }
  }

  private async read(): Promise<NodeMemory[]> {
    const client = this.options.redis as unknown as Redis | Cluster;
    const nodes: Redis[] = client instanceof Cluster ? client.nodes('master') : [client];
    return Promise.all(nodes.map(async (node) => {
      const info = await node.info('memory');
      const field = (name: string) => new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(info)?.[1] ?? '';
      return { node: `${node.options.host ?? '?'}:${node.options.port ?? '?'}`, used: Number(field('used_memory')), max: Number(field('maxmemory')), policy: field('maxmemory_policy') };
    }));
  }
}

function mb(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MB`;
}
