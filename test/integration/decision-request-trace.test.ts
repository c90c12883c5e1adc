/**
 * The HTTP request that decides a task is linked to the decision (issue 18 point 2, DESIGN §11),
 * with a real redis-server, a real OTLP/HTTP receiver in this process and real Chromium.
 *
 * The decision's span stays a child of the send that made the task (the business transaction is
 * one trace) and carries a span link to the server span of the HTTP request that decided it; that
 * request span is a child of the caller's traceparent when there is one (an API client), a new
 * root otherwise (a browser's click), and links back to the task's trace.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import type { Gateway } from '../../src/gateway.ts';
import { launchChromium } from '../support/browser.ts';
import { api, startTestGateway, USERS, waitFor } from '../support/gateway.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

const FLOW = `import { defineFlow } from 'switchboard';
import { z } from 'zod';
export default defineFlow({
  name: 'asks',
  input: z.object({ ref: z.string() }),
  async run(ctx, input) {
    const d = await ctx.ask('person:ops', { title: 'Decide ' + input.ref, actions: ['approve', 'reject'] });
    return { decision: d.action };
  },
});
`;

let redis: TestRedis;
let otlp: OtlpReceiver;
let gw: Gateway;
let flowsDir: string;
let browser: Browser | undefined;

before(async () => {
  redis = await startTestRedis();
  otlp = await startOtlpReceiver();
  flowsDir = mkdtempSync(join(tmpdir(), 'sb-decision-trace-'));
  writeFileSync(join(flowsDir, 'asks.ts'), FLOW);
  gw = await startTestGateway(redis.url, {
    flows: { dir: flowsDir },
    tracing: { serviceName: 'decisions', otlp: { url: otlp.url } },
    permissions: [
      { group: 'ops', allow: [{ address: 'flow:**', verbs: ['start', 'send'] }, { address: 'person:ops', verbs: ['consume'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await gw?.stop();
  await otlp?.close();
  await redis?.dispose();
  if (flowsDir) rmSync(flowsDir, { recursive: true, force: true });
});

/** Starts an instance in a trace of its own; answers the trace id, the instance and its task. */
async function ask(ref: string): Promise<{ traceId: string; instance: string; taskId: string }> {
  const traceId = randomBytes(16).toString('hex');
  const started = await api(gw.url, 'POST', '/api/flows/asks', { user: 'ops', headers: { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` }, body: { input: { ref } } });
  assert.equal(started.status, 202, JSON.stringify(started.body));
  const task = await waitFor(async () => (await api(gw.url, 'GET', '/api/tasks', { user: 'ops' })).body.tasks.find((t: { title: string }) => t.title === `Decide ${ref}`), 60_000, `the task of ${ref}`) as { id: string };
  return { traceId, instance: started.body.instanceId, taskId: task.id };
}

const completed = (instance: string) => waitFor(async () => (await api(gw.url, 'GET', `/api/flows/asks/${instance}`, { user: 'ops' })).body.status === 'completed', 60_000, 'the instance to complete');

/** The send that made the task and the decision's send, both in the task's trace. */
async function taskSpans(traceId: string): Promise<{ toTask: ReceivedSpan; decision: ReceivedSpan }> {
  const toTask = await otlp.waitFor((s) => s.traceId === traceId && s.name === 'send person:ops', 'the send that made the task');
  const decision = await otlp.waitFor((s) => s.traceId === traceId && s.name === 'send flow:asks/{instance}' && s.attributes['switchboard.door'] === 'inbox', 'the decision');
  return { toTask, decision };
}

test('an API client\'s decision: its request span continues the client\'s trace, and the decision in the task\'s trace links to it', { timeout: 120_000 }, async () => {
  const { traceId, instance, taskId } = await ask('API-1');
  const clientTrace = randomBytes(16).toString('hex');
  const clientSpan = randomBytes(8).toString('hex');
  const res = await api(gw.url, 'POST', `/api/tasks/${taskId}/decision`, { user: 'ops', headers: { traceparent: `00-${clientTrace}-${clientSpan}-01` }, body: { action: 'approve' } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await completed(instance);

  const http = await otlp.waitFor((s) => s.traceId === clientTrace && s.name === 'POST /api/tasks/{id}/decision', 'the request span');
  assert.equal(http.parentSpanId, clientSpan, 'the request span is a child of the API client\'s span');
  assert.equal(http.kind, 2, 'SERVER');
  assert.equal(http.attributes['http.route'], '/api/tasks/{id}/decision');
  assert.equal(http.attributes['enduser.id'], 'user:ops');

  const { toTask, decision } = await taskSpans(traceId);
  assert.equal(decision.parentSpanId, toTask.spanId, 'the decision stays a child of the send that made the task');
  assert.deepEqual(decision.links, [{ traceId: clientTrace, spanId: http.spanId }], 'the decision links to the request that made it');
  assert.deepEqual(http.links, [{ traceId, spanId: toTask.spanId }], 'the request links back to the task\'s trace');
  // What the flow does with the answer is still in the task's trace, under the decision.
  const answered = await otlp.waitFor((s) => s.traceId === traceId && s.name === 'flow asks ask answered', 'the answer in the flow');
  assert.equal(answered.parentSpanId, decision.spanId);
});

test('a click in the browser: the request span is the root of a trace of its own, linked both ways with the decision', { timeout: 180_000 }, async () => {
  const { traceId, instance, taskId } = await ask('WEB-1');
  browser = await launchChromium();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(60_000);
    const path = `/tasks/${taskId}`;
    await page.goto(`${gw.url}/login?next=${encodeURIComponent(path)}`);
    await page.fill('#username', 'ops');
    await page.fill('#password', USERS.ops);
    await Promise.all([page.waitForURL((u) => u.pathname === path), page.getByRole('button', { name: 'Sign in' }).click()]);
    await Promise.all([page.waitForURL((u) => u.pathname === '/inbox'), page.getByRole('button', { name: 'Approve' }).click()]);
  } finally {
    await context.close();
  }
  await completed(instance);

  const { toTask, decision } = await taskSpans(traceId);
  assert.equal(decision.parentSpanId, toTask.spanId);
  assert.equal(decision.links.length, 1, 'the decision links to one request');
  const link = decision.links[0]!;
  assert.notEqual(link.traceId, traceId, 'the click is not part of the task\'s trace');
  const http = await otlp.waitFor((s) => s.spanId === link.spanId, 'the request span the decision links to');
  assert.equal(http.name, 'POST /tasks/{id}/decision');
  assert.equal(http.traceId, link.traceId);
  assert.equal(http.parentSpanId, undefined, 'a browser sends no traceparent: the request starts a trace');
  assert.equal(http.kind, 2, 'SERVER');
  assert.deepEqual(http.links, [{ traceId, spanId: toTask.spanId }]);
});
