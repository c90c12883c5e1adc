import { ValidationError } from '../core/errors.ts';

/**
 * A claim check (EIP): what a message carries instead of an attachment's bytes. The bytes stay in
 * the attachment store; routes, flows and queues move only this. `sha256` and `size` are checked
 * against the stored content wherever the reference enters a gateway, and travel under the peer
 * envelope's signature (they are a message header), so a relay cannot swap the content.
 */
export interface AttachmentRef {
  id: string;
  /** Lower-case hex SHA-256 of the whole content. */
  sha256: string;
  /** Bytes. */
  size: number;
  /** File name shown to people (no path). */
  name: string;
  contentType: string;
}

/** The message header that lists a message's attachments: a JSON array of AttachmentRef. */
export const ATTACHMENTS_HEADER = 'attachments';

/** Attachments one message may reference. */
export const MAX_REFS = 32;

const ID = /^[A-Za-z0-9_-]{8,64}$/;
const SHA = /^[0-9a-f]{64}$/;

/** Parses and checks the header; a malformed list is a ValidationError naming what is wrong. */
export function parseAttachmentRefs(header: string | undefined): AttachmentRef[] {
  if (header === undefined) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(header);
  } catch {
    throw new ValidationError(`header '${ATTACHMENTS_HEADER}' must be a JSON array of {id, sha256, size, name, contentType}; it is not JSON`, 'bad_attachments');
  }
  if (!Array.isArray(raw)) throw new ValidationError(`header '${ATTACHMENTS_HEADER}' must be a JSON array of {id, sha256, size, name, contentType}`, 'bad_attachments');
  if (raw.length > MAX_REFS) throw new ValidationError(`header '${ATTACHMENTS_HEADER}' lists ${raw.length} attachments; at most ${MAX_REFS} per message`, 'bad_attachments');
  return raw.map((r: unknown, i) => {
    const where = `header '${ATTACHMENTS_HEADER}'[${i}]`;
    if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new ValidationError(`${where} must be an object {id, sha256, size, name, contentType}`, 'bad_attachments');
    const o = r as Record<string, unknown>;
    if (typeof o.id !== 'string' || !ID.test(o.id)) throw new ValidationError(`${where}.id must be an attachment id as POST /api/attachments returned it`, 'bad_attachments');
    if (typeof o.sha256 !== 'string' || !SHA.test(o.sha256)) throw new ValidationError(`${where}.sha256 must be 64 lower-case hex digits`, 'bad_attachments');
    if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw new ValidationError(`${where}.size must be a whole number of bytes`, 'bad_attachments');
    const name = typeof o.name === 'string' ? o.name : '';
    const contentType = typeof o.contentType === 'string' ? o.contentType : 'application/octet-stream';
    if (name.length > 255 || /[/\\\0]/.test(name)) throw new ValidationError(`${where}.name must be a file name of at most 255 characters without / or \\`, 'bad_attachments');
    if (!/^[\w.+-]+\/[\w.+-]+(;.{0,200})?$/.test(contentType)) throw new ValidationError(`${where}.contentType must be a media type like application/pdf`, 'bad_attachments');
    return { id: o.id, sha256: o.sha256, size: o.size, name, contentType };
  });
}

/** The header value for a list of references. */
export function formatAttachmentRefs(refs: readonly AttachmentRef[]): string {
  return JSON.stringify(refs.map((r) => ({ id: r.id, sha256: r.sha256, size: r.size, name: r.name, contentType: r.contentType })));
}
