import { createHash, randomUUID, type Hash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { Conflict, ValidationError } from '../core/errors.ts';
import { AttachmentConflict, AttachmentHashMismatch, AttachmentNotFound, AttachmentRestart, AttachmentSizeMismatch, AttachmentTooLarge, UploadBusy, UploadOffsetMismatch } from './errors.ts';
import type { AttachmentRef } from './reference.ts';

export interface AttachmentStoreOptions {
  redis: Redis;
  prefix: string;
  /** Bytes per stored chunk: what one Redis command carries and what the gateway holds at once per stream. @defaultValue 1 MiB */
  chunkSize?: number;
  /** Largest attachment. */
  maxSize: number;
  /** A complete attachment lives this long after its upload or its latest message reference, then goes. */
  retentionMs: number;
  /** An unfinished upload is dropped after this long without a byte (its resume window). */
  stagingTtlMs: number;
  /** Throws (a retryable 503) while new work must be refused: the Redis memory guard. Called before each chunk. */
  admit?: () => void;
}

/** A complete attachment: its reference plus who uploaded it and who may read it. */
export interface AttachmentInfo extends AttachmentRef {
  /** principalId of the uploader (for a peer: the peer's network identity). */
  owner: string;
  createdAt: string;
  /** Addresses messages referencing it were accepted for; who may consume or browse one may read it. */
  readers: string[];
}

/** An upload that is not finished: how far it got, so the client can resume. */
export interface UploadStatus {
  id: string;
  owner: string;
  received: number;
  declaredSize?: number;
}

export interface NewUpload {
  owner: string;
  name: string;
  contentType: string;
  /** When given, the upload completes only at exactly this many bytes. */
  size?: number;
  /** When given, the upload completes only if the content hashes to this (hex). */
  sha256?: string;
}

const MiB = 1_048_576;

/**
 * Attachments in Redis, chunked: every process of a fleet that shares the Redis (or cluster) sees
 * the same attachments, and no process ever holds more than one chunk of a stream in memory. Each
 * attachment's keys share one hash tag, `{att:<id>}` — its meta hash, its chunk hash (field n is
 * chunk n) and its readers set — so each change is one MULTI in one slot, and a cluster spreads
 * attachments over its masters by id.
 *
 * An upload is invisible until complete: `info` and `read` see only attachments whose size and
 * SHA-256 were checked; a failed, oversized or truncated one-shot upload is deleted, and an
 * abandoned resumable one expires after `stagingTtlMs`.
 */
export class AttachmentStore {
  readonly chunkSize: number;

  constructor(private readonly o: AttachmentStoreOptions) {
    this.chunkSize = o.chunkSize ?? MiB;
  }

  get maxSize(): number {
    return this.o.maxSize;
  }

  private keys(id: string) {
    const tag = `${this.o.prefix}:{att:${id}}`;
    return { meta: `${tag}:meta`, chunks: `${tag}:chunks`, readers: `${tag}:readers`, writer: `${tag}:writer`, sent: `${tag}:sent` };
  }

  /** Starts an upload; nothing is visible until `complete`. */
  async begin(u: NewUpload, id: string = randomUUID(), chunkSize = this.chunkSize): Promise<string> {
    if (u.size !== undefined && u.size > this.o.maxSize) throw new AttachmentTooLarge(this.o.maxSize);
    this.o.admit?.();
    const k = this.keys(id);
    await this.o.redis.multi()
      .hset(k.meta, {
        state: 'uploading', owner: u.owner, name: u.name, contentType: u.contentType, received: 0, chunkSize, createdAt: new Date().toISOString(),
        ...(u.size !== undefined ? { declaredSize: u.size } : {}), ...(u.sha256 !== undefined ? { declaredSha256: u.sha256 } : {}),
      })
      .pexpire(k.meta, this.o.stagingTtlMs)
      .exec();
    return id;
  }

  /** An unfinished upload's progress (undefined when there is none of that id). */
  async uploadStatus(id: string): Promise<UploadStatus | undefined> {
    const m = await this.o.redis.hgetall(this.keys(id).meta);
    if (m.state !== 'uploading') return undefined;
    return { id, owner: m.owner!, received: Number(m.received), ...(m.declaredSize !== undefined ? { declaredSize: Number(m.declaredSize) } : {}) };
  }

  /**
   * Appends a stream at byte `from` (which must be where the upload stands), chunk by chunk; a
   * partial last chunk is stored too, so a resume continues exactly after the last stored byte.
   * `hash`, when given, is updated with every byte (a one-shot upload hashes as it streams).
   * One writer per upload at a time. Returns the bytes stored so far.
   */
  async append(id: string, from: number, source: AsyncIterable<Buffer | string> | Iterable<Buffer>, hash?: Hash): Promise<number> {
    const k = this.keys(id);
    const token = randomUUID();
    if ((await this.o.redis.set(k.writer, token, 'PX', 60_000, 'NX')) !== 'OK') throw new UploadBusy(id);
    try {
      const m = await this.o.redis.hgetall(k.meta);
      if (m.state !== 'uploading') throw new AttachmentNotFound(id, 'no unfinished upload with this id (never begun, already complete, expired or deleted)');
      const chunkSize = Number(m.chunkSize);
      const limit = m.declaredSize !== undefined ? Number(m.declaredSize) : this.o.maxSize;
      let stored = Number(m.received);
      if (from !== stored) throw new UploadOffsetMismatch(id, stored, from);
      let index = Math.floor(stored / chunkSize);
      // A partial last chunk is filled up from where it stopped.
      let pending: Buffer[] = [];
      let pendingBytes = stored % chunkSize;
      if (pendingBytes > 0) {
        const tail = await this.o.redis.hgetBuffer(k.chunks, String(index));
        if (!tail || tail.length !== pendingBytes) throw new Conflict(`upload ${id}: its stored tail is not what its progress says; start a new upload`);
        pending = [tail];
      }
      const flush = async (final: boolean) => {
        while (pendingBytes >= chunkSize || (final && pendingBytes > 0)) {
          const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
          const chunk = all.subarray(0, Math.min(chunkSize, all.length));
          const rest = all.subarray(chunk.length);
          this.o.admit?.();
          const full = chunk.length === chunkSize;
          // Chunk and progress in one MULTI: a crash leaves both or neither.
          await this.o.redis.multi()
            .hset(k.chunks, String(index), chunk)
            .hset(k.meta, 'received', index * chunkSize + chunk.length)
            .pexpire(k.meta, this.o.stagingTtlMs)
            .pexpire(k.chunks, this.o.stagingTtlMs)
            .pexpire(k.writer, 60_000)
            .exec();
          stored = index * chunkSize + chunk.length;
          pending = rest.length > 0 ? [rest] : [];
          pendingBytes = rest.length;
          if (full) index++;
          else break;
        }
      };
      for await (const piece of source) {
        const b = typeof piece === 'string' ? Buffer.from(piece) : piece;
        const total = index * chunkSize + pendingBytes + b.length;
        if (total > limit) {
          if (m.declaredSize !== undefined) throw new AttachmentSizeMismatch(id, limit, total);
          throw new AttachmentTooLarge(this.o.maxSize);
        }
        hash?.update(b);
        pending.push(b);
        pendingBytes += b.length;
        if (pendingBytes >= chunkSize) await flush(false);
      }
      await flush(true);
      return stored;
    } finally {
      // Released only if still ours (a stalled writer's lock may have passed to another).
      await this.o.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0", 1, k.writer, token).catch(() => undefined);
    }
  }

  /**
   * Makes an upload visible once its size and SHA-256 are right. `streamedSha256` is the hash of
   * every byte when one request streamed them all; otherwise the stored chunks are hashed again
   * (read back one at a time). A mismatch deletes the upload.
   */
  async complete(id: string, streamedSha256?: string): Promise<AttachmentInfo> {
    const k = this.keys(id);
    const m = await this.o.redis.hgetall(k.meta);
    if (m.state !== 'uploading') throw new AttachmentNotFound(id, 'no unfinished upload with this id (never begun, already complete, expired or deleted)');
    const size = Number(m.received);
    if (m.declaredSize !== undefined && size !== Number(m.declaredSize)) {
      await this.delete(id);
      throw new AttachmentSizeMismatch(id, Number(m.declaredSize), size);
    }
    const sha256 = streamedSha256 ?? (await this.hashStored(id, size, Number(m.chunkSize)));
    if (m.declaredSha256 !== undefined && m.declaredSha256 !== sha256) {
      await this.delete(id);
      throw new AttachmentHashMismatch(id, m.declaredSha256, sha256);
    }
    await this.o.redis.multi()
      .hset(k.meta, { state: 'complete', sha256, size })
      .pexpire(k.meta, this.o.retentionMs)
      .pexpire(k.chunks, this.o.retentionMs)
      .exec();
    return (await this.info(id))!;
  }

  /**
   * One request, one attachment: begin, stream, complete. Anything that goes wrong on the way (a
   * wrong size or hash, too large, the client gone) deletes what was stored.
   */
  async upload(u: NewUpload, source: AsyncIterable<Buffer | string>): Promise<AttachmentInfo> {
    const id = await this.begin(u);
    const hash = createHash('sha256');
    try {
      await this.append(id, 0, source, hash);
      return await this.complete(id, hash.digest('hex'));
    } catch (err) {
      await this.delete(id).catch(() => undefined);
      throw err;
    }
  }

  private async hashStored(id: string, size: number, chunkSize: number): Promise<string> {
    const hash = createHash('sha256');
    for await (const c of this.chunksOf(id, 0, size - 1, chunkSize)) hash.update(c);
    return hash.digest('hex');
  }

  /** A complete attachment, or undefined. */
  async info(id: string): Promise<AttachmentInfo | undefined> {
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(id)) return undefined;
    const k = this.keys(id);
    const [meta, readers] = await Promise.all([this.o.redis.hgetall(k.meta), this.o.redis.smembers(k.readers)]);
    if (meta.state !== 'complete') return undefined;
    return { id, sha256: meta.sha256!, size: Number(meta.size), name: meta.name ?? '', contentType: meta.contentType ?? 'application/octet-stream', owner: meta.owner!, createdAt: meta.createdAt!, readers };
  }

  /**
   * Bytes `start`..`end` (inclusive) of a complete attachment, one chunk at a time: the consumer's
   * pace (backpressure) decides when the next chunk is read from Redis.
   */
  async *read(id: string, start = 0, end?: number): AsyncGenerator<Buffer> {
    const m = await this.o.redis.hmget(this.keys(id).meta, 'state', 'size', 'chunkSize');
    if (m[0] !== 'complete') throw new AttachmentNotFound(id);
    const size = Number(m[1]);
    const last = end ?? size - 1;
    if (start < 0 || last >= size || (start > last && size > 0)) throw new ValidationError(`attachment ${id}: bytes ${start}-${last} are outside its ${size} bytes`, 'bad_range');
    yield* this.chunksOf(id, start, last, Number(m[2]));
  }

  private async *chunksOf(id: string, start: number, last: number, chunkSize: number): AsyncGenerator<Buffer> {
    if (last < start) return;
    const k = this.keys(id);
    for (let i = Math.floor(start / chunkSize); i <= Math.floor(last / chunkSize); i++) {
      const chunk = await this.o.redis.hgetBuffer(k.chunks, String(i));
      if (!chunk) throw new AttachmentNotFound(id, `chunk ${i} is gone (the attachment expired or was deleted while being read)`);
      const from = i === Math.floor(start / chunkSize) ? start - i * chunkSize : 0;
      const to = Math.min(chunk.length, last - i * chunkSize + 1);
      yield from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to);
    }
  }

  /**
   * A message referencing the attachment was accepted for `address`: whoever may read there may
   * read it, and it lives at least until `keepUntil` (ms since the epoch), never shorter than it
   * already would.
   */
  async grant(id: string, address: string, keepUntil: number): Promise<void> {
    const k = this.keys(id);
    const ttl = Math.max(1000, keepUntil - Date.now());
    await this.o.redis.multi()
      .sadd(k.readers, address)
      .call('PEXPIRE', k.meta, String(ttl), 'GT')
      .call('PEXPIRE', k.chunks, String(ttl), 'GT')
      .exec();
    // The readers set was just made (no TTL to be greater than): give it the attachment's own.
    const metaTtl = await this.o.redis.pttl(k.meta);
    if (metaTtl > 0) await this.o.redis.pexpire(k.readers, metaTtl);
  }

  /** When a complete attachment goes by itself (ms since the epoch), or undefined. */
  async expiresAt(id: string): Promise<number | undefined> {
    const ttl = await this.o.redis.pttl(this.keys(id).meta);
    return ttl > 0 ? Date.now() + ttl : undefined;
  }

  /** Deletes the attachment or upload (UNLINK: a 2 GB chunk hash is freed in the background). */
  async delete(id: string): Promise<boolean> {
    const k = this.keys(id);
    return (await this.o.redis.unlink(k.meta, k.chunks, k.readers, k.writer, k.sent)) > 0;
  }

  /**
   * A piece of an attachment arriving from a peer (`owner` is the peer's principal id). Pieces
   * come in order and may repeat (an acknowledgement lost on a cut connection): a piece already
   * stored is a duplicate and changes nothing. The last piece completes the attachment, which
   * hashes what was stored and compares it with the reference the peer sent (deleting it on a
   * mismatch). Throws AttachmentRestart when this gateway has no upload to continue (it expired):
   * the sender starts again from byte 0.
   */
  async receivePiece(owner: string, ref: AttachmentRef, offset: number, data: Buffer, pieceBytes = this.chunkSize): Promise<'stored' | 'duplicate' | 'complete'> {
    const k = this.keys(ref.id);
    const m = await this.o.redis.hgetall(k.meta);
    const same = m.owner === owner && (m.sha256 ?? m.declaredSha256) === ref.sha256 && Number(m.size ?? m.declaredSize) === ref.size;
    if (m.state !== undefined && !same) throw new AttachmentConflict(ref.id);
    if (m.state === 'complete') return 'complete';
    if (m.state === undefined) {
      if (offset !== 0) throw new AttachmentRestart(ref.id);
      // Chunks the size of the sender's pieces: each piece is written once, never read back to fill a chunk.
      await this.begin({ owner, name: ref.name, contentType: ref.contentType, size: ref.size, sha256: ref.sha256 }, ref.id, Math.min(Math.max(pieceBytes, 16 * 1024), 64 * 1024 ** 2));
    }
    const received = Number(m.received ?? 0);
    if (offset + data.length <= received && !(data.length === 0 && received === 0)) {
      // A repeat of the last piece while the first delivery of it is still completing (hashing):
      // answered only once the attachment is complete, so the message never overtakes it.
      if (received === ref.size) return this.completePiece(ref.id);
      return 'duplicate';
    }
    if (offset !== received) throw new AttachmentRestart(ref.id);
    // Hashed as the pieces arrive when they arrive here in order; otherwise hashed again at the end.
    let running = this.running.get(ref.id);
    if (offset === 0) running = { offset: 0, hash: createHash('sha256') };
    if (running && running.offset !== offset) running = undefined;
    this.running.delete(ref.id);
    const stored = await this.append(ref.id, offset, [data], running?.hash);
    if (running) {
      running.offset = stored;
      this.running.set(ref.id, running);
      // A few transfers at a time per process; an old entry only costs a second hash at the end.
      if (this.running.size > 64) this.running.delete(this.running.keys().next().value!);
    }
    if (stored < ref.size) return 'stored';
    this.running.delete(ref.id);
    return this.completePiece(ref.id, running?.hash.digest('hex'));
  }

  private readonly running = new Map<string, { offset: number; hash: Hash }>();

  /** Completes a received attachment; a concurrent completion by another delivery counts too. */
  private async completePiece(id: string, sha256?: string): Promise<'complete'> {
    try {
      await this.complete(id, sha256);
    } catch (err) {
      if (!(err instanceof AttachmentNotFound) || !(await this.info(id))) throw err;
    }
    return 'complete';
  }

  /** How many bytes of an attachment the peer `alias` has acknowledged (the resume point). */
  async sentTo(id: string, alias: string): Promise<number> {
    return Number((await this.o.redis.hget(this.keys(id).sent, alias)) ?? 0);
  }

  /** Records the peer's acknowledgement up to `offset`; kept as long as the attachment. */
  async setSentTo(id: string, alias: string, offset: number): Promise<void> {
    const k = this.keys(id);
    const ttl = await this.o.redis.pttl(k.meta);
    await this.o.redis.multi().hset(k.sent, alias, offset).pexpire(k.sent, ttl > 0 ? ttl : this.o.stagingTtlMs).exec();
  }

  /** The default retention, for callers that set a message's. */
  get retentionMs(): number {
    return this.o.retentionMs;
  }
}
