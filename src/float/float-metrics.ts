import { Counter, Gauge, type Registry } from 'prom-client';

/** What the float's gauges read at scrape time. */
export interface FloatGauges {
  /** Messages waiting in the float's outbox per peer alias (what the gateway handed over, not yet delivered). */
  outboxDepths(): Promise<Record<string, number>>;
  /** Inbound entries: waiting for the gateway, out with it unacknowledged, refused by it. */
  inbound(): Promise<{ ready: number; taken: number; refused: number }>;
  /** True while a gateway holds the tunnel and has handed over its key. */
  tunnelConnected(): boolean;
  /** Peer connections: accepted on the peer listener (`in`), bridges this float holds open (`out`). */
  peersConnected(): { in: number; out: number };
}

/**
 * The float's own series (docs/float.md, "Metrics"), beside the process and outbox series of the
 * shared registry. Everything is read when Prometheus scrapes, so a gauge is never stale.
 */
export class FloatMetrics {
  /** Refusals by the audit action that recorded them, plus `gateway.refused` for a message the inside refused. */
  readonly refusals: Counter<'action'>;

  constructor(registry: Registry, gauges: FloatGauges) {
    new Gauge({
      name: 'switchboard_float_outbox_depth', help: 'Messages for a peer waiting in the float\'s outbox', labelNames: ['peer'], registers: [registry],
      async collect() {
        this.reset();
        for (const [peer, depth] of Object.entries(await gauges.outboxDepths())) this.set({ peer }, depth);
      },
    });
    new Gauge({
      name: 'switchboard_float_inbound', help: 'Inbound messages on the float: ready (waiting for the gateway), taken (out with it, unacknowledged), refused (by the inside)', labelNames: ['state'], registers: [registry],
      async collect() {
        const d = await gauges.inbound();
        for (const state of ['ready', 'taken', 'refused'] as const) this.set({ state }, d[state]);
      },
    });
    new Gauge({
      name: 'switchboard_float_tunnel_connected', help: 'A gateway holds the tunnel and has handed over its peer key: 1, else 0', registers: [registry],
      collect() { this.set(gauges.tunnelConnected() ? 1 : 0); },
    });
    new Gauge({
      name: 'switchboard_float_peers_connected', help: 'Peer connections: in (accepted from peers), out (bridges to peers)', labelNames: ['direction'], registers: [registry],
      collect() {
        const c = gauges.peersConnected();
        this.set({ direction: 'in' }, c.in);
        this.set({ direction: 'out' }, c.out);
      },
    });
    this.refusals = new Counter({ name: 'switchboard_float_refusals_total', help: 'Connections, pieces and messages the float refused, or the inside refused after the float took them, by action', labelNames: ['action'], registers: [registry] });
  }
}
