// The test issue 17 names: a 2 GB file through gateways whose heap is limited to 256 MB, the hash
// checked where it comes out. Two gateway processes share one Redis (DESIGN §9): the file is
// uploaded to one, referenced in a message, and downloaded by the message's reader from the
// other. Neither the gateways nor this test ever hold the file: the gateways' peak resident
// memory (heap and buffers together) is checked to be far below the file's size.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { api, enc, spawnGateway, type GatewayProcess } from '../support/gateway.ts';
import { basic, hashDownload, randomContent, streamRequest } from '../support/attachments.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const SIZE = 2 * 1024 ** 3; // 2 GiB
const HEAP = '--max-old-space-size=256';

let redis: TestRedis;
let a: GatewayProcess;
let b: GatewayProcess;

before(async () => {
  redis = await startTestRedis();
  // Room for the file and then some; the memory guard refuses above 90 % of this.
  const admin = new Redis(redis.url);
  await admin.config('SET', 'maxmemory', String(5 * 1024 ** 3));
  // AOF every second: the default of a private redis-server (the test helper's `always` would
  // fsync on each of the 2,048 chunk writes, which proves nothing more here).
  await admin.config('SET', 'appendfsync', 'everysec');
  admin.disconnect();
  const prefix = `big${Math.random().toString(36).slice(2, 8)}`;
  const extra = { attachments: { maxSize: '3gb' } };
  [a, b] = await Promise.all([spawnGateway(redis.url, extra, prefix, { nodeOptions: HEAP }), spawnGateway(redis.url, extra, prefix, { nodeOptions: HEAP })]);
});

after(async () => {
  await a?.kill('SIGTERM');
  await b?.kill('SIGTERM');
  await redis?.dispose();
});

/** Peak resident memory of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

test('a 2 GB attachment streams through gateways limited to a 256 MB heap; the SHA-256 matches at the far side', { timeout: 30 * 60_000 }, async (t) => {
  const content = randomContent(SIZE, 1024 * 1024);
  const up = await streamRequest(`${a.url}/api/attachments?to=${enc('queue:in.recordings')}&name=call.wav`, 'POST', { authorization: basic('clerk'), 'content-type': 'audio/wav' }, content.stream);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const sha256 = content.sha256();
  assert.equal(up.body.size, SIZE);
  assert.equal(up.body.sha256, sha256, 'the gateway hashed what was sent');

  const ref = { id: up.body.id, sha256, size: SIZE, name: 'call.wav', contentType: 'audio/wav' };
  const sent = await api(a.url, 'POST', '/api/messages', { user: 'clerk', body: { to: 'queue:in.recordings', body: { trade: 'T-1' }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));

  // The reader of queue:in.recordings downloads it from the other gateway process.
  const down = await hashDownload(`${b.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.status, 200);
  assert.equal(down.size, SIZE);
  assert.equal(down.sha256, sha256, 'the far side gets the same bytes');
  assert.equal(down.headers.get('x-content-sha256'), sha256);

  // Both gateways are still up, and neither ever held the file (its 2 GiB would show).
  for (const g of [a, b]) {
    assert.equal((await fetch(`${g.url}/healthz`)).status, 200);
    const peak = peakRss(g.pid);
    t.diagnostic(`gateway ${g.pid}: peak resident memory ${Math.round(peak / 1024 ** 2)} MiB for a ${SIZE / 1024 ** 3} GiB attachment`);
    assert.ok(peak < 768 * 1024 ** 2, `gateway ${g.pid} peaked at ${Math.round(peak / 1024 ** 2)} MiB resident`);
  }
});
