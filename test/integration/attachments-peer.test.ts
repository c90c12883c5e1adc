// Attachments across the peer network (issue 17 point 6): pushed in pieces before the message that
// references them, each piece acknowledged, resumed after a cut connection, and hash-checked at
// the far side — two gateways on their own Redis, real mutual TLS and signed envelopes.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { basic, hashDownload, randomContent, streamRequest } from '../support/attachments.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redisA: TestRedis;
let redisB: TestRedis;
let clientA: Redis;
let clientB: Redis;
let a: Gateway;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'admin'] }] }];
const PREFIX_A = `pa${Math.random().toString(36).slice(2, 6)}`;
const PREFIX_B = `pb${Math.random().toString(36).slice(2, 6)}`;
let configB: Record<string, unknown>;

before(async () => {
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  clientA = new Redis(redisA.url);
  clientB = new Redis(redisB.url);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  a = await startTestGateway(redisA.url, { redis: { url: redisA.url, prefix: PREFIX_A }, permissions: PERMS, attachments: { chunkSize: '64kb' }, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }], { eventHorizon: '2m' }) });
  configB = { redis: { url: redisB.url, prefix: PREFIX_B }, permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }]) };
  b = await startTestGateway(redisB.url, configB);
});

after(async () => {
  await a?.stop();
  await b?.stop();
  clientA?.disconnect();
  clientB?.disconnect();
  await redisA?.dispose();
  await redisB?.dispose();
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

async function uploadAtA(size: number, name: string) {
  const content = randomContent(size, 300_001);
  const up = await streamRequest(`${a.url}/api/attachments?to=${enc('peer:bank-b/inbound.docs')}&name=${name}`, 'POST', { authorization: basic('ops'), 'content-type': 'application/pdf' }, content.stream);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.sha256, content.sha256());
  return { id: up.body.id as string, sha256: up.body.sha256 as string, size, name, contentType: 'application/pdf' };
}

const sentTo = async (id: string) => Number((await clientA.hget(`${PREFIX_A}:{att:${id}}:sent`, 'bank-b')) ?? 0);

test('a message with an attachment reaches the peer with its reference; the attachment arrives first, hash-checked, and downloads at the far side', async () => {
  const ref = await uploadAtA(3 * 1024 * 1024 + 17, 'contract.pdf');
  const sent = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.docs', id: 'doc-1', body: { trade: 'T-9' }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const q = await waitFor(async () => { const d = (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.docs')}`, { user: 'ops' })).body; return d.depth >= 1 ? d : undefined; }, 60_000, 'the message at bank B');
  const m = q.messages.find((x: { id: string }) => x.id === 'doc-1');
  assert.deepEqual(JSON.parse(m.headers.attachments), [ref]);
  // At B the attachment belongs to the peer that pushed it, and the message's reader may read it.
  assert.equal(await clientB.hget(`${PREFIX_B}:{att:${ref.id}}:meta`, 'owner'), 'peer:O=Bank A,L=London,C=GB');
  const down = await hashDownload(`${b.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.status, 200);
  assert.equal(down.size, ref.size);
  assert.equal(down.sha256, ref.sha256);
  // Every byte acknowledged, as A recorded.
  assert.equal(await sentTo(ref.id), ref.size);
});

test('a transfer cut by the far side going away resumes at the first piece not acknowledged, and completes with the right hash', async () => {
  const ref = await uploadAtA(40 * 1024 * 1024, 'recording.wav');
  const sent = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.docs', id: 'rec-1', body: {}, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202);
  // Part-way through, bank B stops (its listener goes away mid-transfer).
  await waitFor(async () => (await sentTo(ref.id)) >= 4 * 1024 * 1024, 60_000, 'a few pieces acknowledged');
  await b.stop();
  const acknowledged = await sentTo(ref.id);
  assert.ok(acknowledged < ref.size, `stopped before the end (${acknowledged} of ${ref.size})`);
  // What B acknowledged, it had stored.
  const storedAtB = Number(await clientB.hget(`${PREFIX_B}:{att:${ref.id}}:meta`, 'received'));
  assert.ok(storedAtB >= acknowledged, `B stored ${storedAtB}, A had ${acknowledged} acknowledged`);
  b = await startTestGateway(redisB.url, configB);
  // From here on A's acknowledged offset only grows: it resumed, it did not start again.
  const seen: number[] = [];
  await waitFor(async () => { const s = await sentTo(ref.id); seen.push(s); return s === ref.size; }, 120_000, 'the transfer to finish');
  assert.ok(seen.every((s, i) => s >= acknowledged && (i === 0 || s >= seen[i - 1]!)), `offsets after the restart: ${seen.join(', ')}`);
  await waitFor(async () => (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.docs')}`, { user: 'ops' })).body.messages.some((x: { id: string }) => x.id === 'rec-1'), 60_000, 'the message at B');
  const down = await hashDownload(`${b.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.sha256, ref.sha256);
  assert.equal(down.size, ref.size);
});

test('content that does not hash to the reference is refused at the far side (audited, nothing kept) and the message is dead-lettered, not delivered', async () => {
  const ref = await uploadAtA(300_000, 'tampered.pdf');
  // The bytes change in A's store after the upload (corruption, or someone with access to Redis).
  const key = `${PREFIX_A}:{att:${ref.id}}:chunks`;
  const chunk = (await clientA.hgetBuffer(key, '1'))!;
  chunk[10] = chunk[10]! ^ 0xff;
  await clientA.hset(key, '1', chunk);
  const sent = await api(a.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.docs', id: 'tampered-1', body: {}, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202);
  const dl = await waitFor(async () => { const d = (await api(a.url, 'GET', `/api/dlq/${enc('peer:bank-b/inbound.docs')}`, { user: 'ops' })).body; return d.messages?.find((x: { id: string }) => x.id === 'tampered-1'); }, 60_000, 'the dead letter at A');
  assert.match(dl.deadLetter.reason, /SHA-256/);
  assert.equal(await clientB.exists(`${PREFIX_B}:{att:${ref.id}}:meta`, `${PREFIX_B}:{att:${ref.id}}:chunks`), 0);
  assert.ok(!(await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.docs')}`, { user: 'ops' })).body.messages.some((x: { id: string }) => x.id === 'tampered-1'));
  const audit = await api(b.url, 'GET', '/api/audit?action=peer.attachment-refused&limit=10', { user: 'ops' });
  assert.ok(audit.body.entries.some((e: { detail?: string }) => e.detail?.includes(ref.id)), JSON.stringify(audit.body));
});
