import type { AttachmentStore } from '../../attachments/attachment-store.ts';
import type { AttachmentRef } from '../../attachments/reference.ts';
import { DestinationUnavailable } from '../../core/errors.ts';
import { Undeliverable } from '../../core/outbox.ts';
import { BrokerRejected } from '../../amqp/connection.ts';
import { ATTACHMENT_LINK, PIECE_BYTES, RESTART_CONDITION, pieceMessage } from '../../network/attachment-transfer.ts';

/**
 * Pushes a message's attachments to a peer before the message itself (the claim check's bytes
 * go first, so the message never arrives before what it references). Each piece is one AMQP
 * message on `$attachments`, awaited until the peer settles it; the acknowledged offset is kept
 * in Redis per peer, so a retry after a cut connection (or in another process of the fleet that
 * took over the bridge) resumes there. Only one piece is held in memory at a time.
 */
export async function pushAttachments(store: AttachmentStore, alias: string, refs: readonly AttachmentRef[], send: (address: string, message: Record<string, unknown>) => Promise<void>): Promise<void> {
  for (const ref of refs) {
    const info = await store.info(ref.id);
    if (!info) throw new Undeliverable(`attachment ${ref.id} is gone here (expired or deleted) before it reached peer ${alias}`);
    if (info.sha256 !== ref.sha256 || info.size !== ref.size) throw new Undeliverable(`attachment ${ref.id} here does not match the message's reference (hash or size)`);
    let offset = await store.sentTo(ref.id, alias);
    // Resumes only where a piece ended (pieces end on multiples of PIECE_BYTES, or at the end).
    if (offset > ref.size || (offset % PIECE_BYTES !== 0 && offset !== ref.size)) offset = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        offset = await pushFrom(store, alias, ref, offset, send);
        break;
      } catch (err) {
        if (err instanceof BrokerRejected && err.message.includes(RESTART_CONDITION)) {
          // The peer lost what it had (its unfinished upload expired): once from the start, now.
          if (attempt > 0) throw new DestinationUnavailable(`peer:${alias}`, `it asks again for attachment ${ref.id} from byte 0`);
          offset = 0;
          await store.setSentTo(ref.id, alias, 0);
          continue;
        }
        // Refused for good (the far side's hash check failed, an id conflict): the message cannot go either.
        if (err instanceof BrokerRejected) throw new Undeliverable(`peer ${alias} refused attachment ${ref.id}: ${err.message}`);
        throw err;
      }
    }
  }
}

/**
 * Sends the attachment from `offset` to its end in pieces that end on multiples of PIECE_BYTES
 * (so each piece is one chunk at the far side), reading the local chunks once each, and records
 * each acknowledgement. Returns the size when every byte is acknowledged.
 */
async function pushFrom(store: AttachmentStore, alias: string, ref: AttachmentRef, from: number, send: (address: string, message: Record<string, unknown>) => Promise<void>): Promise<number> {
  let offset = from;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    const piece = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
    await send(ATTACHMENT_LINK, pieceMessage(ref, offset, piece));
    offset += piece.length;
    pending = [];
    pendingBytes = 0;
    await store.setSentTo(ref.id, alias, offset);
  };
  // A 0-byte attachment is one empty piece.
  if (ref.size === 0) {
    pending = [Buffer.alloc(0)];
    await flush();
    return 0;
  }
  if (from >= ref.size) return ref.size;
  for await (let b of store.read(ref.id, from, ref.size - 1)) {
    while (b.length > 0) {
      const room = PIECE_BYTES - ((offset + pendingBytes) % PIECE_BYTES);
      const part = b.subarray(0, room);
      pending.push(part);
      pendingBytes += part.length;
      b = b.subarray(part.length);
      if (part.length === room) await flush();
    }
  }
  if (pendingBytes > 0) await flush();
  return offset;
}
