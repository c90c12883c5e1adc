import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Gateway } from '../../src/gateway.ts';
import { api, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// The example flows in workflows/ end to end: request-reply with the stand-in legacy system, and
// a task for a group decided over the API.

let redis: TestRedis;
let gw: Gateway;
before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    routes: [{ from: 'queue:legacy.requests', to: 'flow:legacy-responder' }],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'group:payment-approvers', verbs: ['consume'] }] },
    ],
  });
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
});

const finished = (name: string, id: string) =>
  waitFor(async () => {
    const r = await api(gw.url, 'GET', `/api/flows/${name}/${id}`, { user: 'ops' });
    return ['completed', 'failed'].includes(r.body.status) ? r.body : undefined;
  }, 30_000, `${name}/${id} to finish`);

test('payment-check requests a reply from the legacy responder and completes with its answer', async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-check', { user: 'ops', body: { input: { ref: 'P-1', amount: 20_000 } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const view = await finished('payment-check', started.body.instanceId);
  assert.equal(view.status, 'completed', JSON.stringify(view));
  assert.deepEqual(view.result, { ref: 'P-1', status: 'needs-review' });
  assert.deepEqual(view.steps.map((s: { kind: string }) => s.kind), ['request', 'now', 'send']);
  const checked = await api(gw.url, 'GET', `/api/queues/${encodeURIComponent('queue:payments.checked')}`, { user: 'ops' });
  assert.equal(checked.body.depth, 1);
  assert.equal(checked.body.messages[0].id, `${started.body.instanceId}:2`);
  assert.deepEqual(checked.body.messages[0].sender, { kind: 'flow', name: 'payment-check' });
});

test('payment-approval asks the group; the decision resumes it; a second decision gets 409 naming the winner', async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'ops', body: { input: { ref: 'P-2', amount: 10, requester: 'ops' } } });
  assert.equal(started.status, 202);
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment P-2'), 20_000, 'the task');
  assert.deepEqual(task.actions, ['approve', 'reject']);
  const decided = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve', fields: { comment: 'ok' } } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  const again = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'reject' } });
  assert.equal(again.status, 409);
  assert.match(again.body.error.message, /already been decided by user:ops/);
  const view = await finished('payment-approval', started.body.instanceId);
  assert.deepEqual(view.result, { status: 'approved', by: 'user:ops', legacyStatus: 'ok' });
});

test('a bad input is refused with what was wrong and starts nothing; an unknown flow is 404', async () => {
  const bad = await api(gw.url, 'POST', '/api/flows/payment-check', { user: 'ops', body: { input: { ref: '', amount: -1 } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /input for flow 'payment-check' is not valid: ref: .*amount: /);
  const unknown = await api(gw.url, 'POST', '/api/flows/no-such-flow', { user: 'ops', body: { input: {} } });
  assert.equal(unknown.status, 404);
  assert.match(unknown.body.error.message, /no flow named 'no-such-flow'/);
});
