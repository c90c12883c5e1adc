import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one gateway; a registry each, so several gateways can share a process. */
export class Metrics {
  readonly registry = new Registry();
  readonly messagesIn = new Counter({ name: 'switchboard_messages_in_total', help: 'Messages durably accepted by an endpoint', labelNames: ['endpoint'], registers: [this.registry] });
  readonly messagesOut = new Counter({ name: 'switchboard_messages_out_total', help: 'Messages delivered by an endpoint to a consumer and acknowledged', labelNames: ['endpoint'], registers: [this.registry] });
  readonly messagesFailed = new Counter({ name: 'switchboard_messages_failed_total', help: 'Sends refused or deliveries that failed', labelNames: ['endpoint'], registers: [this.registry] });
  readonly duplicates = new Counter({ name: 'switchboard_duplicates_total', help: 'Messages whose id was seen before: accepted, not delivered again', labelNames: ['endpoint'], registers: [this.registry] });
  readonly deadLettered = new Counter({ name: 'switchboard_dead_lettered_total', help: 'Messages moved to a dead-letter queue', labelNames: ['endpoint'], registers: [this.registry] });
  readonly sendSeconds = new Histogram({ name: 'switchboard_send_duration_seconds', help: 'Time for an endpoint to durably accept a message', labelNames: ['endpoint'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [this.registry] });
  readonly queueDepth: Gauge;
  readonly queueOldestAge: Gauge;
  /**
   * How old a task was when it was decided, by whether that was before its due date (`on_time`),
   * after it (`late`), or it had none (`none`).
   */
  readonly taskDecisionAge = new Histogram({ name: 'switchboard_task_decision_age_seconds', help: 'Age of a task when decided, by due: on_time, late or none', labelNames: ['due'], buckets: [60, 300, 900, 3600, 4 * 3600, 86_400, 3 * 86_400, 7 * 86_400], registers: [this.registry] });

  /** Records one decision of a task created at `createdAt`, due at `due` (ISO times). */
  taskDecided(createdAt: string, due: string | undefined, decidedAt: string): void {
    const at = Date.parse(decidedAt);
    const label = due === undefined ? 'none' : at <= Date.parse(due) ? 'on_time' : 'late';
    this.taskDecisionAge.observe({ due: label }, Math.max(0, at - Date.parse(createdAt)) / 1000);
  }
  /**
   * Open tasks by due date: `late` (past it, i.e. overdue), `on_time` (before it), `none` (no due
   * date). Counted at scrape time by whoever owns the tasks (`countOpenTasks`); absent until then.
   */
  countOpenTasks(count: () => Promise<{ on_time: number; late: number; none: number }>): void {
    new Gauge({
      name: 'switchboard_tasks_open',
      help: 'Open tasks by due date: late (overdue), on_time or none',
      labelNames: ['due'],
      registers: [this.registry],
      async collect() {
        const c = await count();
        for (const due of ['on_time', 'late', 'none'] as const) this.set({ due }, c[due]);
      },
    });
  }
  /** Flow instances that ended, by flow and outcome (completed, failed, cancelled). */
  readonly flowOutcomes = new Counter({ name: 'switchboard_flow_outcomes_total', help: 'Flow instances that ended, by outcome (completed, failed, cancelled)', labelNames: ['flow', 'outcome'], registers: [this.registry] });
  /** Per remote party (broker, peer): 1 connected, 0 not. Filled by whoever owns the connections. */
  readonly connected = new Gauge({ name: 'switchboard_connection_up', help: 'Connection to a broker or peer: 1 up, 0 down', labelNames: ['kind', 'name'], registers: [this.registry] });

  /**
   * `depths` gives queue depths by address; the queue endpoint already bounds them (pinned,
   * recent, `(other)`). `maxDepthSeries` is the backstop: past it, the rest are summed into
   * `address="(other)"`, so no caller can make a scrape unbounded.
   */
  constructor(depths: () => Promise<Record<string, number>>, options: { maxDepthSeries?: number; oldestAges?: () => Promise<Record<string, number>> } = {}) {
    const max = options.maxDepthSeries ?? 1000;
    collectDefaultMetrics({ register: this.registry, prefix: 'switchboard_' });
    this.queueDepth = new Gauge({
      name: 'switchboard_queue_depth',
      help: 'Messages waiting in a queue (not yet delivered)',
      labelNames: ['address'],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const [address, depth] of Object.entries(boundSeries(await depths(), max))) this.set({ address }, depth);
      },
    });
    const ages = options.oldestAges;
    this.queueOldestAge = new Gauge({
      name: 'switchboard_queue_oldest_message_age_seconds',
      help: 'Age of the oldest message waiting in a queue (0 when none waits)',
      labelNames: ['address'],
      registers: [this.registry],
      async collect() {
        this.reset();
        if (!ages) return;
        // The same bounded series as the depths; ages are not summable, so nothing is `(other)`.
        for (const [address, age] of Object.entries(await ages()).slice(0, max)) this.set({ address }, age);
      },
    });
  }
}

/** At most `max` series: the first `max - 1` as they are, the rest summed into `(other)`. */
export function boundSeries(depths: Record<string, number>, max: number): Record<string, number> {
  const entries = Object.entries(depths);
  if (entries.length <= max) return depths;
  const out: Record<string, number> = Object.fromEntries(entries.filter(([a]) => a !== '(other)').slice(0, Math.max(0, max - 1)));
  out['(other)'] = entries.filter(([a]) => !(a in out)).reduce((n, [, d]) => n + d, 0);
  return out;
}
