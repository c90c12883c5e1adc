import rhea from 'rhea';
import type { AttachmentRef } from '../attachments/reference.ts';
import { formatAttachmentRefs, parseAttachmentRefs } from '../attachments/reference.ts';
import { ValidationError } from '../core/errors.ts';

/**
 * How attachments cross the peer network (docs/attachments.md, "Across the peer network"). Before
 * a message that references attachments is sent, the sending gateway pushes each attachment to
 * the peer on the link `$attachments` of the same mutual-TLS connection, one piece per AMQP
 * message, each settled (acknowledged) only after the receiving gateway stored it in Redis. The
 * sender records the acknowledged offset per peer, so after a cut connection it resumes at the
 * first piece not acknowledged. The last piece makes the receiver hash what it stored and compare
 * it with the reference; the message itself follows, signed (the reference is a header, under the
 * envelope signature), and the receiver's claim check refuses it unless the stored hash matches.
 */
export const ATTACHMENT_LINK = '$attachments';
/** Application property: the reference (JSON, one element) this piece belongs to. */
export const PIECE_REF_PROPERTY = 'switchboard-attachment';
/** Application property: the byte offset of this piece in the attachment. */
export const PIECE_OFFSET_PROPERTY = 'switchboard-attachment-offset';
/**
 * Bytes per piece: under the listener's 1 MiB message limit. Pieces end on multiples of this, and
 * the receiver stores each as one chunk of this size.
 */
export const PIECE_BYTES = 512 * 1024;
/** Delivery rejection condition: the receiver has nothing to continue; send from byte 0 again. */
export const RESTART_CONDITION = 'switchboard:attachment-restart';

/** The AMQP message carrying one piece. */
export function pieceMessage(ref: AttachmentRef, offset: number, data: Buffer): Record<string, unknown> {
  return {
    body: rhea.message.data_section(data),
    content_type: 'application/octet-stream',
    application_properties: { [PIECE_REF_PROPERTY]: formatAttachmentRefs([ref]), [PIECE_OFFSET_PROPERTY]: offset },
  };
}

/** Reads a piece; anything malformed is a ValidationError (the delivery is rejected). */
export function readPiece(message: { body?: unknown; application_properties?: Record<string, unknown> }, maxBytes: number): { ref: AttachmentRef; offset: number; data: Buffer } {
  const props = message.application_properties ?? {};
  const raw = props[PIECE_REF_PROPERTY];
  const refs = parseAttachmentRefs(typeof raw === 'string' ? raw : undefined);
  if (refs.length !== 1) throw new ValidationError(`an attachment piece needs the property ${PIECE_REF_PROPERTY}: one reference`, 'bad_attachment_piece');
  const offset = Number(props[PIECE_OFFSET_PROPERTY]);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ValidationError(`an attachment piece needs the property ${PIECE_OFFSET_PROPERTY}: a byte offset`, 'bad_attachment_piece');
  const body = message.body as { typecode?: number; content?: unknown } | Buffer | undefined;
  const data = Buffer.isBuffer(body) ? body : body && body.typecode === 0x75 && Buffer.isBuffer(body.content) ? body.content : undefined;
  if (!data) throw new ValidationError('an attachment piece carries its bytes as one data section', 'bad_attachment_piece');
  if (data.length > maxBytes) throw new ValidationError(`an attachment piece of ${data.length} bytes is over the limit of ${maxBytes}`, 'payload_too_large');
  const ref = refs[0]!;
  if (offset + data.length > ref.size) throw new ValidationError(`an attachment piece at ${offset} of ${data.length} bytes runs past the attachment's ${ref.size} bytes`, 'bad_attachment_piece');
  return { ref, offset, data };
}
