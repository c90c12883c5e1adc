import type { AuditLog } from '../auth/audit.ts';
import { parseAddress } from '../core/address.ts';
import { dedupKey, type DedupStore } from '../core/dedup.ts';
import { SwitchboardError, isRetryable } from '../core/errors.ts';
import { holdWhileUnavailable } from '../core/hold.ts';
import type { Message } from '../core/message.ts';
import type { Router } from '../core/router.ts';
import { CLAIMED_SENDER_HEADER, fromAmqp, type AmqpMessage } from '../amqp/mapping.ts';
import { ORIGIN_PROPERTY, SIGNATURE_PROPERTY, verifyEnvelope } from '../network/envelope.ts';
import { localAddress, type Peer } from '../network/network-map.ts';
import { NOTICE_ADDRESS, parseRefusalNotice, type PeerNotices } from '../network/peer-notices.ts';

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
  // The notice address is no address here: it is never routed (RoutedPeerIntake.takeNotice).
  const address = target === NOTICE_ADDRESS ? NOTICE_ADDRESS : parseAddress(localAddress(target)).raw;
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
  /** Refusal notices from peers (on NOTICE_ADDRESS) go here; without it such a message is refused. */
  notices?: PeerNotices;
  /**
   * Tell the peer when its message is refused here (through a float, which accepted it already).
   * A gateway's own listener refuses on the link instead, and the peer hears it there.
   * @defaultValue false
   */
  tellRefusals?: boolean;
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
    if (target === NOTICE_ADDRESS) return this.takeNotice(peer, amqp);
    const message = await openEnvelope(peer, target, amqp, this.o);
    // A peer's reply address lies in that peer's own address space, never a local address
    // (rewritten after the signature check, which covers what the peer wrote).
    if (message.replyTo !== undefined) message.replyTo = `peer:${peer.alias}/${message.replyTo}`;
    const scope = `peer-in:${peer.alias}`;
    const key = dedupKey(message);
    if (await this.o.dedup.seen(scope, key)) return;
    try {
      await holdWhileUnavailable(() => this.o.router.send(message, { principal: peerPrincipal(peer), door: 'peer' }), { stopping, firstPauseMs: 200 });
    } catch (err) {
      // The envelope verified, so the peer did send it: it hears why, as from a listener's refusal.
      // Queued before the refusal is settled: a crash in between offers the message again, and the
      // notice's fixed id makes the second one a duplicate.
      if (this.o.tellRefusals && this.o.notices && !isRetryable(err)) await this.o.notices.tellRefused(peer.alias, message.id, target, (err as Error).message);
      throw err;
    }
    await this.o.dedup.bind(scope, key, '1', this.o.eventHorizonMs);
  }

  /** A peer's refusal notice: signed like any message, deduplicated, then passed on (never routed as given). */
  private async takeNotice(peer: Peer, amqp: AmqpMessage): Promise<void> {
    const message = await openEnvelope(peer, NOTICE_ADDRESS, amqp, this.o);
    const notices = this.o.notices;
    if (!notices) throw new SwitchboardError('not_found', `this gateway takes no notices on ${NOTICE_ADDRESS}`, 404);
    const scope = `peer-notice:${peer.alias}`;
    const key = dedupKey(message);
    if (await this.o.dedup.seen(scope, key)) return;
    let notice;
    try {
      notice = parseRefusalNotice(message.body);
    } catch (err) {
      await this.o.audit.record({ action: 'peer.notice-refused', actor: `peer:${peer.identity}`, target: NOTICE_ADDRESS, detail: `message ${message.id} from ${peer.alias}: ${(err as Error).message}` });
      throw err;
    }
    await notices.refusedByPeer(peer.alias, notice);
    await this.o.dedup.bind(scope, key, '1', this.o.eventHorizonMs);
  }
}
