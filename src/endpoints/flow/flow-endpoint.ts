import type { Endpoint, HealthReport, SendResult } from '../../core/endpoint.ts';
import type { Message } from '../../core/message.ts';

/** What the flow transport needs of the flow runtime (which implements it). */
export interface FlowTarget {
  /** Deployed flows, for health. */
  readonly definitions: ReadonlyMap<string, unknown>;
  startFromMessage(flow: string, message: Message): Promise<{ instanceId: string; duplicate: boolean }>;
  deliver(flow: string, instanceId: string, message: Message): Promise<{ duplicate: boolean }>;
  close(): Promise<void>;
}

/**
 * `flow:<name>` starts an instance with the message body as input; `flow:<name>/<id>` delivers
 * to a running instance (what ctx.receive and ctx.request wait on). Both are idempotent: a start
 * id maps to one instance per starter, and an instance takes a message id once.
 */
export class FlowEndpoint implements Endpoint {
  readonly scheme = 'flow';
  readonly dedupsOnIngress = true;

  constructor(private readonly runtime: FlowTarget) {}

  async send(message: Message): Promise<SendResult> {
    const path = message.to.slice('flow:'.length);
    const slash = path.indexOf('/');
    if (slash < 0) {
      const r = await this.runtime.startFromMessage(path, message);
      return { id: message.id, duplicate: r.duplicate, instanceId: r.instanceId };
    }
    const r = await this.runtime.deliver(path.slice(0, slash), path.slice(slash + 1), message);
    return { id: message.id, duplicate: r.duplicate };
  }

  async health(): Promise<HealthReport> {
    return { ok: true, detail: `${this.runtime.definitions.size} flow(s) deployed` };
  }

  async close(): Promise<void> {
    await this.runtime.close();
  }
}
