import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { loadScripts, type ScriptCalls } from './scripts.ts';

/** What `renewLease` and `releaseLease` answer (see their headers in ./scripts/). */
export const LeaseCode = { Done: 1, NotHeld: 0 } as const;

const SCRIPTS = { renewLease: 1, releaseLease: 1 } as const;

/** A duty only one process of a fleet performs at a time. */
export interface LeasedDuty {
  /** This process now holds the lease: begin the duty. */
  acquired(): void | Promise<void>;
  /** The lease is gone (taken over, expired while Redis was away, or stopping): end the duty now. */
  lost(): void | Promise<void>;
}

export interface LeaseOptions {
  redis: Redis;
  /** The lease's key, e.g. `<prefix>:lease:peer-bridge:bank-b`. One key: one slot on a cluster. */
  key: string;
  /**
   * How long a lease lasts without renewal. A holder killed with kill -9 is replaced after at
   * most ttlMs + everyMs.
   * @defaultValue 6000
   */
  ttlMs?: number;
  /**
   * How often the holder renews and the others try to take it.
   * @defaultValue 1000
   */
  everyMs?: number;
  log: Logger;
}

/**
 * A lease on a singleton duty (DESIGN §9): `SET key token NX PX ttl` takes it, a named script
 * renews it only while the value is still this process's token, and a clean stop releases it.
 * The holder gives the duty up as soon as a renewal says it is not the holder any more, or when
 * it could not renew for two thirds of the time to live (Redis unreachable: another process may
 * hold it by the time Redis answers again), so two processes never both believe they hold it
 * for longer than a renewal round.
 *
 * @example
 * const lease = new Lease({ redis, key: `${prefix}:lease:tmp-sweep`, log });
 * lease.start({ acquired: () => startSweeping(), lost: () => stopSweeping() });
 */
export class Lease {
  /** This process's token: host, pid and a random part, so an operator can see who holds it. */
  readonly token = `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
  private readonly ttlMs: number;
  private readonly everyMs: number;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;
  private timer?: NodeJS.Timeout;
  private duty?: LeasedDuty;
  private holding = false;
  private lastRenewed = 0;
  private busy = false;

  constructor(private readonly o: LeaseOptions) {
    this.ttlMs = o.ttlMs ?? 6000;
    this.everyMs = o.everyMs ?? 1000;
    this.scripts = loadScripts(o.redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  /** True while this process holds the lease. */
  get held(): boolean {
    return this.holding;
  }

  /** Tries now and then every `everyMs`; calls `duty` when the lease is taken or lost. */
  start(duty: LeasedDuty): void {
    this.duty = duty;
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.everyMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.busy || !this.duty) return;
    this.busy = true;
    try {
      if (this.holding) {
        const renewed = (await this.scripts.renewLease([this.o.key], this.token, this.ttlMs)) === LeaseCode.Done;
        if (renewed) this.lastRenewed = Date.now();
        else await this.lose('taken over by another process');
      } else if ((await this.o.redis.set(this.o.key, this.token, 'PX', this.ttlMs, 'NX')) === 'OK') {
        this.holding = true;
        this.lastRenewed = Date.now();
        this.o.log.info({ lease: this.o.key }, 'lease taken: this process now performs the duty');
        await this.duty.acquired();
      }
    } catch (err) {
      if (this.holding && Date.now() - this.lastRenewed > (this.ttlMs * 2) / 3) await this.lose(`not renewed: ${(err as Error).message}`);
    } finally {
      this.busy = false;
    }
  }

  private async lose(reason: string): Promise<void> {
    if (!this.holding) return;
    this.holding = false;
    this.o.log.warn({ lease: this.o.key, reason }, 'lease lost: this process stops the duty');
    await Promise.resolve(this.duty?.lost()).catch((err: Error) => this.o.log.error({ lease: this.o.key, err: err.message }, 'stopping a leased duty failed'));
  }

  /** Stops trying; a held lease ends its duty and is released, so another process takes it at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const was = this.holding;
    await this.lose('stopping');
    this.duty = undefined;
    if (was) await this.scripts.releaseLease([this.o.key], this.token).catch(() => undefined);
  }
}

/** The key of the lease on `duty`: `<prefix>:lease:<duty>`. */
export function leaseKey(prefix: string, duty: string): string {
  return `${prefix}:lease:${duty}`;
}
