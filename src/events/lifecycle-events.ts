import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { isRetryable, SwitchboardError } from '../core/errors.ts';
import { LifecycleJournal } from '../core/event-journal.ts';
import type { EventJournal, LifecycleEvent } from '../core/lifecycle.ts';
import type { Metrics } from '../core/metrics.ts';
import { Outbox, Undeliverable } from '../core/outbox.ts';
import type { Router } from '../core/router.ts';
import { systemCaller } from '../core/system-message.ts';
import { buildCloudEvent, defaultMode, eventMessage, isEventId, type CloudEvent, type ContentMode } from './cloudevent.ts';
import { matchesType, parseTypePattern, type TypePattern } from './event-types.ts';

/** One `events[]` entry of the config: which types go where, and how. */
export interface EventMapping {
  types: string[];
  to: string;
  /** Defaults to binary for `mq:` addresses, structured elsewhere. */
  mode?: ContentMode;
}

export interface LifecycleEventsOptions {
  redis: Redis;
  prefix: string;
  shards?: number;
  router: Router;
  /** The gateway as CloudEvents `source`: its network identity, else its http.baseUrl. */
  source: string;
  mappings: EventMapping[];
  /** How long an event id is remembered, so a second report of the same change is dropped. */
  dedupTtlMs: number;
  metrics: Metrics;
  log: Logger;
}

/** Retries of an event whose destination is down: quick at first, then once a minute, for a week. */
const backoff = (attempt: number): number => Math.min(60_000, 500 * 2 ** Math.min(attempt, 10));
const ATTEMPTS = 10_080;

/**
 * Lifecycle events as CloudEvents, routed by the `events` config (DESIGN §11). Every event ends
 * up in a durable outbox (store and forward) that hands it to the router as the gateway itself,
 * so the pipeline, the destination's dedup and its durability apply as to any message; a
 * destination that is down gets it later, retried, never dropped. It gets there one of three ways:
 * - `journal`: stores pass a change's events to the script that makes the change, which
 *   journals them atomically with it; the journal is drained into the outbox (never lost);
 * - `record`: stored and awaited, for changes outside our scripts that can wait for it (a
 *   broker's reject) or be derived from a durable trace (BullMQ's failed sets, a replay intent);
 * - `report`: stored in the background right after the change (peer up and down, observations
 *   rather than stored changes): never throws, never waits, lost only if the process dies in that instant.
 */
export class LifecycleEvents {
  private readonly routes: { patterns: TypePattern[]; to: string; mode: ContentMode }[];
  private readonly outbox?: Outbox;
  private readonly recorder?: LifecycleJournal;
  /** Writes to the outbox not yet finished, so a stop waits for what was already reported. */
  private readonly pending = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly o: LifecycleEventsOptions) {
    this.routes = o.mappings.map((m) => ({ patterns: m.types.map(parseTypePattern), to: m.to, mode: m.mode ?? defaultMode(m.to) }));
    if (this.routes.length === 0) return;
    this.outbox = new Outbox({
      name: 'events-out', redis: o.redis, prefix: o.prefix, shards: o.shards ?? 1, label: 'events', metrics: o.metrics, log: o.log,
      maxAttempts: ATTEMPTS, backoffStrategy: backoff, dedupTtlMs: o.dedupTtlMs, concurrency: 10,
      // Delivered once every transport is registered (start), not while the gateway is half up.
      deliverHere: false,
      deliver: async (m) => {
        try {
          await o.router.send(m, systemCaller('system'));
        } catch (err) {
          // A destination that refuses this message as it is (an address the config no longer
          // serves) will never take it; anything else (down, full) is retried.
          if (err instanceof SwitchboardError && !isRetryable(err) && err.status < 500) throw new Undeliverable(err.message);
          throw err;
        }
      },
    });
    const outbox = this.outbox;
    this.recorder = new LifecycleJournal({
      redis: o.redis, prefix: o.prefix, shards: o.shards ?? 1, log: o.log,
      // The id, time and data are fixed here, before the change: a drain repeated after a crash sends the same event.
      encode: (events) => events.filter((e) => this.targets(e).length > 0).map((e): [string, string] => {
        const ce = buildCloudEvent(e, o.source);
        return [ce.id, JSON.stringify(ce)];
      }),
      forward: async (_id, json) => {
        const event = JSON.parse(json) as CloudEvent;
        // Routed by the mappings of the process that drains it (after a restart: the new config's).
        for (const t of this.routes.filter((r) => r.patterns.some((p) => matchesType(p, event.type)))) await outbox.send(eventMessage(event, t.to, t.mode));
      },
    });
  }

  /**
   * Where stores record events atomically with their changes (flows, tasks, permission rules);
   * undefined when no `events:` mapping is configured, so those stores do no extra work.
   */
  get journal(): EventJournal | undefined {
    return this.recorder;
  }

  /** The mappings an event goes to. */
  private targets(e: LifecycleEvent): { to: string; mode: ContentMode }[] {
    // An event about an event (one dead-lettered at a consumer that refuses them) would make
    // another, to the same consumer, without end: those stay in the dead letters and the metrics.
    if (isEventId(e.data.messageId)) return [];
    return this.routes.filter((r) => r.patterns.some((p) => matchesType(p, e.type)));
  }

  /** Checks every destination is served here (a clear error at start otherwise), then starts delivering. */
  start(): void {
    for (const r of this.routes) this.o.router.check(r.to);
    this.outbox?.startDelivering();
    this.recorder?.start();
  }

  /** Reports an event: stored for each destination whose types match; never throws. */
  readonly report = (e: LifecycleEvent): void => {
    if (this.closed || !this.outbox) return;
    const targets = this.targets(e);
    if (targets.length === 0) return;
    const event = buildCloudEvent(e, this.o.source);
    const outbox = this.outbox;
    const write = (async () => {
      for (const t of targets) {
        const message = eventMessage(event, t.to, t.mode);
        // Redis may blink; the change this event reports is already made, so try a few times.
        for (let attempt = 1; ; attempt++) {
          try {
            await outbox.send(message);
            break;
          } catch (err) {
            if (attempt >= 5 || this.closed) {
              this.o.log.error({ eventId: event.id, type: e.type, to: t.to, err: (err as Error).message }, 'lifecycle event could not be stored');
              break;
            }
            await new Promise((r) => setTimeout(r, 200 * attempt));
          }
        }
      }
    })();
    this.pending.add(write);
    void write.finally(() => this.pending.delete(write));
  };

  /**
   * Stores an event for each destination whose types match and resolves once every copy is
   * stored (at once when none matches); rejects if one could not be: the caller retries, and the
   * copies already stored deduplicate the retry (the event id is fixed by its key).
   */
  readonly record = async (e: LifecycleEvent): Promise<void> => {
    const targets = this.targets(e);
    if (targets.length === 0 || !this.outbox) return;
    if (this.closed) throw new Error('lifecycle events are closed (the gateway is stopping)');
    const event = buildCloudEvent(e, this.o.source);
    for (const t of targets) await this.outbox.send(eventMessage(event, t.to, t.mode));
  };

  /** Whether some mapping wants events of this type (a reporter that must do work to find them asks first). */
  wants(type: string): boolean {
    return this.routes.some((r) => r.patterns.some((p) => matchesType(p, type)));
  }

  /** Waits for events being stored, then stops delivering (undelivered ones wait in Redis). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    this.closed = true;
    await this.recorder?.close();
    await this.outbox?.close();
  }
}
