import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, enc, startTestGateway } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redis: TestRedis;
let gw: Gateway;
before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url);
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

test('a message sent over HTTP can be received and acknowledged', async () => {
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to: 'queue:smoke', body: { n: 1 } } });
  assert.equal(sent.status, 202);
  const got = await api(gw.url, 'POST', `/api/queues/${enc('queue:smoke')}/receive`, { user: 'ops', body: { max: 5, leaseSeconds: 10 } });
  assert.equal(got.status, 200);
  assert.equal(got.body.messages.length, 1);
  assert.equal(got.body.messages[0].id, sent.body.id);
  assert.deepEqual(got.body.messages[0].sender, { kind: 'user', name: 'ops' });
  const ack = await api(gw.url, 'POST', `/api/queues/${enc('queue:smoke')}/ack`, { user: 'ops', body: { leases: [got.body.messages[0].lease] } });
  assert.deepEqual(ack.body, { acked: 1, expired: [] });
});
