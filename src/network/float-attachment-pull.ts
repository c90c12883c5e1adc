import type { Connection, Delivery, EventContext, Receiver } from 'rhea';
import type { AttachmentStore } from '../attachments/attachment-store.ts';
import { ATTACHMENTS_HEADER, parseAttachmentRefs, type AttachmentRef } from '../attachments/reference.ts';
import { AttachmentRestart } from '../attachments/errors.ts';
import type { AmqpMessage } from '../amqp/mapping.ts';
import { describe } from '../amqp/connection.ts';
import { DestinationUnavailable, SwitchboardError } from '../core/errors.ts';
import { PIECE_BYTES, readPiece } from './attachment-transfer.ts';
import { attachmentSource } from './float-tunnel.ts';

/** The references a message from the float lists (its `attachments` application property); [] when none or malformed (the intake refuses that). */
export function referencedAttachments(amqp: AmqpMessage): AttachmentRef[] {
  const raw = (amqp.application_properties as Record<string, unknown> | undefined)?.[ATTACHMENTS_HEADER];
  try {
    return parseAttachmentRefs(typeof raw === 'string' ? raw : undefined);
  } catch {
    return [];
  }
}

const PULL_IDLE_MS = 30_000;

/**
 * Pulls one attachment a peer pushed to the float, over the tunnel, into the store inside: from
 * the first byte not yet stored here (a pull cut by a tunnel drop resumes there), one piece in
 * flight, each settled only once stored. The reference is the one in the message (under the
 * peer's envelope signature), never what the float says: the last piece makes the store hash what
 * it holds and compare, so a float that altered a byte gets `hash_mismatch` (nothing kept).
 * Resolves `'missing'` when the float does not have it (the claim check then refuses the message).
 */
export async function pullAttachment(c: Connection, store: AttachmentStore, owner: string, ref: AttachmentRef, maxPieceBytes: number): Promise<'complete' | 'missing'> {
  const have = await store.info(ref.id);
  if (have) return 'complete';
  const from = (await store.uploadStatus(ref.id))?.received ?? 0;
  return new Promise<'complete' | 'missing'>((resolve, reject) => {
    let done = false;
    const r: Receiver = c.open_receiver({ source: { address: attachmentSource(ref.id, from) }, autoaccept: false, credit_window: 0 });
    let idle: NodeJS.Timeout | undefined;
    const finish = (err: Error | undefined, outcome: 'complete' | 'missing' = 'complete') => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      c.removeListener('disconnected', onGone);
      if (r.is_open()) r.close();
      if (err) reject(err);
      else resolve(outcome);
    };
    const watch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => finish(new DestinationUnavailable('float', `no piece of attachment ${ref.id} within ${PULL_IDLE_MS / 1000} s`)), PULL_IDLE_MS);
    };
    const onGone = () => finish(new DestinationUnavailable('float', `the tunnel went down while pulling attachment ${ref.id} (resumes from the stored offset)`));
    c.once('disconnected', onGone);
    // Pieces are handled one at a time, in order: credit for the next only after this one is stored.
    r.on('message', (ctx: EventContext) => {
      const d = ctx.delivery as Delivery;
      void (async () => {
        try {
          const piece = readPiece(ctx.message as never, maxPieceBytes);
          if (piece.ref.id !== ref.id) throw new SwitchboardError('bad_attachment_piece', `the float sent a piece of ${piece.ref.id} when ${ref.id} was asked for`, 400);
          const outcome = await store.receivePiece(owner, ref, piece.offset, piece.data, PIECE_BYTES);
          d.accept();
          if (outcome === 'complete' && piece.offset + piece.data.length >= ref.size) return finish(undefined);
          watch();
          r.add_credit(1);
        } catch (err) {
          d.reject({ condition: 'amqp:invalid-field', description: (err as Error).message });
          // Out of step with the float (what it had was lost): start again from what is stored here.
          finish(err instanceof AttachmentRestart ? new DestinationUnavailable('float', (err as Error).message) : (err as Error));
        }
      })();
    });
    r.on('receiver_close', () => {
      const why = describe(r.error);
      if (/not-found/.test(why)) finish(undefined, 'missing');
      else finish(new DestinationUnavailable('float', `the float closed the pull of attachment ${ref.id}: ${why || 'closed'}`));
    });
    r.on('receiver_error', () => undefined);
    r.add_credit(1);
    watch();
  });
}
