import type { Logger } from 'pino';
import type { Subscription } from './endpoint.ts';
import type { Caller } from './pipeline.ts';
import type { Router } from './router.ts';

export interface RouteDefinition {
  from: string;
  to: string;
  /** Messages in flight at once: the route's credit at its source. */
  concurrency: number;
}

/**
 * A route moves messages from a source to a destination (Camel's route; with the destination's
 * dedup, an idempotent consumer). The source is acknowledged only after the destination
 * durably accepted, and at most `concurrency` messages are in flight, so a slow or stopped
 * destination makes the route stop pulling and the messages wait at the source.
 */
export class Route {
  private subscription?: Subscription;
  /** A route acts as itself: it may consume its source and send to its destination because the config says so, nowhere else. */
  readonly caller: Caller;

  constructor(
    readonly definition: RouteDefinition,
    private readonly router: Router,
    private readonly log: Logger,
  ) {
    this.caller = { principal: { kind: 'route', name: Route.principalName(definition) }, door: 'route' };
  }

  /** `queue:in -> queue:out`: the route's principal name, in the audit trail and in its deployment grant. */
  static principalName(d: Pick<RouteDefinition, 'from' | 'to'>): string {
    return `${d.from} -> ${d.to}`;
  }

  /** Checks both ends resolve to an endpoint; throws a clear error otherwise. */
  validate(): void {
    this.router.check(this.definition.from);
    this.router.check(this.definition.to);
  }

  async start(): Promise<void> {
    const { from, to, concurrency } = this.definition;
    this.subscription = await this.router.consume(
      from,
      async (message) => {
        // The envelope keeps its id, so the destination's dedup sees a redelivery as the same message.
        await this.router.send({ ...message, to, from: message.from ?? from }, this.caller);
      },
      { maxInFlight: concurrency },
      this.caller, // its deployment grant lets it consume its source, nothing else
    );
    this.log.info({ from, to, concurrency }, 'route started');
  }

  async stop(): Promise<void> {
    await this.subscription?.close();
    this.subscription = undefined;
  }
}
