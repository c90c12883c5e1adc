// The test issue 17 names: a 2 GB file through gateways whose heap is limited to 256 MB, the hash
// checked where it comes out. Bank A and bank B each run a gateway process on its own Redis. The
// file is uploaded to A and downloaded at bank B, after the peer network carried it there in
// acknowledged pieces. Neither the gateways nor this test ever hold the file: the gateways' peak
// resident memory (heap and buffers together) stays far below its size. (Another process of the
// same fleet reading an attachment is shown with a smaller file in attachments.test.ts: a second
// 2 GB pass here would only cost CI minutes.)
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { api, enc, spawnGateway, waitFor, type GatewayProcess } from '../support/gateway.ts';
import { basic, hashDownload, randomContent, streamRequest } from '../support/attachments.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const SIZE = 2 * 1024 ** 3; // 2 GiB
const HEAP = '--max-old-space-size=256';
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse'] }] }, { group: 'clerks', allow: [{ address: 'queue:in.*', verbs: ['send'] }] }];

let redisA: TestRedis;
let redisB: TestRedis;
let a1: GatewayProcess;
let b: GatewayProcess;
let net: Awaited<ReturnType<typeof testNetwork>>;
let ref: { id: string; sha256: string; size: number; name: string; contentType: string };

/** Room for the file and then some (the memory guard refuses above 90 %); AOF every second. */
async function roomFor(url: string): Promise<void> {
  const admin = new Redis(url);
  await admin.config('SET', 'maxmemory', String(5 * 1024 ** 3));
  // The test helper's `always` would fsync on each of the 2,048 chunk writes, which proves nothing more here.
  await admin.config('SET', 'appendfsync', 'everysec');
  admin.disconnect();
}

before(async () => {
  [redisA, redisB] = await Promise.all([startTestRedis(), startTestRedis()]);
  await Promise.all([roomFor(redisA.url), roomFor(redisB.url)]);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  const prefixA = `biga${Math.random().toString(36).slice(2, 6)}`;
  const att = { maxSize: '3gb' };
  // One at a time: two processes compiling the sources at once on a busy machine start slowly.
  a1 = await spawnGateway(redisA.url, { permissions: PERMS, attachments: att, network: networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: [] }], { eventHorizon: '1h' }) }, prefixA, { nodeOptions: HEAP });
  b = await spawnGateway(redisB.url, { permissions: PERMS, attachments: att, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }]) }, `bigb${Math.random().toString(36).slice(2, 6)}`, { nodeOptions: HEAP });
});

after(async () => {
  await Promise.all([a1?.kill('SIGTERM'), b?.kill('SIGTERM')]);
  await Promise.all([redisA?.dispose(), redisB?.dispose()]);
  if (net) rmSync(net.dir, { recursive: true, force: true });
});

/** Peak resident memory of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

async function assertSmall(t: { diagnostic(s: string): void }, gateways: GatewayProcess[]): Promise<void> {
  for (const g of gateways) {
    assert.equal((await fetch(`${g.url}/healthz`)).status, 200, `gateway ${g.pid} is up`);
    const peak = peakRss(g.pid);
    t.diagnostic(`gateway ${g.pid}: peak resident memory ${Math.round(peak / 1024 ** 2)} MiB for a ${SIZE / 1024 ** 3} GiB attachment`);
    assert.ok(peak < 768 * 1024 ** 2, `gateway ${g.pid} peaked at ${Math.round(peak / 1024 ** 2)} MiB resident`);
  }
}

test('a 2 GB attachment streams into a gateway limited to a 256 MB heap, hashed as it arrives', { timeout: 30 * 60_000 }, async (t) => {
  const content = randomContent(SIZE, 1024 * 1024);
  const up = await streamRequest(`${a1.url}/api/attachments?to=${enc('queue:in.recordings')}&name=call.wav`, 'POST', { authorization: basic('clerk'), 'content-type': 'audio/wav' }, content.stream);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const sha256 = content.sha256();
  assert.equal(up.body.size, SIZE);
  assert.equal(up.body.sha256, sha256, 'the gateway hashed what was sent');
  ref = { id: up.body.id, sha256, size: SIZE, name: 'call.wav', contentType: 'audio/wav' };
  // A message for queue:in.recordings references it: whoever reads there (ops) may then read it too.
  const sent = await api(a1.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.recordings', body: { trade: 'T-1' }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await assertSmall(t, [a1]);
});

test('the same 2 GB attachment crosses the peer network in acknowledged pieces and downloads at bank B with the same SHA-256', { timeout: 40 * 60_000 }, async (t) => {
  assert.ok(ref, 'the upload of the first test');
  const sent = await api(a1.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'peer:bank-b/inbound.recordings', id: 'recording-1', body: { trade: 'T-1' }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const q = await waitFor(async () => {
    const d = (await api(b.url, 'GET', `/api/queues/${enc('queue:inbound.recordings')}`, { user: 'ops' })).body;
    return d.messages?.find((m: { id: string }) => m.id === 'recording-1');
  }, 30 * 60_000, 'the message at bank B (after its attachment)');
  assert.deepEqual(JSON.parse(q.headers.attachments), [ref]);
  const down = await hashDownload(`${b.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.status, 200);
  assert.equal(down.size, SIZE);
  assert.equal(down.sha256, ref.sha256, 'bank B has the same bytes');
  assert.equal(down.headers.get('x-content-sha256'), ref.sha256);
  await assertSmall(t, [a1, b]);
});
