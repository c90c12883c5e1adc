import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { LifecycleEvent } from '../core/lifecycle.ts';

/** A change to a task that open inboxes may need to show. */
export interface TaskEvent {
  type: 'created' | 'claimed' | 'released' | 'delegated' | 'approved' | 'decided' | 'escalated';
  taskId: string;
  /** Where the task is now (after the change). */
  assignee?: string;
  group?: string;
  /** Where it was before a delegation or escalation. */
  previous?: { assignee?: string; group?: string };
  by?: string;
  /** The action a decision took. */
  action?: string;
}

/** The task changes that are lifecycle events (a release or a first four-eyes approval is not). */
const LIFECYCLE: Partial<Record<TaskEvent['type'], string>> = { created: 'created', claimed: 'claimed', delegated: 'delegated', decided: 'decided', escalated: 'escalated' };

/**
 * The lifecycle event of a task change, built before the change and recorded by its script
 * (TaskStore), so it is stored exactly when the change is. `at` is the change's history time:
 * created and decided happen once per task, a claim, delegation or escalation may recur, and each
 * is its own event (the script writes it once, so its id need only be fixed per change).
 */
export function taskLifecycleEvents(event: TaskEvent, at: string): LifecycleEvent[] {
  const kind = LIFECYCLE[event.type];
  if (!kind) return [];
  const { type: _t, ...data } = event;
  const once = kind === 'created' || kind === 'decided';
  return [{ type: `switchboard.task.${kind}`, subject: `task:${event.taskId}`, key: once ? event.taskId : `${event.taskId}\0${kind}\0${event.by ?? ''}\0${event.assignee ?? ''}\0${event.group ?? ''}\0${at}`, data }];
}

/**
 * Task changes over Redis pub/sub, so an inbox open on any gateway process hears about a task
 * created or claimed on another. Delivery is best effort (pub/sub): inboxes also reload the list
 * when they reconnect.
 */
export class TaskEvents {
  private readonly local = new EventEmitter();
  private subscriber?: Redis;

  constructor(private readonly redis: Redis, private readonly prefix: string, private readonly log: Logger) {
    this.local.setMaxListeners(0);
  }

  private get channel(): string {
    return `${this.prefix}:task-events`;
  }

  async start(): Promise<void> {
    this.subscriber = this.redis.duplicate();
    this.subscriber.on('error', (err) => this.log.warn({ err: err.message }, 'task events subscriber error'));
    this.subscriber.on('message', (_channel, raw: string) => {
      try {
        this.local.emit('event', JSON.parse(raw) as TaskEvent);
      } catch {
        /* not ours */
      }
    });
    await this.subscriber.subscribe(this.channel);
  }

  /** Called after the change is stored: tells open inboxes (its lifecycle event was recorded with it). */
  async publish(event: TaskEvent): Promise<void> {
    await this.redis.publish(this.channel, JSON.stringify(event)).catch((err) => this.log.warn({ err: (err as Error).message }, 'task event not published'));
  }

  on(listener: (e: TaskEvent) => void): () => void {
    this.local.on('event', listener);
    return () => this.local.off('event', listener);
  }

  async stop(): Promise<void> {
    await this.subscriber?.quit().catch(() => {});
  }
}
