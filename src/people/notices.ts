import type { Directory } from '../auth/directory.ts';
import type { Router } from '../core/router.ts';
import { systemCaller, systemMessage } from '../core/system-message.ts';
import type { Task } from '../core/task.ts';
import { storedTraceContext, withTraceContext } from '../tracing/trace-context.ts';

export interface NoticesOptions {
  router: Router;
  directory: Directory;
  /** Where links in e-mails point, e.g. https://switchboard.example.com */
  baseUrl: string;
  /** Send notices at all; false when the gateway has no email: endpoint configured. */
  enabled: boolean;
}

/**
 * E-mail notices about tasks, to the task's person or to every member of its group, sent as
 * messages to `email:<address>` so the durable email outbox retries them. Each notice's message
 * id is fixed per task, purpose and recipient (`task:<id>:<tag>:<user>`): it is the dedup key
 * that keeps a retried follow-up from mailing anyone twice.
 */
export class Notices {
  constructor(private readonly o: NoticesOptions) {}

  /** The task's page in the web inbox. */
  link(id: string): string {
    return `${this.o.baseUrl.replace(/\/$/, '')}/tasks/${encodeURIComponent(id)}`;
  }

  /** A new task waits (tag distinguishes a delegation from the first notice). */
  async newTask(task: Task, tag?: string): Promise<void> {
    await this.send(task, `New task: ${task.title}`, `A new task waits for ${task.assignee ?? `the group ${task.group}`}:\n\n  ${task.title}\n${task.due ? `  due ${task.due}\n` : ''}\nOpen it: ${this.link(task.id)}\n`, tag ? `new-${tag}` : 'new');
  }

  /** The task is due soon. One notice per due date, so a reminder is not repeated. */
  async reminder(task: Task): Promise<void> {
    await this.send(task, `Reminder: ${task.title} is due ${task.due}`, `This task is due ${task.due}:\n\n  ${task.title}\n\nOpen it: ${this.link(task.id)}\n`, `remind-${Date.parse(task.due ?? '0')}`);
  }

  /** Past due and nobody to escalate to. */
  async overdue(task: Task): Promise<void> {
    await this.send(task, `Overdue: ${task.title}`, `This task was due ${task.due} and is still open:\n\n  ${task.title}\n\nOpen it: ${this.link(task.id)}\n`, 'overdue');
  }

  /** Past due and moved: both the previous holders (`before`) and the new ones (`after`) are told. */
  async escalated(before: Task, after: Task): Promise<void> {
    const text = `The task "${before.title}" was due ${before.due} and has been escalated from ${before.assignee ?? `group ${before.group}`} to ${before.escalateTo}.\n\nOpen it: ${this.link(before.id)}\n`;
    await this.send(before, `Escalated: ${before.title}`, text, 'escalated-from');
    await this.send(after, `Escalated to you: ${before.title}`, text, 'escalated-to');
  }

  /** `task` as the store gives it carries the trace it was asked in: its notices are part of that trace. */
  private async send(task: Task & { traceparent?: string; tracestate?: string }, subject: string, text: string, tag: string): Promise<void> {
    if (!this.o.enabled) return;
    const headers = withTraceContext({ 'switchboard-task': task.id }, storedTraceContext(task));
    const people = task.assignee !== undefined ? [await this.o.directory.lookup(task.assignee)] : await this.o.directory.members(task.group!);
    for (const p of people) {
      if (!p?.email) continue;
      await this.o.router.send(systemMessage({ id: `task:${task.id}:${tag}:${p.name}`, to: `email:${p.email}`, headers, body: { subject, text } }), systemCaller('inbox', 'inbox'));
    }
  }
}
