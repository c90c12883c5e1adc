import type { AuditLog } from '../auth/audit.ts';
import { parseAddress } from '../core/address.ts';
import { dedupKey, type DedupStore } from '../core/dedup.ts';
import { SwitchboardError } from '../core/errors.ts';
import { holdWhileUnavailable } from '../core/hold.ts';
import type { Message } from '../core/message.ts';
import type { Router } from '../core/router.ts';
import { CLAIMED_SENDER_HEADER, fromAmqp, type AmqpMessage } from '../amqp/mapping.ts';
import { ORIGIN_PROPERTY, SIGNATURE_PROPERTY, verifyEnvelope } from '../network/envelope.ts';
import { localAddress, type Peer } from '../network/network-map.ts';

/** How a peer appears as a principal and sender: its network identity, its alias beside it. */
export function peerPrincipal(peer: Pick<Peer, 'alias' | 'identity'>): { kind: 'peer'; name: string; alias: string } {
  return { kind: 'peer', name: peer.identity, alias: peer.alias };
}

/**
 * Where a peer's messages go once its connection is accepted: into the router (a gateway), or into
 * the float's store. `take` resolves once the message is durably taken (then it is settled as
 * accepted); a retryable error is held or released, any other rejects it with its reason.
 */
export interface PeerIntake {
  take(peer: Peer, target: string, amqp: AmqpMessage, stopping: () => boolean): Promise<void>;
}

/**
 * Reads a peer's message and checks the Ed25519 signature of the peer's gateway over the envelope
 * as it was written (before anything here changes it). A message that does not verify was altered
 * or forged on the way (by a relay, by the float): it is audited and refused as `bad_signature`.
 */
export async function openEnvelope(peer: Peer, target: string, amqp: AmqpMessage, o: { maxMessageBytes: number; audit: AuditLog }): Promise<Message> {
  const address = parseAddress(localAddress(target)).raw;
  // The sender is the peer's network identity (who it is), with the local alias beside it
  // (what rules, addresses and reply checks name).
  const message = fromAmqp(amqp, address, peerPrincipal(peer), { maxBytes: o.maxMessageBytes });
  const props = (amqp.application_properties ?? {}) as Record<string, unknown>;
  const signature = props[SIGNATURE_PROPERTY];
  const origin = props[ORIGIN_PROPERTY];
  delete message.headers[SIGNATURE_PROPERTY];
  delete message.headers[ORIGIN_PROPERTY];
  // The sender the peer's gateway stamped is kept (as a header) but is not part of what it signed.
  const claimed = message.headers[CLAIMED_SENDER_HEADER];
  delete message.headers[CLAIMED_SENDER_HEADER];
  if (typeof signature !== 'string' || typeof origin !== 'string' || !verifyEnvelope(peer.verifyKey, message, target, origin, signature)) {
    await o.audit.record({ action: 'peer.forged', actor: `peer:${peer.identity}`, target: address, detail: `message ${message.id}: the signature of ${peer.alias} (${peer.identity}) does not verify (altered or forged in transit)` });
    throw new SwitchboardError('bad_signature', `message ${message.id} does not carry a valid signature of peer ${peer.alias}`, 403);
  }
  if (claimed !== undefined) message.headers[CLAIMED_SENDER_HEADER] = claimed;
  return message;
}

export interface RoutedPeerIntakeOptions {
  router: Router;
  dedup: DedupStore;
  /** Ids are remembered at least this long (the network's event horizon). */
  eventHorizonMs: number;
  maxMessageBytes: number;
  audit: AuditLog;
}

/**
 * A gateway's intake, used by its own peer listener and by the float tunnel alike: verify the
 * envelope, deduplicate by address, sender (the peer) and id for the event horizon, and hand the
 * message to the router as the peer (authorization, audit and metrics happen there). While the
 * destination cannot take it the message is held, so the caller gives no more credit and the
 * rest waits at the source (the peer, or the float).
 */
export class RoutedPeerIntake implements PeerIntake {
  constructor(private readonly o: RoutedPeerIntakeOptions) {}

  async take(peer: Peer, target: string, amqp: AmqpMessage, stopping: () => boolean): Promise<void> {
    const message = await openEnvelope(peer, target, amqp, this.o);
    // A peer's reply address lies in that peer's own address space, never a local address
    // (rewritten after the signature check, which covers what the peer wrote).
    if (message.replyTo !== undefined) message.replyTo = `peer:${peer.alias}/${message.replyTo}`;
    const scope = `peer-in:${peer.alias}`;
    const key = dedupKey(message);
    if (await this.o.dedup.seen(scope, key)) return;
    await holdWhileUnavailable(() => this.o.router.send(message, { principal: peerPrincipal(peer), door: 'peer' }), { stopping, firstPauseMs: 200 });
    await this.o.dedup.bind(scope, key, '1', this.o.eventHorizonMs);
  }
}
