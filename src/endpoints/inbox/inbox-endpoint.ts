import type { Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import type { Message } from '../../core/message.ts';
import type { Inbox } from '../../people/inbox.ts';

/** `person:<user>` or `group:<group>`: a message becomes a task (or an item to acknowledge). */
export class InboxEndpoint implements Endpoint {
  readonly dedupsOnIngress = true;

  constructor(readonly scheme: 'person' | 'group', private readonly inbox: Inbox) {}

  async send(message: Message): Promise<SendResult> {
    const created = await this.inbox.accept(message);
    return { id: message.id, duplicate: !created };
  }

  async health(): Promise<HealthReport> {
    return { ok: true };
  }

  async close(): Promise<void> {
    // The Inbox is shared by person: and group:; the gateway stops it once.
  }
}
