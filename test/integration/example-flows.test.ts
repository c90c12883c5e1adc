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
      // A clerk who may both ask for payments and approve them: four-eyes keeps the two apart.
      { group: 'clerks', allow: [{ address: 'flow:payment-approval', verbs: ['start'] }, { address: 'group:payment-approvers', verbs: ['consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
      // A second approver, named by a user rule.
      { user: 'nobody', allow: [{ address: 'group:payment-approvers', verbs: ['consume'] }] },
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

test('payment-approval: four-eyes keeps the requester from approving; another approver decides; a second decision gets 409 naming the winner', async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'clerk', body: { input: { ref: 'P-2', amount: 10 } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment P-2'), 20_000, 'the task');
  assert.deepEqual(task.actions, ['approve', 'reject']);
  // The requester is who started the flow, from authentication, not a name in the input.
  assert.equal(task.data.requester, 'clerk');

  // The requester tries to approve their own payment: refused, with the reason, audited, nothing changed.
  const own = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'clerk', body: { action: 'approve' } });
  assert.equal(own.status, 403, JSON.stringify(own.body));
  assert.equal(own.body.error.code, 'four_eyes');
  assert.match(own.body.error.message, /you started this request; someone else must decide/);
  const claim = await api(gw.url, 'POST', `/api/tasks/${task.id}/claim`, { user: 'clerk' });
  assert.equal(claim.status, 403);
  const handOver = await api(gw.url, 'POST', `/api/tasks/${task.id}/delegate`, { user: 'ops', body: { to: 'clerk' } });
  assert.equal(handOver.status, 403, JSON.stringify(handOver.body));
  assert.match(handOver.body.error.message, /clerk may not receive this task: they started this request/);
  const audit = await api(gw.url, 'GET', '/api/audit?action=access.denied&actor=user%3Aclerk&limit=20', { user: 'ops' });
  assert.ok(audit.body.entries.some((e: { detail?: string }) => /four_eyes/.test(e.detail ?? '')), JSON.stringify(audit.body));
  const still = await api(gw.url, 'GET', `/api/tasks/${task.id}`, { user: 'ops' });
  assert.equal(still.body.status, 'open');
  assert.equal(still.body.claimedBy, undefined);
  assert.deepEqual(still.body.history.map((h: { action: string }) => h.action), ['created']);

  const decided = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve', comment: 'ok' } });
  assert.equal(decided.status, 200, JSON.stringify(decided.body));
  const again = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'reject' } });
  assert.equal(again.status, 409);
  assert.match(again.body.error.message, /already been decided by user:ops/);
  const view = await finished('payment-approval', started.body.instanceId);
  assert.deepEqual(view.result, { status: 'approved', by: 'user:ops', approvedBy: ['user:ops'], legacyStatus: 'ok' });
});

test('payment-approval above 10,000 needs two distinct approvers, neither the requester; each is in the history and in the decision', async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'clerk', body: { input: { ref: 'P-3', amount: 20_000 } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment P-3'), 20_000, 'the task');
  const first = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve', comment: 'looks right' } });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(first.body.status, 'open', 'one approval of two: still open');
  assert.deepEqual(first.body.approvals.map((a: { by: string }) => a.by), ['user:ops']);
  // The same approver twice is still one approver.
  const twice = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve' } });
  assert.equal(twice.status, 403, JSON.stringify(twice.body));
  assert.match(twice.body.error.message, /you approved this task already/);
  // The requester cannot be the second pair of eyes either.
  assert.equal((await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'clerk', body: { action: 'approve' } })).status, 403);
  const second = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'nobody', body: { action: 'approve' } });
  assert.equal(second.status, 200, JSON.stringify(second.body));
  assert.equal(second.body.status, 'decided');
  assert.deepEqual(second.body.history.map((h: { action: string; by: string }) => `${h.action} ${h.by}`), ['created flow:payment-approval', 'approved user:ops', 'decided user:nobody']);
  const view = await finished('payment-approval', started.body.instanceId);
  assert.deepEqual(view.result, { status: 'approved', by: 'user:nobody', approvedBy: ['user:ops', 'user:nobody'], legacyStatus: 'needs-review' });
});

test('payment-approval above 10,000: a reject by any approver ends the ask as rejected', async () => {
  const started = await api(gw.url, 'POST', '/api/flows/payment-approval', { user: 'clerk', body: { input: { ref: 'P-4', amount: 50_000 } } });
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === 'Approve payment P-4'), 20_000, 'the task');
  assert.equal((await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'ops', body: { action: 'approve' } })).status, 200);
  const no = await api(gw.url, 'POST', `/api/tasks/${task.id}/decision`, { user: 'nobody', body: { action: 'reject', comment: 'not this one' } });
  assert.equal(no.status, 200, JSON.stringify(no.body));
  assert.equal(no.body.status, 'decided');
  assert.deepEqual(no.body.decision.approvals.map((a: { by: string; action: string }) => `${a.action} ${a.by}`), ['approve user:ops', 'reject user:nobody']);
  const view = await finished('payment-approval', started.body.instanceId);
  assert.deepEqual(view.result, { status: 'rejected', by: 'user:nobody' });
});

test('a bad input is refused with what was wrong and starts nothing; an unknown flow is 404', async () => {
  const bad = await api(gw.url, 'POST', '/api/flows/payment-check', { user: 'ops', body: { input: { ref: '', amount: -1 } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /input for flow 'payment-check' is not valid: ref: .*amount: /);
  const unknown = await api(gw.url, 'POST', '/api/flows/no-such-flow', { user: 'ops', body: { input: {} } });
  assert.equal(unknown.status, 404);
  assert.match(unknown.body.error.message, /no flow named 'no-such-flow'/);
});
