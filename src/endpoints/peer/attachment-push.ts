import type { AttachmentStore } from '../../attachments/attachment-store.ts';
import type { AttachmentRef } from '../../attachments/reference.ts';
import { DestinationUnavailable } from '../../core/errors.ts';
import { Undeliverable } from '../../core/outbox.ts';
import { BrokerRejected } from '../../amqp/connection.ts';
import { ATTACHMENT_LINK, RESTART_CONDITION, pieceMessage } from '../../network/attachment-transfer.ts';

/** Bytes per piece on the peer link: under the receiving listener's message limit (1 MiB by default). */
export const PIECE_BYTES = 512 * 1024;

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
    if (offset > ref.size) offset = 0;
    let restarted = false;
    // A 0-byte attachment is one empty piece; otherwise pieces until every byte is acknowledged.
    for (let first = true; first || offset < ref.size; first = false) {
      const end = Math.min(offset + PIECE_BYTES, ref.size);
      const parts: Buffer[] = [];
      if (end > offset) for await (const b of store.read(ref.id, offset, end - 1)) parts.push(b);
      const piece = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      try {
        await send(ATTACHMENT_LINK, pieceMessage(ref, offset, piece));
      } catch (err) {
        if (err instanceof BrokerRejected && err.message.includes(RESTART_CONDITION)) {
          // The peer lost what it had (its unfinished upload expired): once from the start, now.
          if (restarted) throw new DestinationUnavailable(`peer:${alias}`, `it asks again for attachment ${ref.id} from byte 0`);
          restarted = true;
          offset = 0;
          await store.setSentTo(ref.id, alias, 0);
          first = true;
          continue;
        }
        // Refused for good (the far side's hash check failed, an id conflict): the message cannot go either.
        if (err instanceof BrokerRejected) throw new Undeliverable(`peer ${alias} refused attachment ${ref.id}: ${err.message}`);
        throw err;
      }
      offset = end;
      await store.setSentTo(ref.id, alias, offset);
    }
  }
}
