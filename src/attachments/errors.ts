import { SwitchboardError } from '../core/errors.ts';

/** The content's SHA-256 is not the one the sender declared: nothing was kept. */
export class AttachmentHashMismatch extends SwitchboardError {
  constructor(readonly id: string, readonly expected: string, readonly actual: string) {
    super('hash_mismatch', `attachment ${id}: the content's SHA-256 is ${actual}, but ${expected} was declared; nothing was kept`, 422);
  }
}

/** The content's size is not the one declared (a truncated or padded upload): nothing was kept. */
export class AttachmentSizeMismatch extends SwitchboardError {
  constructor(readonly id: string, readonly expected: number, readonly actual: number) {
    super('size_mismatch', `attachment ${id}: ${actual} bytes arrived, but ${expected} were declared; nothing was kept`, 422);
  }
}

/** More than attachments.maxSize. */
export class AttachmentTooLarge extends SwitchboardError {
  constructor(readonly limit: number) {
    super('payload_too_large', `attachment is larger than the limit of ${limit} bytes (attachments.maxSize); nothing was kept`, 413);
  }
}

/** No complete attachment of that id here (never uploaded, still uploading, expired or deleted). */
export class AttachmentNotFound extends SwitchboardError {
  constructor(readonly id: string, detail = 'no complete attachment with this id (never uploaded, not finished, expired or deleted)') {
    super('not_found', `attachment ${id}: ${detail}`, 404);
  }
}

/** A resumable upload was continued at the wrong offset. */
export class UploadOffsetMismatch extends SwitchboardError {
  constructor(readonly id: string, readonly expected: number, readonly got: number) {
    super('offset_mismatch', `upload ${id}: continues at byte ${expected}, but Upload-Offset says ${got}; ask HEAD /api/attachments/uploads/${id} for the offset`, 409);
  }
}

/** A peer sent pieces for an attachment id this gateway holds with another owner, hash or size. */
export class AttachmentConflict extends SwitchboardError {
  constructor(readonly id: string) {
    super('attachment_conflict', `attachment ${id}: this gateway already holds an attachment of that id with another owner, hash or size`, 409);
  }
}

/** This gateway has no upload to continue at that offset (it expired or never began): send again from byte 0. */
export class AttachmentRestart extends SwitchboardError {
  static readonly CONDITION = 'switchboard:attachment-restart';
  constructor(readonly id: string) {
    super('attachment_restart', `attachment ${id}: nothing here to continue; send it again from byte 0`, 409);
  }
}

/** Another request (or a repeated peer piece) is writing this upload right now: try again shortly. */
export class UploadBusy extends SwitchboardError {
  constructor(readonly id: string) {
    super('upload_busy', `upload ${id} is being written by another request; try again when it has ended`, 409, true);
  }
}
