import { Router as ExpressRouter, type Request, type Response } from 'express';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { requireAttachmentRead, requireAttachmentUpload } from '../../auth/attachment-access.ts';
import type { AttachmentInfo, AttachmentStore } from '../../attachments/attachment-store.ts';
import { AttachmentNotFound } from '../../attachments/errors.ts';
import { PermissionDenied, SwitchboardError, ValidationError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf, principalOf } from '../middleware/authenticate.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { operation, requestOf } from '../openapi-operation.ts';
import * as z from 'zod';

const Id = z.object({ id: z.string().min(1).max(200).meta({ description: 'the attachment (or unfinished upload) id' }) });
const Upload = z.object({
  to: z.string({ error: "query parameter 'to' is required: the address the attachment is for (send there is needed)" }).meta({ description: 'the address the attachment is for: uploading needs send there' }),
  name: z.string().optional().meta({ description: 'the file name (or Content-Disposition filename); at most 255 characters, no / or \\' }),
});
const Attachment = z.looseObject({ id: z.string(), sha256: z.string(), size: z.number().int(), name: z.string(), contentType: z.string() }).meta({ id: 'Attachment' });
const UploadState = z.looseObject({ id: z.string(), offset: z.number().int(), length: z.number().int(), complete: z.boolean().optional() }).meta({ id: 'UploadState' });
const Bytes = z.string().meta({ format: 'binary' });
const Nothing = z.null().meta({ description: 'no content' });

/** The attachment calls as the OpenAPI document describes them (docs/attachments.md has the rules). */
export const attachmentOperations = {
  upload: operation({
    method: 'post', path: '/api/attachments', id: 'uploadAttachment', tag: 'attachments',
    summary: 'Upload one attachment, streamed (send on ?to=)',
    description: 'The body is the content (Content-Type kept; X-Content-SHA256 optional, checked at the end). Nothing is visible until size and hash are checked.',
    query: Upload, body: Bytes, bodyType: 'application/octet-stream',
    ok: { status: 201, description: 'stored; reference it in a message header `attachments`', schema: Attachment },
    errors: [400, 403, 404, 422],
  }),
  begin: operation({
    method: 'post', path: '/api/attachments/uploads', id: 'beginResumableUpload', tag: 'attachments',
    summary: 'Begin a resumable upload (header Upload-Length; send on ?to=)',
    query: Upload,
    ok: { status: 201, description: 'begun at offset 0', schema: UploadState },
    errors: [400, 403, 404],
  }),
  status: operation({
    method: 'get', path: '/api/attachments/uploads/:id', id: 'getResumableUpload', tag: 'attachments',
    summary: 'Where an unfinished upload resumes (its uploader only)',
    params: Id,
    ok: { status: 200, description: 'the offset to PATCH at next', schema: UploadState },
    errors: [400, 403, 404],
  }),
  append: operation({
    method: 'patch', path: '/api/attachments/uploads/:id', id: 'appendResumableUpload', tag: 'attachments',
    summary: 'Append a piece at header Upload-Offset (its uploader only)',
    description: '200 with the new offset; 201 with the attachment when the last byte arrived and the hash checked.',
    params: Id, body: Bytes, bodyType: 'application/octet-stream',
    ok: { status: 200, description: 'the new offset (201 and the attachment when complete)', schema: UploadState },
    errors: [400, 403, 404, 409, 422],
  }),
  abandon: operation({
    method: 'delete', path: '/api/attachments/uploads/:id', id: 'deleteResumableUpload', tag: 'attachments',
    summary: 'Abandon an unfinished upload (its uploader only)',
    params: Id,
    ok: { status: 204, description: 'deleted', schema: Nothing },
    errors: [400, 403, 404],
  }),
  download: operation({
    method: 'get', path: '/api/attachments/:id', id: 'downloadAttachment', tag: 'attachments',
    summary: 'Download an attachment, streamed (HEAD and Range too)',
    description: 'Its uploader, or whoever may consume or browse an address a message referencing it was accepted for. 206 for a Range, 416 for one it cannot satisfy.',
    params: Id,
    ok: { status: 200, description: 'the content', schema: Bytes, type: 'application/octet-stream' },
    errors: [400, 403, 404, 416],
  }),
  remove: operation({
    method: 'delete', path: '/api/attachments/:id', id: 'deleteAttachment', tag: 'attachments',
    summary: 'Delete an attachment (its uploader only)',
    params: Id,
    ok: { status: 204, description: 'deleted', schema: Nothing },
    errors: [400, 403, 404],
  }),
};

/**
 * Attachments over HTTP (docs/attachments.md). Bodies are streamed straight into the attachment
 * store chunk by chunk and downloads streamed out of it, so these routes sit before the JSON body
 * parser and never hold a whole file.
 */
export function attachmentRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const store = (): AttachmentStore => {
    if (!deps.attachments) throw new SwitchboardError('not_found', 'attachments are not enabled in this gateway', 404);
    return deps.attachments;
  };
  const refuse = async (req: Request, ip: string | undefined, p: Principal, target: string, err: SwitchboardError) => {
    if (!err.audited) {
      err.audited = true;
      await deps.audit.record({ action: 'attachment.refused', actor: principalId(p), ...(ip ? { ip } : {}), target, detail: `${req.method} ${req.path}: ${err.message}` });
    }
    return err;
  };
  /** Runs `fn`; a typed refusal is audited before the error handler answers it. */
  const audited = (fn: (req: Request, res: Response, p: Principal) => Promise<void>) => async (req: Request, res: Response) => {
    const p = principalOf(res);
    // Read now: once a refused upload's socket closes, the request no longer knows its address.
    const ip = req.ip;
    try {
      await fn(req, res, p);
    } catch (err) {
      // The client may still be sending: close the connection after the answer.
      if (!req.readableEnded) res.setHeader('connection', 'close');
      if (err instanceof SwitchboardError && err.status >= 400 && err.status < 500 && err.status !== 404) throw await refuse(req, ip, p, String(req.params.id ?? req.query.to ?? ''), err);
      throw err;
    }
  };

  // One request, one attachment.
  r.post(attachmentOperations.upload.path, audited(async (req, res, p) => {
    // The address first: its own refusal (missing_to, 403) says more than the schema's.
    const to = requireAttachmentUpload(deps.permissions, p, req.query.to);
    requestOf.query(attachmentOperations.upload, req);
    const info = await store().upload({ owner: principalId(p), ...describe(req), ...declared(req) }, body(req));
    deps.log.info({ attachment: info.id, size: info.size, owner: info.owner, to }, 'attachment uploaded');
    res.status(201).location(`/api/attachments/${info.id}`).json(view(info));
  }));

  // Resumable: create, then PATCH pieces at Upload-Offset until Upload-Length is reached.
  r.post(attachmentOperations.begin.path, audited(async (req, res, p) => {
    requireAttachmentUpload(deps.permissions, p, req.query.to);
    requestOf.query(attachmentOperations.begin, req);
    const { size, sha256 } = declared(req, true);
    if (size === undefined) throw new ValidationError('a resumable upload needs its length: header Upload-Length (bytes)', 'missing_length');
    const id = await store().begin({ owner: principalId(p), ...describe(req), size, ...(sha256 ? { sha256 } : {}) });
    res.status(201).location(`/api/attachments/uploads/${id}`).set('upload-offset', '0').json({ id, offset: 0, length: size });
  }));
  const ownUpload = async (id: string, p: Principal) => {
    const s = await store().uploadStatus(id);
    if (!s) throw new AttachmentNotFound(id, 'no unfinished upload with this id (never begun, already complete, expired or deleted)');
    if (s.owner !== principalId(p)) throw new PermissionDenied(principalId(p), 'resume', `upload ${id} (only its uploader may)`);
    return s;
  };
  r.get(attachmentOperations.status.path, audited(async (req, res, p) => {
    const s = await ownUpload(String(req.params.id), p);
    res.set('upload-offset', String(s.received)).json({ id: s.id, offset: s.received, length: s.declaredSize });
  }));
  r.patch(attachmentOperations.append.path, audited(async (req, res, p) => {
    const id = String(req.params.id);
    const s = await ownUpload(id, p);
    const offset = Number(req.headers['upload-offset']);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new ValidationError('header Upload-Offset must be the byte this piece starts at (HEAD or GET the upload for it)', 'bad_offset');
    const received = await store().append(id, offset, body(req));
    if (received === s.declaredSize) {
      const info = await store().complete(id);
      res.status(201).location(`/api/attachments/${id}`).set('upload-offset', String(received)).json({ ...view(info), offset: received, complete: true });
      return;
    }
    res.set('upload-offset', String(received)).json({ id, offset: received, length: s.declaredSize, complete: false });
  }));
  r.delete(attachmentOperations.abandon.path, audited(async (req, res, p) => {
    await ownUpload(String(req.params.id), p);
    await store().delete(String(req.params.id));
    res.status(204).end();
  }));

  // Express answers HEAD with this GET route; download() then sends the headers only.
  r.get(attachmentOperations.download.path, audited(async (req, res, p) => download(req, res, p)));
  r.delete(attachmentOperations.remove.path, audited(async (req, res, p) => {
    const info = await readable(String(req.params.id), p);
    if (info.owner !== principalId(p)) throw new PermissionDenied(principalId(p), 'delete', `attachment ${info.id} (only its uploader may)`);
    await store().delete(info.id);
    res.status(204).end();
  }));

  const readable = async (id: string, p: Principal): Promise<AttachmentInfo> => {
    const info = await store().info(id);
    if (!info) throw new AttachmentNotFound(id);
    requireAttachmentRead(deps.permissions, p, info);
    return info;
  };

  /** The content, whole or one byte range (RFC 9110 §14), streamed chunk by chunk. */
  const download = async (req: Request, res: Response, p: Principal) => {
    const info = await readable(String(req.params.id), p);
    let start = 0;
    let end = info.size - 1;
    const range = req.headers.range;
    const ifRange = req.headers['if-range'];
    if (range !== undefined && info.size > 0 && (ifRange === undefined || ifRange === etag(info))) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      const first = m?.[1] ? Number(m[1]) : undefined;
      const last = m?.[2] ? Number(m[2]) : undefined;
      if (!m || (first === undefined && last === undefined) || (first !== undefined && first >= info.size) || (first !== undefined && last !== undefined && last < first)) {
        res.status(416).set('content-range', `bytes */${info.size}`).json({ error: { code: 'bad_range', message: `Range '${range}' is not one satisfiable byte range of this attachment's ${info.size} bytes (e.g. bytes=0-1023)` } });
        return;
      }
      if (first === undefined) start = Math.max(0, info.size - last!);
      else {
        start = first;
        if (last !== undefined) end = Math.min(last, info.size - 1);
      }
      res.status(206).set('content-range', `bytes ${start}-${end}/${info.size}`);
    }
    res.set({
      'content-type': info.contentType,
      'content-length': String(end - start + 1),
      'accept-ranges': 'bytes',
      etag: etag(info),
      'x-content-sha256': info.sha256,
      'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(info.name || info.id)}`,
      'x-content-type-options': 'nosniff',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    // A failure mid-stream can no longer change the status: the connection is cut, so the client
    // sees a short body (Content-Length says so) instead of a wrong one.
    // objectMode false: the stream buffers bytes (16 KiB), not 16 chunks, ahead of a slow client.
    await pipeline(Readable.from(store().read(info.id, start, end), { objectMode: false }), res).catch((err: Error) => {
      deps.log.warn({ attachment: info.id, err: err.message }, 'attachment download ended early');
      res.destroy();
    });
  };

  return r;
}

/** The inbox task page links here: the same download, for a logged-in person (session). */
export function attachmentPageRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  r.get('/attachments/:id', login, async (req, res) => {
    const p = res.locals.principal as Principal;
    const store = deps.attachments;
    const info = store ? await store.info(String(req.params.id)) : undefined;
    if (!store || !info) throw new AttachmentNotFound(String(req.params.id));
    try {
      requireAttachmentRead(deps.permissions, p, info);
    } catch (err) {
      if (err instanceof SwitchboardError) await deps.audit.record({ action: 'attachment.refused', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: info.id, detail: `inbox page: ${err.message}` });
      throw err;
    }
    res.set({ 'content-type': info.contentType, 'content-length': String(info.size), 'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(info.name || info.id)}`, 'x-content-type-options': 'nosniff', etag: etag(info) });
    await pipeline(Readable.from(store.read(info.id), { objectMode: false }), res).catch(() => res.destroy());
  });
  return r;
}

/**
 * The request body as a stream of pieces. A refusal part-way (too large, Redis full) stops reading
 * without destroying the request, so the client still gets the typed answer (sent with
 * Connection: close) rather than a reset.
 */
function body(req: Request): AsyncIterable<Buffer> {
  return req.iterator({ destroyOnReturn: false });
}

function etag(info: AttachmentInfo): string {
  return `"sha256-${info.sha256}"`;
}

function view(info: AttachmentInfo) {
  return { id: info.id, sha256: info.sha256, size: info.size, name: info.name, contentType: info.contentType };
}

/** Name and type of the upload: ?name= (or the file name of Content-Disposition) and Content-Type. */
function describe(req: Request): { name: string; contentType: string } {
  const q = typeof req.query.name === 'string' ? req.query.name : undefined;
  const disposition = /filename="?([^";]+)"?/.exec(req.headers['content-disposition'] ?? '')?.[1];
  const name = (q ?? disposition ?? '').trim();
  if (name.length > 255 || /[/\\\0]/.test(name)) throw new ValidationError('?name= must be a file name of at most 255 characters without / or \\', 'bad_name');
  const type = (req.headers['content-type'] ?? 'application/octet-stream').trim();
  if (!/^[\w.+-]+\/[\w.+-]+(;.{0,200})?$/.test(type)) throw new ValidationError(`Content-Type '${type.slice(0, 100)}' is not a media type like application/pdf`, 'bad_content_type');
  return { name, contentType: type };
}

/** What the client declares, checked when the upload ends: X-Content-SHA256 (hex) and the length. */
function declared(req: Request, resumable = false): { size?: number; sha256?: string } {
  const sha = req.headers['x-content-sha256'];
  if (sha !== undefined && (typeof sha !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha))) throw new ValidationError('header X-Content-SHA256 must be the SHA-256 of the content as 64 hex digits', 'bad_sha256');
  const lengthHeader = resumable ? req.headers['upload-length'] : req.headers['content-length'];
  const size = lengthHeader !== undefined ? Number(lengthHeader) : undefined;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) throw new ValidationError('Upload-Length must be a whole number of bytes', 'bad_length');
  return { ...(size !== undefined ? { size } : {}), ...(typeof sha === 'string' ? { sha256: sha.toLowerCase() } : {}) };
}
