import { ValidationError } from '../core/errors.ts';
import type { Message } from '../core/message.ts';
import type { Router } from '../core/router.ts';
import type { FlowRuntime } from './runtime.ts';

/**
 * A reply that came back on a broker's reply queue goes to the flow instance that asked: the
 * correlation id of a flow request is `<instanceId>:<step>`. A `switchboard-reply-to` header is
 * only believed when it names that same instance, so a broker client cannot steer replies into
 * other flows.
 */
export async function deliverReply(m: Message, router: Router, flows: FlowRuntime, broker: string): Promise<void> {
  const cid = m.correlationId ?? '';
  // `<instanceId>:<step>` or `<instanceId>:<step>:r<attempt>`; instance ids never hold a ':'.
  const instanceId = cid.includes(':') ? cid.slice(0, cid.indexOf(':')) : '';
  if (!instanceId) throw new ValidationError(`a reply without a flow correlation id (got '${cid}') cannot be matched to a waiting flow`);
  const meta = await flows.store.meta(instanceId);
  if (!meta) throw new ValidationError(`no flow instance '${instanceId}' waits for correlation id '${cid}'`);
  const to = `flow:${meta.flow}/${instanceId}`;
  const claimed = m.headers['switchboard-reply-to'];
  if (claimed !== undefined && claimed !== to) throw new ValidationError(`reply header names ${claimed}, but correlation id '${cid}' belongs to ${to}`);
  await router.send({ ...m, to }, { principal: { kind: 'broker', name: broker }, door: 'broker' });
}
