import type { AttachmentStore, AttachmentInfo } from '../attachments/attachment-store.ts';
import { ATTACHMENTS_HEADER, parseAttachmentRefs } from '../attachments/reference.ts';
import { SwitchboardError, ValidationError } from '../core/errors.ts';
import { principalId, type Principal } from '../core/message.ts';
import type { SendResult } from '../core/endpoint.ts';
import { CLIENT_DOORS, type SendInput, type SendInterceptor, type SendNext } from '../core/pipeline.ts';
import type { AuditLog } from './audit.ts';
import type { Permissions } from './permissions.ts';

/**
 * Who may do what with an attachment (docs/attachments.md, "Permissions"):
 * - upload: `send` on the address the attachment is meant for (`?to=`), the right its message
 *   will need anyway, so nobody without any right can fill Redis;
 * - read (download, or reference it in a message): its uploader; deployed code (flows, the
 *   gateway); and whoever may `consume` or `browse` an address a message referencing it was
 *   accepted for (a person reads what reached their inbox, a group member what reached the group).
 */

export class AttachmentRefused extends SwitchboardError {
  constructor(readonly principal: string, readonly id: string, reason: string) {
    super('forbidden', `${principal} may not read attachment ${id}: ${reason}`, 403);
  }
}

/** A message's reference does not match the stored attachment (hash, size) or points at nothing. */
export class AttachmentReferenceMismatch extends SwitchboardError {
  constructor(readonly id: string, reason: string) {
    super('attachment_mismatch', `attachment ${id} in header '${ATTACHMENTS_HEADER}': ${reason}`, 422);
  }
}

/** Why `p` may read the attachment, or undefined when it may not. */
export function attachmentReadReason(permissions: Permissions, p: Principal, info: AttachmentInfo): string | undefined {
  const who = principalId(p);
  if (p.kind === 'flow' || p.kind === 'system') return `${who} is deployed code`;
  if (info.owner === who) return `${who} uploaded it`;
  for (const address of info.readers) {
    if (p.kind === 'user' && address === `person:${p.name}`) return `it reached ${address}`;
    if (permissions.check(p, 'consume', address).allowed) return `${who} may consume on ${address}, where it was sent`;
    if (permissions.check(p, 'browse', address).allowed) return `${who} may browse on ${address}, where it was sent`;
  }
  return undefined;
}

/** Throws AttachmentRefused unless `p` may read the attachment. */
export function requireAttachmentRead(permissions: Permissions, p: Principal, info: AttachmentInfo): void {
  if (attachmentReadReason(permissions, p, info) === undefined) {
    throw new AttachmentRefused(principalId(p), info.id, info.readers.length > 0 ? `it did not upload it and may neither consume nor browse where it was sent` : 'only its uploader may read it until a message references it');
  }
}

/** Uploading takes `send` on the address the attachment is for. */
export function requireAttachmentUpload(permissions: Permissions, p: Principal, to: unknown): string {
  if (typeof to !== 'string' || to === '') throw new ValidationError("an upload names the address its message will go to: ?to=<address> (uploading takes 'send' there)", 'missing_to');
  permissions.require(p, 'send', to);
  return to;
}

/**
 * The claim-check interceptor: a message that lists attachments (header `attachments`) is let
 * through only if each exists here complete with the declared SHA-256 and size and, from a client
 * door, the sender may read it (no one attaches what they cannot read). Then its destination is
 * added to the attachment's readers and the attachment kept at least as long as the message.
 * Routes and flows move the reference on: each hop grants the next address.
 */
export function claimCheck(permissions: Permissions, store: AttachmentStore, audit: AuditLog): SendInterceptor {
  return {
    name: 'claim-check',
    send(input, next) {
      const header = input.message.headers[ATTACHMENTS_HEADER];
      return header === undefined ? next(input) : checked(input, next, header);
    },
  };

  async function checked(input: SendInput, next: SendNext, header: string): Promise<SendResult> {
    const refs = parseAttachmentRefs(header);
    const p = input.caller.principal;
    const expires = input.message.expiresAt ? Date.parse(input.message.expiresAt) : NaN;
    const keepUntil = Math.max(Date.now() + store.retentionMs, Number.isFinite(expires) ? expires : 0);
    for (const ref of refs) {
      const info = await store.info(ref.id);
      let mismatch: string | undefined;
      if (!info) mismatch = 'no complete attachment with this id here (upload it first with POST /api/attachments; it may have expired)';
      else if (info.sha256 !== ref.sha256) mismatch = `the message says SHA-256 ${ref.sha256}, the stored content has ${info.sha256}`;
      else if (info.size !== ref.size) mismatch = `the message says ${ref.size} bytes, the stored content has ${info.size}`;
      if (mismatch !== undefined || !info) {
        const err = new AttachmentReferenceMismatch(ref.id, mismatch ?? 'not found');
        await audit.record({ action: 'attachment.refused', actor: principalId(p), ...(input.caller.ip ? { ip: input.caller.ip } : {}), target: input.message.to, detail: `${input.caller.door} door, message ${input.message.id}: ${err.message}` });
        throw err;
      }
      // A refusal here is a 403: the audit-denials interceptor records it.
      if (CLIENT_DOORS.has(input.caller.door)) requireAttachmentRead(permissions, p, info);
    }
    // Granted before the destination stores the message, so nobody finds a message whose
    // attachment they cannot open yet; the sender may send there, so the grant gives away nothing.
    for (const ref of refs) await store.grant(ref.id, input.message.to, keepUntil);
    return next(input);
  }
}
