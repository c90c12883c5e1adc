import type { Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import type { Message } from '../../core/message.ts';
import type { TaskIntake } from '../../core/task.ts';

/**
 * `person:<user>` or `group:<group>`: a message becomes a task (or an item to acknowledge).
 * A thin adapter: the people application does the work behind the TaskIntake it is given.
 */
export class InboxEndpoint implements Endpoint {
  readonly dedupsOnIngress = true;

  constructor(readonly scheme: 'person' | 'group', private readonly intake: TaskIntake) {}

  async send(message: Message): Promise<SendResult> {
    const { taskId, created } = await this.intake.accept(message);
    // The task id goes back to the sender: a flow's ask waits for a decision on exactly this task.
    return { id: message.id, duplicate: !created, taskId };
  }

  async health(): Promise<HealthReport> {
    return { ok: true };
  }

  async close(): Promise<void> {
    // The intake is shared by person: and group:; the gateway stops the people application once.
  }
}
