import type { AuditLog } from '../auth/audit.ts';
import { DependencyUnavailable, SwitchboardError } from '../core/errors.ts';
import { holdWhileUnavailable } from '../core/hold.ts';
import { encodedBytes, type AmqpMessage } from '../amqp/mapping.ts';
import { openEnvelope, type PeerIntake } from '../amqp-server/peer-intake.ts';
import type { Peer } from '../network/network-map.ts';
import { identityKey } from '../network/identity.ts';
import type { MemoryGuard } from '../store/memory-guard.ts';
import { FloatInbox } from './float-inbox.ts';
import { ATTACHMENTS_HEADER, parseAttachmentRefs } from '../attachments/reference.ts';

export interface FloatIntakeOptions {
  inbox: FloatInbox;
  /** Watches the float's Redis: near its limit nothing is stored and no credit goes back to peers. */
  memoryGuard: MemoryGuard;
  maxMessageBytes: number;
  audit: AuditLog;
}

/**
 * The float's peer intake: the envelope is checked here too (a forged message never takes float
 * storage, and the peer hears at once), then the message is stored as the bytes it arrived in, so
 * the gateway reads and verifies exactly what the peer wrote. While the float's Redis is nearly
 * full the message is held unsettled: the peer gets no credit back and keeps the rest.
 */
export class FloatIntake implements PeerIntake {
  constructor(private readonly o: FloatIntakeOptions) {}

  async take(peer: Peer, target: string, amqp: AmqpMessage, stopping: () => boolean): Promise<void> {
    const message = await openEnvelope(peer, target, amqp, this.o);
    const bytes = encodedBytes(amqp);
    if (!bytes) throw new SwitchboardError('malformed_message', 'the message arrived without its encoded bytes', 400);
    // The pieces came first (the peer pushes them before the message); the gateway pulls them before it.
    const attachments = parseAttachmentRefs(message.headers[ATTACHMENTS_HEADER]).map((r) => r.id);
    const entryId = FloatInbox.entryId([identityKey(peer.identity), target, message.id]);
    await holdWhileUnavailable(async () => {
      if (this.o.memoryGuard.refusing) throw new DependencyUnavailable('float storage', 'its Redis is nearly full: peers get no credit until the gateway has pulled what waits');
      await this.o.inbox.store(entryId, { kind: 'peer-message', peer: peer.identity, target, id: message.id, bytes: bytes.toString('base64'), at: new Date().toISOString(), ...(attachments.length ? { attachments } : {}) });
    }, { stopping, firstPauseMs: 200 });
  }
}
