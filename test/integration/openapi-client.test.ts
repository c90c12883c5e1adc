import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { Validator } from '@seriousme/openapi-schema-validator';
import openapiTS, { astToString } from 'openapi-typescript';
import type { Gateway } from '../../src/gateway.ts';
import { apiOperations } from '../../src/web/openapi.ts';
import { ErrorBody, FlowInstance, LeasedMessage, QueueContents, Task } from '../../src/web/openapi-schemas.ts';
import { messageOperations } from '../../src/web/routes/messages.ts';
import { USERS, startTestGateway, waitFor } from '../support/gateway.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

// A client generated from the served description (openapi-typescript types + openapi-fetch),
// type-checked against those types, then used against a real gateway on a real Redis: what a
// team that only has /api/openapi.json would do.

const run = promisify(execFile);
let redis: TestRedis;
let gw: Gateway;
let dir: string;
let doc: { paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown> }>> };

/**
 * The client code a user would write, checked by tsc against the generated types: a wrong path,
 * a misspelt body field or a response field that the document does not have fails the test.
 */
const CLIENT = `
import createClient from 'openapi-fetch';
import type { paths, components } from './schema.ts';

export type Api = ReturnType<typeof createClient<paths>>;

export function clientFor(baseUrl: string, user?: { name: string; password: string }): Api {
  const headers: Record<string, string> = user ? { authorization: 'Basic ' + Buffer.from(user.name + ':' + user.password).toString('base64') } : {};
  return createClient<paths>({ baseUrl, headers });
}

export async function send(api: Api, to: string, id: string, body: unknown) {
  const r = await api.POST('/api/messages', { body: { to, id, body, headers: { origin: 'generated-client' } } });
  const accepted: string | undefined = r.data?.id;
  const duplicate: boolean | undefined = r.data?.duplicate;
  return { status: r.response.status, accepted, duplicate, data: r.data, error: r.error };
}

export async function browse(api: Api, address: string, limit: number) {
  const r = await api.GET('/api/queues/{address}', { params: { path: { address }, query: { limit } } });
  const depth: number | undefined = r.data?.depth;
  return { status: r.response.status, depth, data: r.data, error: r.error };
}

export async function receiveAndAck(api: Api, address: string) {
  const got = await api.POST('/api/queues/{address}/receive', { params: { path: { address } }, body: { max: 10, leaseSeconds: 60 } });
  const leases: string[] = (got.data?.messages ?? []).map((m) => m.lease);
  const acked = await api.POST('/api/queues/{address}/ack', { params: { path: { address } }, body: { leases } });
  return { received: got.data, acked: acked.data?.acked, status: acked.response.status };
}

export async function startFlow(api: Api, name: string, input: unknown) {
  const r = await api.POST('/api/flows/{name}', { params: { path: { name } }, body: { input } });
  return { status: r.response.status, instanceId: r.data?.instanceId, error: r.error };
}

export async function flow(api: Api, name: string, id: string) {
  const r = await api.GET('/api/flows/{name}/{id}', { params: { path: { name, id } } });
  const status: components['schemas']['FlowStatus'] | undefined = r.data?.status;
  return { status: r.response.status, flowStatus: status, data: r.data, error: r.error };
}

export async function tasks(api: Api) {
  const r = await api.GET('/api/tasks');
  return { status: r.response.status, tasks: r.data?.tasks ?? [], error: r.error };
}

export async function task(api: Api, id: string) {
  const r = await api.GET('/api/tasks/{id}', { params: { path: { id } } });
  const t: components['schemas']['Task'] | undefined = r.data;
  return { status: r.response.status, data: t, error: r.error };
}

export async function decide(api: Api, id: string, action: string, comment?: string) {
  const r = await api.POST('/api/tasks/{id}/decision', { params: { path: { id } }, body: { action, ...(comment ? { comment } : {}) } });
  // A refusal is typed too: the documented error body.
  const code: string | undefined = r.error?.error.code;
  return { status: r.response.status, data: r.data, error: r.error, code };
}

export async function raw(api: Api, address: string) {
  return api.GET('/api/dlq/{address}', { params: { path: { address } } });
}

// The generated types know which paths exist: this one does not.
// @ts-expect-error not a path of the API
export const nowhere = (api: Api) => api.GET('/api/no-such-route');
`;

/** The generated client module as this file sees it; its real types were checked by tsc above. */
type Call = (...args: any[]) => Promise<any>;
interface GeneratedClient {
  clientFor(baseUrl: string, user?: { name: string; password: string }): unknown;
  send: Call; browse: Call; receiveAndAck: Call; startFlow: Call; flow: Call; tasks: Call; task: Call; decide: Call;
}

before(async () => {
  redis = await startTestRedis();
  gw = await startTestGateway(redis.url, {
    routes: [{ from: 'queue:legacy.requests', to: 'flow:legacy-responder' }],
    permissions: [
      { group: 'ops', allow: [{ address: 'queue:**', verbs: ['send', 'consume', 'browse'] }, { address: 'flow:**', verbs: ['start', 'browse'] }, { address: 'group:payment-approvers', verbs: ['consume'] }] },
      { group: 'clerks', allow: [{ address: 'flow:payment-approval', verbs: ['start'] }, { address: 'queue:out.*', verbs: ['browse'] }] },
      { group: 'admins', allow: [{ address: '**', verbs: ['admin'] }] },
    ],
  });
  dir = mkdtempSync(join(tmpdir(), 'sb-openapi-client-'));
  // The generated client resolves openapi-fetch (and tsc its types) from the project.
  symlinkSync(resolve('node_modules'), join(dir, 'node_modules'));
});
after(async () => {
  await gw?.stop();
  await redis?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The document lists this status for this operation (a client can rely on what it gets). */
function documented(method: string, path: string, status: number): void {
  const responses = doc.paths[path]?.[method]?.responses;
  assert.ok(responses, `${method.toUpperCase()} ${path} is documented`);
  assert.ok(responses[String(status)], `${method.toUpperCase()} ${path} answered ${status}, which the document does not list (${Object.keys(responses).join(', ')})`);
}

test('GET /api/openapi.json needs no credentials and is valid OpenAPI 3.1', async () => {
  const res = await fetch(`${gw.url}/api/openapi.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  doc = await res.json();
  const result = await new Validator().validate(doc as never);
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  assert.equal((doc as unknown as { openapi: string }).openapi, '3.1.0');
  // The rest of /api still needs credentials.
  const tasks = await fetch(`${gw.url}/api/tasks`);
  assert.equal(tasks.status, 401);
  assert.equal((await tasks.json()).error.code, 'unauthenticated');
});

test('every documented route answers on the running gateway (none is the catch-all "no such endpoint")', async () => {
  const auth = { authorization: `Basic ${Buffer.from(`ops:${USERS.ops}`).toString('base64')}` };
  const sample: Record<string, string> = { address: 'queue:oa.probe', topic: 'oa.probe', name: 'oa-probe', id: '0123456789abcdef' };
  let probed = 0;
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) {
      const url = gw.url + path.replace(/\{(\w+)\}/g, (_m, p: string) => encodeURIComponent(sample[p] ?? 'x'));
      const res = await fetch(url, { method: method.toUpperCase(), headers: { ...auth, 'content-type': 'application/json' }, ...(method === 'get' || method === 'delete' ? {} : { body: '{}' }) });
      const text = await res.text();
      assert.doesNotMatch(text, /no such endpoint/, `${method.toUpperCase()} ${path} is documented but the gateway has no such route`);
      documented(method, path, res.status);
      probed++;
    }
  }
  assert.equal(probed, apiOperations().length);
});

test('a client generated from the document type-checks and sends, browses, consumes, starts a flow, reads and decides its task, and gets the documented errors', { timeout: 300_000 }, async () => {
  // 1. Generate the types from the served document, as `npx openapi-typescript <url>` would.
  const ast = await openapiTS(new URL(`${gw.url}/api/openapi.json`));
  writeFileSync(join(dir, 'schema.ts'), astToString(ast));
  writeFileSync(join(dir, 'client.ts'), CLIENT);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, allowImportingTsExtensions: true, skipLibCheck: true, types: ['node'] },
    files: ['client.ts'],
  }));
  // 2. The client code compiles against them (a path or field the document lacks would not).
  await run(process.execPath, [resolve('node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { cwd: dir }).catch((err: { stdout?: string }) => {
    assert.fail(`the client does not type-check against the generated types:\n${err.stdout}`);
  });

  // 3. …and works against the real gateway.
  const c = await import(join(dir, 'client.ts')) as GeneratedClient;
  const as = (name: keyof typeof USERS) => c.clientFor(gw.url, { name, password: USERS[name] });
  const ops = as('ops');

  const sent = await c.send(ops, 'queue:oa.in', 'oa-1', { hello: 'generated client' });
  assert.equal(sent.status, 202, JSON.stringify(sent.error));
  documented('post', '/api/messages', 202);
  assert.deepEqual({ id: sent.accepted, duplicate: sent.duplicate }, { id: 'oa-1', duplicate: false });
  messageOperations.send.ok.schema.parse(sent.data);
  const again = await c.send(ops, 'queue:oa.in', 'oa-1', { hello: 'generated client' });
  assert.equal(again.duplicate, true);

  const browsed = await c.browse(ops, 'queue:oa.in', 5);
  assert.equal(browsed.status, 200);
  assert.equal(browsed.depth, 1);
  const contents = QueueContents.parse(browsed.data);
  assert.equal(contents.messages[0]!.id, 'oa-1');
  assert.deepEqual(contents.messages[0]!.body, { hello: 'generated client' });
  assert.deepEqual(contents.messages[0]!.sender, { kind: 'user', name: 'ops' });

  const consumed = await c.receiveAndAck(ops, 'queue:oa.in');
  assert.equal(consumed.status, 200);
  assert.equal(consumed.acked, 1);
  for (const m of consumed.received!.messages) LeasedMessage.parse(m);
  assert.equal((await c.browse(ops, 'queue:oa.in', 5)).depth, 0);

  // A flow, its task, a decision, and the 409 of a second decision with the documented body.
  const started = await c.startFlow(as('clerk'), 'payment-approval', { ref: 'OA-1', amount: 10 });
  assert.equal(started.status, 202, JSON.stringify(started.error));
  documented('post', '/api/flows/{name}', 202);
  const instanceId = started.instanceId!;
  const listed = await waitFor(async () => (await c.tasks(ops)).tasks.find((t: { title: string }) => t.title === 'Approve payment OA-1'), 30_000, 'the approval task');
  const one = await c.task(ops, listed.id);
  assert.equal(one.status, 200);
  const parsed = Task.parse(one.data);
  assert.deepEqual(parsed.actions, ['approve', 'reject']);
  assert.equal(parsed.status, 'open');

  const decided = await c.decide(ops, listed.id, 'approve', 'fine');
  assert.equal(decided.status, 200, JSON.stringify(decided.error));
  assert.equal(Task.parse(decided.data).status, 'decided');
  const twice = await c.decide(ops, listed.id, 'reject');
  assert.equal(twice.status, 409);
  documented('post', '/api/tasks/{id}/decision', 409);
  assert.equal(twice.code, 'conflict');
  assert.match(ErrorBody.parse(twice.error).error.message, /already been decided by user:ops/);

  const view = await c.flow(ops, 'payment-approval', instanceId);
  assert.equal(view.status, 200);
  const instance = FlowInstance.parse(view.data);
  assert.equal(instance.instanceId, instanceId);
  assert.ok(['running', 'waiting', 'completed', 'failed'].includes(view.flowStatus!), view.flowStatus);

  // 4xx through the client: each documented, each the error body.
  const bad = await c.browse(ops, 'queue:a b', 5);
  assert.equal(bad.status, 400);
  documented('get', '/api/queues/{address}', 400);
  assert.equal(ErrorBody.parse(bad.error).error.code, 'bad_address');
  const forbidden = await c.browse(as('clerk'), 'queue:oa.in', 5);
  assert.equal(forbidden.status, 403);
  documented('get', '/api/queues/{address}', 403);
  assert.match(ErrorBody.parse(forbidden.error).error.message, /user:clerk may not browse on queue:oa\.in/);
  const unknown = await c.task(ops, 'no-such-task');
  assert.equal(unknown.status, 404);
  documented('get', '/api/tasks/{id}', 404);
  assert.equal(ErrorBody.parse(unknown.error).error.code, 'not_found');
  const anonymous = await c.tasks(c.clientFor(gw.url));
  assert.equal(anonymous.status, 401);
  documented('get', '/api/tasks', 401);
  assert.equal(ErrorBody.parse(anonymous.error).error.code, 'unauthenticated');
  const badLimit = await c.browse(ops, 'queue:oa.in', 0);
  assert.equal(badLimit.status, 400);
  assert.match(ErrorBody.parse(badLimit.error).error.message, /'limit' must be an integer from 1 to 1000/);
});
