import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { HistoryEntry, Task } from '../core/task.ts';
import type { Notices } from './notices.ts';
import { taskLifecycleEvents, type TaskEvent, type TaskEvents } from './task-events.ts';
import type { TaskStore } from './task-store.ts';
import { placeOf } from './task-rules.ts';
import { shardTag } from '../store/redis.ts';

export interface FollowUpsOptions {
  redis: Redis;
  /** Redis key prefix of the gateway; the jobs live under it in the queue `{people}` (one shard) or `{people.<i>.<n>}` per shard. */
  prefix: string;
  store: TaskStore;
  events: TaskEvents;
  notices: Notices;
  /** Reminder e-mails this long before a task is due, e.g. [3600000] for an hour before. */
  remindersMs: number[];
  log: Logger;
}

interface FollowUpJob {
  kind: 'notify-new' | 'due' | 'remind';
  taskId: string;
  /** Distinguishes notices of one kind (a delegation is a new notice even for someone told before). */
  tag?: string;
}

/** The system's own name in a task's history and events. */
const SYSTEM = 'system:switchboard';

/**
 * What happens to a task after it is created, as durable jobs on BullMQ queues — `{people}`, or
 * with several shards one queue per shard, a task's jobs in its task's shard, each with a worker:
 * the new-task notice, reminders before it is due, and at the due date an escalation (or an
 * overdue notice). Each job runs once per task (its dedup id), is retried with backoff if it
 * fails, survives a restart, and does nothing once the task is decided.
 */
export class FollowUps {
  private readonly names: string[];
  private readonly jobs: Queue<FollowUpJob>[];
  private workers: Worker<FollowUpJob>[] = [];

  constructor(private readonly o: FollowUpsOptions) {
    const shards = o.store.shards;
    this.names = shards <= 1 ? ['{people}'] : Array.from({ length: shards }, (_, i) => `{${shardTag('people', i)}}`);
    this.jobs = this.names.map((name) => {
      const q = new Queue<FollowUpJob>(name, { connection: o.redis, prefix: o.prefix });
      q.on('error', (err) => o.log.error({ err: err.message, queue: name }, 'people jobs queue error'));
      return q;
    });
  }

  async start(): Promise<void> {
    // Five jobs at once in this process, spread over the shards' workers.
    const concurrency = Math.max(1, Math.ceil(5 / this.names.length));
    this.workers = this.names.map((name) => {
      const w = new Worker<FollowUpJob>(name, async (job) => this.run(job.data), { connection: this.o.redis, prefix: this.o.prefix, concurrency });
      w.on('error', (err) => this.o.log.error({ err: err.message, queue: name }, 'people jobs worker error'));
      return w;
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
    await Promise.all(this.jobs.map((q) => q.close()));
  }

  /**
   * The follow-ups of a new task: its notice, and if it has a due date the escalation and the
   * reminders still ahead. Safe to call again for the same task (a repeat of its message): the
   * dedup ids keep each job to one.
   */
  async afterCreate(task: Pick<Task, 'id' | 'due'>): Promise<void> {
    await this.schedule('notify-new', task.id);
    if (!task.due) return;
    const due = Date.parse(task.due);
    await this.schedule('due', task.id, due);
    for (const r of this.o.remindersMs) if (due - r > Date.now()) await this.schedule('remind', task.id, due - r, `:${r}`);
  }

  /** A notice to the person a task was delegated to; `at` makes each delegation its own notice. */
  async afterDelegation(taskId: string, to: string, at: string): Promise<void> {
    await this.schedule('notify-new', taskId, Date.now(), `:delegated:${to}:${at}`);
  }

  private async schedule(kind: FollowUpJob['kind'], taskId: string, at = Date.now(), suffix = ''): Promise<void> {
    await this.jobs[Math.max(0, this.o.store.shardOf(taskId))]!.add(kind, { kind, taskId, ...(suffix ? { tag: suffix.replace(/^:/, '') } : {}) }, {
      delay: Math.max(0, at - Date.now()),
      attempts: 10,
      backoff: { type: 'exponential', delay: 2000 },
      removeOnComplete: true,
      removeOnFail: 1000,
      deduplication: { id: `${kind}:${taskId}${suffix}`, ttl: 7 * 86_400_000 },
    });
  }

  private async run(job: FollowUpJob): Promise<void> {
    const task = await this.o.store.get(job.taskId);
    if (!task || task.status !== 'open') return;
    if (job.kind === 'notify-new') await this.o.notices.newTask(task, job.tag);
    else if (job.kind === 'remind') await this.o.notices.reminder(task);
    else if (job.kind === 'due') await this.escalate(task);
  }

  /** Past due: to the escalation target if there is one (both sides told), else a notice. */
  private async escalate(task: Task): Promise<void> {
    if (!task.escalateTo) {
      await this.o.notices.overdue(task);
      return;
    }
    const entry: HistoryEntry = { at: new Date().toISOString(), by: SYSTEM, action: 'escalated', detail: `overdue since ${task.due}; moved to ${task.escalateTo}` };
    const to = task.escalateTo;
    const place = to.startsWith('person:') ? { assignee: to.slice('person:'.length) } : { group: to.slice(to.indexOf(':') + 1) };
    const escalated: TaskEvent = { type: 'escalated', taskId: task.id, ...place, previous: placeOf(task), by: SYSTEM };
    const r = await this.o.store.reassign(task.id, to, entry, '', () => taskLifecycleEvents(escalated, entry.at));
    if (!r.ok) return;
    const moved = (await this.o.store.get(task.id))!;
    await this.o.events.publish(escalated);
    await this.o.notices.escalated(task, moved);
  }
}
