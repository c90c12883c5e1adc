import { SwitchboardError } from '../core/errors.ts';

/**
 * The reserved address, in every gateway's peer address space, where a peer tells this gateway
 * about a message of ours it refused after its float had accepted it (docs/float.md, "The peer is
 * told"). A gateway with its own listener refuses at once and the sender hears it on the link; a
 * float has to accept first (store and forward), so the inside, once it has refused, sends this
 * notice back as a signed peer message. Only Switchboard itself sends here.
 */
export const NOTICE_ADDRESS = '$notices';

/** What a refusal notice carries: our message's id, where we sent it (in the peer's address space) and why it was refused. */
export interface RefusalNotice {
  notice: 'undeliverable';
  id: string;
  to: string;
  reason: string;
}

/** A notice that is not one (missing fields, wrong types, oversized): refused with what was expected. */
export class MalformedNotice extends SwitchboardError {
  constructor(detail: string) {
    super('malformed_notice', `a peer notice on ${NOTICE_ADDRESS} must be {notice: 'undeliverable', id, to, reason}: ${detail}`, 400);
  }
}

const MAX_FIELD = 1000;

/** Reads a refusal notice from a verified peer message's body; anything else is a MalformedNotice. */
export function parseRefusalNotice(body: unknown): RefusalNotice {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new MalformedNotice('the body is not a JSON object');
  const b = body as Record<string, unknown>;
  if (b.notice !== 'undeliverable') throw new MalformedNotice(`notice is ${JSON.stringify(b.notice)}`);
  for (const field of ['id', 'to', 'reason'] as const) {
    const v = b[field];
    if (typeof v !== 'string' || v.length === 0 || v.length > MAX_FIELD) throw new MalformedNotice(`${field} must be a string of 1 to ${MAX_FIELD} characters`);
  }
  return { notice: 'undeliverable', id: b.id as string, to: b.to as string, reason: b.reason as string };
}

/** Why a gateway refused a message from a peer (after its float accepted it) and what it tells the peer. */
export interface PeerNotices {
  /** The inside refused `messageId`, which the peer sent to `target`: tell the peer; resolves once the notice is durably queued. */
  tellRefused(alias: string, messageId: string, target: string, reason: string): Promise<void>;
  /** A peer refused a message of ours after its float had accepted it: pass the notice on as our own outbox would. */
  refusedByPeer(alias: string, notice: RefusalNotice): Promise<void>;
}
