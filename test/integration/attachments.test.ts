// Attachments (issue 17 point 6): streamed, chunked, hashed content that messages carry by
// reference; tried as an attacker would (other users' attachments, wrong hashes, truncated and
// oversized uploads), against a real Redis through the real HTTP door.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor, USERS } from '../support/gateway.ts';
import { basic, hashDownload, randomContent, streamRequest } from '../support/attachments.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis;
let gw: Gateway;
let client: Redis;
let prefix: string;
const CHUNK = 64 * 1024;

before(async () => {
  redis = await startTestRedis();
  client = new Redis(redis.url);
  prefix = `att${Math.random().toString(36).slice(2, 8)}`;
  gw = await startTestGateway(redis.url, {
    redis: { url: redis.url, prefix },
    attachments: { chunkSize: '64kb', maxSize: '4mb' },
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'person:**', verbs: ['send'] }] },
      { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});

after(async () => {
  await gw?.stop();
  client?.disconnect();
  await redis?.dispose();
});

/** Every key of every attachment (finished or not) in Redis. */
async function attachmentKeys(): Promise<string[]> {
  return client.keys(`${prefix}:{att:*`);
}

async function upload(user: keyof typeof USERS, size: number, opts: { to?: string; name?: string; sha256?: string } = {}) {
  const content = randomContent(size, 100_000 + 7);
  const headers: Record<string, string> = { authorization: basic(user), 'content-type': 'application/pdf' };
  if (opts.sha256) headers['x-content-sha256'] = opts.sha256;
  const r = await streamRequest(`${gw.url}/api/attachments?to=${enc(opts.to ?? 'queue:in.docs')}&name=${enc(opts.name ?? 'report.pdf')}`, 'POST', headers, content.stream);
  return { ...r, sha256: () => content.sha256() };
}

async function audited(action: string, actor: string): Promise<{ target?: string; detail?: string }[]> {
  const r = await api(gw.url, 'GET', `/api/audit?action=${action}&actor=${enc(actor)}&limit=100`, { user: 'ops' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.entries;
}

test('a streamed upload (no Content-Length, many chunks) comes back byte for byte; the SHA-256 is computed while streaming', async () => {
  const size = 3 * CHUNK * 5 + 12_345; // not a multiple of the chunk size
  const up = await upload('clerk', size);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.size, size);
  assert.equal(up.body.sha256, up.sha256());
  assert.equal(up.body.name, 'report.pdf');
  assert.equal(up.body.contentType, 'application/pdf');
  // Stored as chunks of the configured size under one hash tag.
  assert.equal(await client.hlen(`${prefix}:{att:${up.body.id}}:chunks`), Math.ceil(size / CHUNK));
  const down = await hashDownload(`${gw.url}/api/attachments/${up.body.id}`, { authorization: basic('clerk') });
  assert.equal(down.status, 200);
  assert.equal(down.size, size);
  assert.equal(down.sha256, up.sha256());
  assert.equal(down.headers.get('x-content-sha256'), up.sha256());
  assert.equal(down.headers.get('content-type'), 'application/pdf');
  assert.match(down.headers.get('content-disposition') ?? '', /report\.pdf/);
});

test('Range requests return exactly the bytes asked for, across chunk boundaries; an unsatisfiable range is 416', async () => {
  const content = randomBytes(5 * CHUNK + 100);
  const r = await fetch(`${gw.url}/api/attachments?to=queue:in.docs&name=r.bin`, { method: 'POST', headers: { authorization: basic('clerk'), 'content-type': 'application/octet-stream' }, body: content });
  const { id } = (await r.json()) as { id: string };
  for (const [range, from, to] of [['bytes=0-9', 0, 9], [`bytes=${CHUNK - 5}-${2 * CHUNK + 5}`, CHUNK - 5, 2 * CHUNK + 5], ['bytes=-50', content.length - 50, content.length - 1], [`bytes=${4 * CHUNK}-`, 4 * CHUNK, content.length - 1]] as const) {
    const res = await fetch(`${gw.url}/api/attachments/${id}`, { headers: { authorization: basic('clerk'), range } });
    assert.equal(res.status, 206, range);
    assert.equal(res.headers.get('content-range'), `bytes ${from}-${to}/${content.length}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), content.subarray(from, to + 1), range);
  }
  const bad = await fetch(`${gw.url}/api/attachments/${id}`, { headers: { authorization: basic('clerk'), range: `bytes=${content.length}-` } });
  assert.equal(bad.status, 416);
  assert.equal(bad.headers.get('content-range'), `bytes */${content.length}`);
  assert.equal(((await bad.json()) as any).error.code, 'bad_range');
});

test('a declared SHA-256 that does not match the content is refused (422, audited) and nothing is kept', async () => {
  const keysBefore = (await attachmentKeys()).length;
  const up = await upload('clerk', 200_000, { sha256: 'a'.repeat(64) });
  assert.equal(up.status, 422, JSON.stringify(up.body));
  assert.equal(up.body.error.code, 'hash_mismatch');
  assert.match(up.body.error.message, /nothing was kept/);
  assert.equal((await attachmentKeys()).length, keysBefore);
  const entries = await waitFor(async () => (await audited('attachment.refused', 'user:clerk')).find((e) => /SHA-256/.test(e.detail ?? '')), 5000, 'the refusal in the audit trail');
  assert.ok(entries);
});

test('an upload larger than attachments.maxSize is refused with 413 while streaming, and nothing is kept', async () => {
  const keysBefore = (await attachmentKeys()).length;
  const up = await upload('clerk', 5 * 1024 * 1024).catch((err: Error) => ({ status: -1, body: err.message }));
  // The gateway answers 413 and closes; a client still sending may see the reset instead.
  if (up.status !== -1) {
    assert.equal(up.status, 413, JSON.stringify(up.body));
    assert.equal(up.body.error.code, 'payload_too_large');
  }
  await waitFor(async () => (await attachmentKeys()).length === keysBefore, 5000, 'the partial upload to be deleted');
  // A declared length over the limit is refused before a byte is stored.
  const declared = await streamRequest(`${gw.url}/api/attachments?to=queue:in.docs`, 'POST', { authorization: basic('clerk'), 'content-length': String(5 * 1024 * 1024) });
  assert.equal(declared.status, 413);
  assert.equal((await attachmentKeys()).length, keysBefore);
});

test('a truncated upload (the client goes away before Content-Length bytes) leaves nothing visible and nothing stored', async () => {
  const keysBefore = (await attachmentKeys()).length;
  await new Promise<void>((resolve) => {
    const req = request(`${gw.url}/api/attachments?to=queue:in.docs`, { method: 'POST', headers: { authorization: basic('clerk'), 'content-length': String(1_000_000) } });
    req.on('error', () => resolve());
    req.on('response', () => resolve());
    req.write(randomBytes(300_000), () => setTimeout(() => { req.destroy(); resolve(); }, 300));
  });
  await waitFor(async () => (await attachmentKeys()).length === keysBefore, 10_000, 'the truncated upload to be deleted');
});

test('nobody without send on the address may upload (403, audited); the upload must name its address', async () => {
  const keysBefore = (await attachmentKeys()).length;
  const up = await upload('nobody', 1000, { to: 'queue:in.docs' });
  assert.equal(up.status, 403, JSON.stringify(up.body));
  assert.match(up.body.error.message, /user:nobody may not send on queue:in\.docs/);
  const noTo = await streamRequest(`${gw.url}/api/attachments`, 'POST', { authorization: basic('clerk') });
  assert.equal(noTo.status, 400);
  assert.equal(noTo.body.error.code, 'missing_to');
  const anon = await streamRequest(`${gw.url}/api/attachments?to=queue:in.docs`, 'POST', {});
  assert.equal(anon.status, 401);
  assert.equal((await attachmentKeys()).length, keysBefore);
  await waitFor(async () => (await audited('attachment.refused', 'user:nobody')).length > 0, 5000, 'the refusal in the audit trail');
});

test("someone else's attachment cannot be read or referenced: only its uploader, then whoever may consume or browse where a message took it", async () => {
  const up = await upload('clerk', 70_000, { to: 'queue:in.docs' });
  assert.equal(up.status, 201);
  const ref = { id: up.body.id, sha256: up.body.sha256, size: up.body.size, name: 'report.pdf', contentType: 'application/pdf' };
  // Before any message: only the uploader.
  for (const user of ['ops', 'nobody'] as const) {
    const r = await api(gw.url, 'GET', `/api/attachments/${ref.id}`, { user });
    assert.equal(r.status, 403, `${user}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, /may not read attachment/);
  }
  await waitFor(async () => (await audited('attachment.refused', 'user:nobody')).some((e) => e.target === ref.id), 5000, 'the refused read in the audit trail');
  // ops may not pass clerk's attachment off as its own in a message (403, audited, nothing delivered).
  const stolen = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:out.stolen', body: 'x', headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(stolen.status, 403, JSON.stringify(stolen.body));
  assert.match(stolen.body.error.message, /may not read attachment/);
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc('queue:out.stolen')}`, { user: 'ops' })).body.depth, 0);
  // clerk sends it to queue:in.docs: ops (consume on queue:**) may now read it, nobody still not.
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.docs', body: { invoice: 7 }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const read = await hashDownload(`${gw.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(read.status, 200);
  assert.equal(read.sha256, ref.sha256);
  assert.equal((await api(gw.url, 'GET', `/api/attachments/${ref.id}`, { user: 'nobody' })).status, 403);
  // The message carries the reference, not the bytes.
  const browsed = await api(gw.url, 'GET', `/api/queues/${enc('queue:in.docs')}`, { user: 'ops' });
  const m = browsed.body.messages.find((x: any) => x.id === sent.body.id);
  assert.deepEqual(JSON.parse(m.headers.attachments), [ref]);
  // Deleting: only the uploader.
  assert.equal((await api(gw.url, 'DELETE', `/api/attachments/${ref.id}`, { user: 'ops' })).status, 403);
});

test('a message whose reference has the wrong hash or size, or names no attachment, is refused (422, audited) and not delivered', async () => {
  const up = await upload('clerk', 10_000);
  const good = { id: up.body.id, sha256: up.body.sha256, size: up.body.size, name: 'a.pdf', contentType: 'application/pdf' };
  const cases = [
    [{ ...good, sha256: createHash('sha256').update('other').digest('hex') }, /stored content has/],
    [{ ...good, size: good.size + 1 }, /stored content has 10000/],
    [{ ...good, id: 'no-such-attachment-0001' }, /no complete attachment/],
  ] as const;
  for (const [ref, why] of cases) {
    const r = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.mismatch', body: 'x', headers: { attachments: JSON.stringify([ref]) } } });
    assert.equal(r.status, 422, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'attachment_mismatch');
    assert.match(r.body.error.message, why);
  }
  const malformed = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.mismatch', body: 'x', headers: { attachments: '{not json' } } });
  assert.equal(malformed.status, 400);
  assert.equal(malformed.body.error.code, 'bad_attachments');
  assert.equal((await api(gw.url, 'GET', `/api/queues/${enc('queue:in.mismatch')}`, { user: 'ops' })).body.depth, 0);
  await waitFor(async () => (await audited('attachment.refused', 'user:clerk')).some((e) => e.target === 'queue:in.mismatch'), 5000, 'the refused reference in the audit trail');
});

test('a resumable upload survives a cut connection: HEAD says where it stands, PATCH continues there, the hash is checked at the end', async () => {
  const content = randomBytes(4 * CHUNK + 999);
  const sha256 = createHash('sha256').update(content).digest('hex');
  const created = await api(gw.url, 'POST', '/api/attachments/uploads?to=queue:in.docs&name=big.bin', { user: 'clerk', headers: { 'upload-length': String(content.length), 'x-content-sha256': sha256 } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id as string;
  // First piece arrives whole (not on a chunk boundary).
  const first = await fetch(`${gw.url}/api/attachments/uploads/${id}`, { method: 'PATCH', headers: { authorization: basic('clerk'), 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' }, body: content.subarray(0, CHUNK + 10) });
  assert.equal(first.status, 200, await first.clone().text());
  assert.equal(((await first.json()) as any).offset, CHUNK + 10);
  // Second piece: the connection is cut part-way.
  await new Promise<void>((resolve) => {
    const req = request(`${gw.url}/api/attachments/uploads/${id}`, { method: 'PATCH', headers: { authorization: basic('clerk'), 'upload-offset': String(CHUNK + 10), 'content-length': String(content.length - CHUNK - 10) } });
    req.on('error', () => resolve());
    req.write(content.subarray(CHUNK + 10, 3 * CHUNK + 100), () => setTimeout(() => { req.destroy(); resolve(); }, 300));
  });
  // Not visible, not downloadable.
  assert.equal((await api(gw.url, 'GET', `/api/attachments/${id}`, { user: 'clerk' })).status, 404);
  const status = await waitFor(async () => {
    const s = await api(gw.url, 'GET', `/api/attachments/uploads/${id}`, { user: 'clerk' });
    return s.status === 200 ? s : undefined; // the writer lock is released when the cut request ends
  }, 10_000, 'the upload status');
  const offset = Number(status!.headers.get('upload-offset'));
  assert.ok(offset >= CHUNK + 10 && offset <= 3 * CHUNK + 100, `offset ${offset}`);
  // A wrong offset is refused, naming the right one; another user may not continue it.
  const wrong = await fetch(`${gw.url}/api/attachments/uploads/${id}`, { method: 'PATCH', headers: { authorization: basic('clerk'), 'upload-offset': '0' }, body: content.subarray(0, 10) });
  assert.equal(wrong.status, 409);
  assert.match(((await wrong.json()) as any).error.message, new RegExp(`continues at byte ${offset}`));
  assert.equal((await api(gw.url, 'GET', `/api/attachments/uploads/${id}`, { user: 'ops' })).status, 403);
  const rest = await fetch(`${gw.url}/api/attachments/uploads/${id}`, { method: 'PATCH', headers: { authorization: basic('clerk'), 'upload-offset': String(offset) }, body: content.subarray(offset) });
  assert.equal(rest.status, 201, await rest.clone().text());
  const done = (await rest.json()) as any;
  assert.equal(done.sha256, sha256);
  assert.equal(done.complete, true);
  const down = await hashDownload(`${gw.url}/api/attachments/${id}`, { authorization: basic('clerk') });
  assert.equal(down.sha256, sha256);
  assert.equal(down.size, content.length);
});

test('a resumable upload whose content does not hash to the declared SHA-256 is deleted at the end', async () => {
  const content = randomBytes(CHUNK + 5);
  const created = await api(gw.url, 'POST', '/api/attachments/uploads?to=queue:in.docs', { user: 'clerk', headers: { 'upload-length': String(content.length), 'x-content-sha256': 'b'.repeat(64) } });
  const id = created.body.id as string;
  const r = await fetch(`${gw.url}/api/attachments/uploads/${id}`, { method: 'PATCH', headers: { authorization: basic('clerk'), 'upload-offset': '0' }, body: content });
  assert.equal(r.status, 422);
  assert.equal(((await r.json()) as any).error.code, 'hash_mismatch');
  assert.equal(await client.exists(`${prefix}:{att:${id}}:meta`, `${prefix}:{att:${id}}:chunks`), 0);
});

test('a referenced attachment lives as long as its message: the reference extends its expiry to the message retention or expiresAt', async () => {
  const up = await upload('clerk', 1000);
  const ref = { id: up.body.id, sha256: up.body.sha256, size: up.body.size, name: 'x', contentType: 'application/pdf' };
  const meta = `${prefix}:{att:${ref.id}}:meta`;
  const before = await client.pttl(meta);
  assert.ok(before > 0, 'a complete attachment has an expiry (attachments.retention)');
  const far = new Date(Date.now() + 90 * 86_400_000).toISOString();
  const r = await api(gw.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.docs', body: 'x', expiresAt: far, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const afterTtl = await client.pttl(meta);
  assert.ok(afterTtl > 89 * 86_400_000, `expiry extended to the message's expiresAt (pttl ${afterTtl})`);
  assert.ok(await client.pttl(`${prefix}:{att:${ref.id}}:chunks`) > 89 * 86_400_000);
  assert.ok(await client.pttl(`${prefix}:{att:${ref.id}}:readers`) > 89 * 86_400_000);
});

/** Logs in on the web (form + CSRF) and returns the session cookie. */
async function webLogin(user: keyof typeof USERS): Promise<string> {
  const page = await fetch(`${gw.url}/login`, { redirect: 'manual' });
  const cookie = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
  const r = await fetch(`${gw.url}/login`, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf, username: user, password: USERS[user], next: '/inbox' }).toString() });
  assert.equal(r.status, 303);
  const sid = r.headers.getSetCookie().map((c) => c.split(';')[0]).find((c) => c!.startsWith('sb.sid='));
  return sid ?? cookie;
}

test('the inbox task page links to the attachments of its message; the link downloads for the person, and is refused to others', async () => {
  const up = await upload('ops', 150_000, { to: 'person:ops', name: 'invoice 7.pdf' });
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const ref = { id: up.body.id, sha256: up.body.sha256, size: up.body.size, name: 'invoice 7.pdf', contentType: 'application/pdf' };
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'person:ops', subject: 'Invoice to check', body: { invoice: 7 }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const tasks = await waitFor(async () => { const t = (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks; return t.find((x: any) => x.title === 'Invoice to check'); }, 10_000, 'the task');
  assert.deepEqual(tasks.attachments, [ref]);
  const cookie = await webLogin('ops');
  const page = await fetch(`${gw.url}/tasks/${enc(tasks.id)}`, { headers: { cookie } });
  const html = await page.text();
  assert.equal(page.status, 200);
  assert.match(html, new RegExp(`href="/attachments/${ref.id}"`));
  assert.match(html, /invoice 7\.pdf/);
  const down = await hashDownload(`${gw.url}/attachments/${ref.id}`, { cookie });
  assert.equal(down.status, 200);
  assert.equal(down.sha256, ref.sha256);
  const other = await fetch(`${gw.url}/attachments/${ref.id}`, { headers: { cookie: await webLogin('clerk'), accept: 'application/json' } });
  assert.equal(other.status, 403);
});

test('pieces from a peer: in order, repeats change nothing, a gap asks for a restart, an id held by someone else is refused, a wrong hash deletes it', async () => {
  const { AttachmentStore } = await import('../../src/attachments/attachment-store.ts');
  const store = new AttachmentStore({ redis: client, prefix: `${prefix}x`, maxSize: 1024 ** 2, retentionMs: 60_000, stagingTtlMs: 60_000 });
  const data = randomBytes(40_000);
  const ref = { id: 'peer-piece-test-0001', sha256: createHash('sha256').update(data).digest('hex'), size: data.length, name: 'p.bin', contentType: 'application/octet-stream' };
  const peer = 'peer:O=Bank A,L=London,C=GB';
  // A first piece that is not at 0, for an attachment not begun here: start again.
  await assert.rejects(store.receivePiece(peer, ref, 16_384, data.subarray(16_384, 32_768), 16_384), (e: any) => e.code === 'attachment_restart');
  assert.equal(await store.receivePiece(peer, ref, 0, data.subarray(0, 16_384), 16_384), 'stored');
  assert.equal(await store.receivePiece(peer, ref, 0, data.subarray(0, 16_384), 16_384), 'duplicate');
  // Another peer (or a different hash) for the same id: refused, nothing changed.
  await assert.rejects(store.receivePiece('peer:O=Mallory,C=XX', ref, 16_384, data.subarray(16_384, 32_768), 16_384), (e: any) => e.code === 'attachment_conflict');
  await assert.rejects(store.receivePiece(peer, { ...ref, sha256: 'c'.repeat(64) }, 16_384, data.subarray(16_384, 32_768), 16_384), (e: any) => e.code === 'attachment_conflict');
  // A gap: restart.
  await assert.rejects(store.receivePiece(peer, ref, 32_768, data.subarray(32_768), 16_384), (e: any) => e.code === 'attachment_restart');
  assert.equal(await store.receivePiece(peer, ref, 16_384, data.subarray(16_384, 32_768), 16_384), 'stored');
  assert.equal(await store.info(ref.id), undefined, 'not visible before the last piece');
  assert.equal(await store.receivePiece(peer, ref, 32_768, data.subarray(32_768), 16_384), 'complete');
  const info = await store.info(ref.id);
  assert.equal(info?.owner, peer);
  assert.equal(info?.sha256, ref.sha256);
  // The same pieces for an attachment whose bytes do not hash to its reference: deleted at the last piece.
  const bad = { ...ref, id: 'peer-piece-test-0002', sha256: 'd'.repeat(64) };
  assert.equal(await store.receivePiece(peer, bad, 0, data.subarray(0, 16_384), 16_384), 'stored');
  assert.equal(await store.receivePiece(peer, bad, 16_384, data.subarray(16_384, 32_768), 16_384), 'stored');
  await assert.rejects(store.receivePiece(peer, bad, 32_768, data.subarray(32_768), 16_384), (e: any) => e.code === 'hash_mismatch');
  assert.equal(await client.exists(`${prefix}x:{att:${bad.id}}:meta`, `${prefix}x:{att:${bad.id}}:chunks`), 0);
});

test('while Redis is nearly full (the memory guard), an upload is refused with 503 + Retry-After and nothing is kept', async () => {
  const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
  await client.config('SET', 'maxmemory', String(Math.ceil(used / 0.92)));
  try {
    // Counted before each try: until the guard's poll sees the lower maxmemory (later on a busy
    // machine) an upload may still succeed, and what it stored is not the refused one's.
    let keysBefore = 0;
    const refused = await waitFor(async () => {
      keysBefore = (await attachmentKeys()).length;
      const up = await upload('clerk', 300_000).catch(() => undefined);
      return up?.status === 503 ? up : undefined;
    }, 15_000, 'the memory guard to refuse an upload');
    assert.equal(refused!.body.error.code, 'unavailable');
    assert.match(refused!.body.error.message, /memory is nearly full/);
    assert.equal(refused!.headers['retry-after'], '5');
    // At most as many: what an earlier, failed try left in staging may expire meanwhile.
    await waitFor(async () => (await attachmentKeys()).length <= keysBefore, 5000, 'nothing kept');
  } finally {
    await client.config('SET', 'maxmemory', '0');
  }
});
