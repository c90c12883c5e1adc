import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { USERS } from './gateway.ts';

/** Random content of `size` bytes, produced piece by piece (never held whole), and its SHA-256 once read. */
export function randomContent(size: number, piece = 100_000): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  let left = size;
  let done: string | undefined;
  const stream = new Readable({
    read() {
      if (left === 0) {
        done = hash.digest('hex');
        this.push(null);
        return;
      }
      const b = randomBytes(Math.min(piece, left));
      left -= b.length;
      hash.update(b);
      this.push(b);
    },
  });
  return { stream, sha256: () => done ?? (() => { throw new Error('content not fully read yet'); })() };
}

export function basic(user: keyof typeof USERS): string {
  return `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;
}

/** Streams `body` to the gateway with Node's http client (never buffering it), returns status and JSON. */
export function streamRequest(url: string, method: string, headers: Record<string, string>, body?: Readable): Promise<{ status: number; body: any; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let parsed: unknown = text;
        try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) body.pipe(req);
    else req.end();
  });
}

/** Downloads and hashes a body as it streams; returns status, size and SHA-256. */
export async function hashDownload(url: string, headers: Record<string, string>): Promise<{ status: number; size: number; sha256: string; headers: Headers }> {
  const res = await fetch(url, { headers });
  const hash = createHash('sha256');
  let size = 0;
  if (res.body) {
    for await (const piece of res.body as unknown as AsyncIterable<Uint8Array>) {
      hash.update(piece);
      size += piece.length;
    }
  }
  return { status: res.status, size, sha256: hash.digest('hex'), headers: res.headers };
}
