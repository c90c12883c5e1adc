import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Sender } from 'rhea';
import type { AttachmentStore } from '../attachments/attachment-store.ts';
import type { AttachmentRef } from '../attachments/reference.ts';
import { SwitchboardError } from '../core/errors.ts';
import { PIECE_BYTES, pieceMessage, readPiece } from '../network/attachment-transfer.ts';
import { TUNNEL_PROPERTY } from '../network/float-tunnel.ts';

/** The owner of attachments the gateway pushed to the float (outbound). */
const GATEWAY_OWNER = 'gateway:float-tunnel';
const HOLD_FORMAT = /^.{1,600}\/[\x21-\x7e]{1,256}$/;

/**
 * Attachments passing through the float (docs/attachments.md, "Through the DMZ float"), in the
 * float's own Redis (an AttachmentStore there). Outbound, the gateway pushes the pieces over the
 * tunnel; each names the message it travels for (a hold, `<peer identity>/<message id>`), and the
 * attachment is deleted once every message holding it was delivered. Inbound, a peer's pieces are
 * stored by the float's peer listener; the gateway pulls them (`serve`), and they are deleted once
 * the gateway took the message that references them. The float never checks the content for the
 * inside: the gateway hashes what it pulled against the signed reference.
 */
export class FloatAttachments {
  constructor(private readonly o: { store: AttachmentStore; redis: Redis; prefix: string; log: Logger }) {}

  get store(): AttachmentStore {
    return this.o.store;
  }

  private holdKey(id: string): string {
    return `${this.o.prefix}:{att:${id}}:holds`;
  }

  /** A piece from the gateway: held for its message, then stored (resolves once stored). */
  async storePiece(message: { body?: unknown; application_properties?: Record<string, unknown> }): Promise<void> {
    const { ref, offset, data } = readPiece(message, PIECE_BYTES * 2);
    const hold = message.application_properties?.[TUNNEL_PROPERTY.hold];
    if (typeof hold !== 'string' || !HOLD_FORMAT.test(hold)) throw new SwitchboardError('bad_attachment_piece', `a piece from the gateway names its message in ${TUNNEL_PROPERTY.hold} as <peer identity>/<message id>`, 400);
    // Held before stored: a delivery of another message in between cannot delete it under this one.
    await this.o.redis.multi().sadd(this.holdKey(ref.id), hold).pexpire(this.holdKey(ref.id), this.o.store.retentionMs).exec();
    await this.o.store.receivePiece(GATEWAY_OWNER, ref, offset, data, PIECE_BYTES);
  }

  /** The message `messageId` to `peerIdentity` was delivered (or dead-lettered): its attachments go once nothing else holds them. */
  async release(peerIdentity: string, messageId: string, refs: readonly AttachmentRef[]): Promise<void> {
    for (const ref of refs) {
      const key = this.holdKey(ref.id);
      const [, left] = (await this.o.redis.multi().srem(key, `${peerIdentity}/${messageId}`).scard(key).exec()) ?? [];
      if (Number(left?.[1] ?? 0) === 0) {
        await this.o.store.delete(ref.id);
        await this.o.redis.unlink(key);
      }
    }
  }

  /** The gateway took the message: the attachments a peer pushed for it are no longer needed here. */
  async drop(ids: readonly string[]): Promise<void> {
    for (const id of ids) await this.o.store.delete(id);
  }

  /**
   * Sends one attachment to the gateway from byte `from`, one piece per credit the gateway gives
   * (it gives the next once the last is stored inside), then closes the link. Not here: the link
   * is closed with amqp:not-found.
   */
  async serve(s: Sender, id: string, from: number): Promise<void> {
    const info = await this.o.store.info(id);
    if (!info) return void s.close({ condition: 'amqp:not-found', description: `attachment ${id} is not on the float (never pushed by the peer, or gone)` });
    const ref: AttachmentRef = { id, sha256: info.sha256, size: info.size, name: info.name, contentType: info.contentType };
    const credit = () => new Promise<boolean>((resolve) => {
      if (s.sendable()) return resolve(true);
      const onSendable = () => { cleanup(); resolve(true); };
      const onClose = () => { cleanup(); resolve(false); };
      const cleanup = () => { s.removeListener('sendable', onSendable); s.removeListener('sender_close', onClose); (s as unknown as { connection: { removeListener(e: string, f: () => void): void } }).connection.removeListener('disconnected', onClose); };
      s.once('sendable', onSendable);
      s.once('sender_close', onClose);
      (s as unknown as { connection: { once(e: string, f: () => void): void } }).connection.once('disconnected', onClose);
    });
    let offset = Math.min(from, info.size);
    if (info.size === 0 || offset === info.size) {
      if (await credit()) s.send(pieceMessage(ref, offset, Buffer.alloc(0)) as never);
      return;
    }
    for await (const chunk of this.o.store.read(id, offset, info.size - 1)) {
      for (let b = chunk; b.length > 0; b = b.subarray(PIECE_BYTES)) {
        if (!(await credit()) || s.is_closed()) return;
        const part = b.subarray(0, PIECE_BYTES);
        s.send(pieceMessage(ref, offset, part) as never);
        offset += part.length;
      }
    }
  }
}
