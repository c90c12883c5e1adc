import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import express from 'express';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import '../../src/schemes.ts';
import type { AppDeps } from '../../src/web/deps.ts';
import { createApp } from '../../src/web/app.ts';
import { apiOperations, buildOpenApiDocument } from '../../src/web/openapi.ts';
import { operation, parseWith, type ApiOperation } from '../../src/web/openapi-operation.ts';
import { SendMessage } from '../../src/web/routes/messages.ts';
import { queueOperations } from '../../src/web/routes/queues.ts';
import { apiRoutesOf, compareRoutes } from '../support/api-routes.ts';
import * as z from 'zod';

/**
 * The app as the gateway builds it, for its route table only: nothing here serves a request, so
 * the parts behind the routes are never called (the Redis client never connects).
 */
function realApp() {
  const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false });
  const deps = {
    redis, log: pino({ level: 'silent' }), bodyLimit: '1mb', prefix: 't',
    session: { redis, prefix: 't', secret: 'x'.repeat(32), ttlMs: 60_000, secure: false },
  } as unknown as AppDeps;
  return { app: createApp(deps), close: () => redis.disconnect() };
}

const document = () => buildOpenApiDocument(apiOperations()) as unknown as { paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown>; security?: unknown[] }>>; components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> } };

describe('the API description covers the app', () => {
  test('every /api route of the real app is in the document, and every documented route is in the app', () => {
    const { app, close } = realApp();
    try {
      const routes = apiRoutesOf(app);
      assert.ok(routes.length >= 25, `the walk found the API routes: ${routes.join(', ')}`);
      assert.ok(routes.includes('POST /api/tasks/{id}/decision') && routes.includes('GET /api/openapi.json'), routes.join(', '));
      assert.deepEqual(compareRoutes(app, document()), { undocumented: [], missing: [] });
    } finally {
      close();
    }
  });

  test('an operation left out of the document is reported as an undocumented route of the real app', () => {
    const { app, close } = realApp();
    try {
      const fewer = apiOperations().filter((op) => op !== queueOperations.ack);
      assert.deepEqual(compareRoutes(app, buildOpenApiDocument(fewer) as never), { undocumented: ['POST /api/queues/{address}/ack'], missing: [] });
    } finally {
      close();
    }
  });

  test('the check fails on a small app with a route missing from the document and a documented route it lacks', () => {
    const app = express();
    const r = express.Router();
    r.get('/api/things/:id', (_req, res) => void res.end());
    r.post('/api/things', (_req, res) => void res.end());
    r.delete('/api/things/:id', (_req, res) => void res.end());
    app.use(r);
    app.get('/not-api', (_req, res) => void res.end());
    const ok = { status: 200, description: 'ok', schema: z.object({}) };
    const doc = buildOpenApiDocument([
      operation({ method: 'get', path: '/api/things/:id', id: 'getThing', tag: 't', summary: 'one', params: z.object({ id: z.string() }), ok, errors: [404] }),
      operation({ method: 'post', path: '/api/things', id: 'addThing', tag: 't', summary: 'add', ok, errors: [] }),
      operation({ method: 'get', path: '/api/ghosts', id: 'ghosts', tag: 't', summary: 'documented only', ok, errors: [] }),
    ]);
    assert.deepEqual(compareRoutes(app, doc as never), { undocumented: ['DELETE /api/things/{id}'], missing: ['GET /api/ghosts'] });
  });

  test('a router mounted under a prefix is an error, not a silent gap in the check', () => {
    const app = express();
    const r = express.Router();
    r.get('/things', (_req, res) => void res.end());
    app.use('/api', r);
    assert.throws(() => apiRoutesOf(app), /mounted under a path prefix/);
  });

  test('two operations on the same method and path are refused', () => {
    const ok = { status: 200, description: 'ok', schema: z.object({}) };
    const op: ApiOperation = { method: 'get', path: '/api/x', id: 'x', tag: 't', summary: 'x', ok, errors: [] };
    assert.throws(() => buildOpenApiDocument([op, { ...op, id: 'y' }]), /two operations for GET \/api\/x/);
  });
});

describe('the document', () => {
  test('a route that takes or gives something other than JSON says so (an upload, a download)', () => {
    const doc = buildOpenApiDocument([operation({
      method: 'post', path: '/api/files', id: 'upload', tag: 't', summary: 'upload', bodyType: 'application/octet-stream', body: z.string().meta({ contentMediaType: 'application/octet-stream' }),
      ok: { status: 201, description: 'stored', schema: z.string(), type: 'text/plain' }, errors: [],
    })]) as unknown as { paths: Record<string, { post: { requestBody: { content: Record<string, unknown> }; responses: Record<string, { content?: Record<string, unknown> }> } }> };
    const op = doc.paths['/api/files']!.post;
    assert.deepEqual(Object.keys(op.requestBody.content), ['application/octet-stream']);
    assert.deepEqual(Object.keys(op.responses['201']!.content!), ['text/plain']);
    assert.deepEqual(Object.keys(op.responses['400']!.content!), ['application/json'], 'refusals stay the JSON error body');
  });


  test('is valid OpenAPI 3.1', async () => {
    const result = await new Validator().validate(document() as never);
    assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  });

  test('the validator does refuse a broken document (so the check above can fail)', async () => {
    const broken = structuredClone(document()) as unknown as Record<string, unknown>;
    (broken.paths as Record<string, Record<string, Record<string, unknown>>>)['/api/messages']!.post!.responses = 'none';
    const result = await new Validator().validate(broken as never);
    assert.equal(result.valid, false);
  });

  test('operation ids are unique; every route but the description needs Basic or a bearer token and documents 401 and 503 with the error body', () => {
    const doc = document();
    assert.deepEqual(Object.keys(doc.components.securitySchemes).sort(), ['basic', 'bearer']);
    assert.deepEqual(doc.components.schemas.Error, {
      type: 'object',
      properties: { error: { type: 'object', properties: { code: expectString(doc, 'code'), message: expectString(doc, 'message') }, required: ['code', 'message'], additionalProperties: false } },
      required: ['error'], additionalProperties: false, description: 'The body of every 4xx/5xx answer.',
    });
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        assert.ok(!ids.has(op.operationId), `operationId ${op.operationId} is used twice`);
        ids.add(op.operationId);
        if (path === '/api/openapi.json') {
          assert.deepEqual(op.security, [], 'the description is public');
          continue;
        }
        assert.equal(op.security, undefined, `${method} ${path} uses the document's security (basic or bearer)`);
        for (const status of ['401', '503']) assert.deepEqual((op.responses[status] as { content: unknown }).content, { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } }, `${method} ${path} documents ${status}`);
      }
    }
    assert.ok(ids.size >= 25);
  });

  test('the responses DESIGN §6 names are described', () => {
    const doc = document();
    const ok = (path: string, method: string, status: string) => doc.paths[path]?.[method]?.responses[status] as { content: { 'application/json': { schema: unknown } } } | undefined;
    assert.deepEqual(ok('/api/messages', 'post', '202')?.content['application/json'].schema, { type: 'object', properties: { id: { type: 'string' }, duplicate: { type: 'boolean' } }, required: ['id', 'duplicate'], additionalProperties: {} });
    assert.deepEqual(ok('/api/tasks/{id}', 'get', '200')?.content['application/json'].schema, { $ref: '#/components/schemas/Task' });
    assert.ok(ok('/api/tasks/{id}/decision', 'post', '409'), 'a decision documents 409');
    assert.deepEqual(ok('/api/flows/{name}/{id}', 'get', '200')?.content['application/json'].schema, { $ref: '#/components/schemas/FlowInstance' });
    const flow = doc.components.schemas.FlowInstance as { required: string[] };
    for (const f of ['instanceId', 'flow', 'status', 'input', 'steps']) assert.ok(flow.required.includes(f), `FlowInstance requires ${f}`);
    assert.ok(ok('/api/topics/{topic}/subscriptions', 'post', '201'));
  });
});

function expectString(doc: ReturnType<typeof document>, field: 'code' | 'message') {
  const props = ((doc.components.schemas.Error as { properties: { error: { properties: Record<string, unknown> } } }).properties.error.properties);
  assert.equal((props[field] as { type: string }).type, 'string');
  return props[field];
}

describe('request schemas refuse as the handlers always did', () => {
  const problem = (value: unknown) => {
    try {
      parseWith(SendMessage, value, 'body');
      return undefined;
    } catch (err) {
      const e = err as { code: string; message: string };
      return `${e.code}: ${e.message}`;
    }
  };

  test('a message: the first problem, naming the field, with the core\'s own code for addresses', () => {
    assert.equal(problem(42), 'bad_request: expected a JSON object with at least {"to": "<address>"}');
    assert.equal(problem({ body: 1 }), "bad_address: invalid address '': expected a non-empty string like queue:orders");
    assert.match(problem({ to: 'foo:bar' })!, /^bad_address: invalid address 'foo:bar': unknown scheme 'foo'/);
    assert.equal(problem({ to: 'queue:x', id: 'has space' }), "bad_request: 'id' must be 1 to 256 visible ASCII characters without spaces");
    assert.equal(problem({ to: 'queue:x', headers: { priority: 5 } }), "bad_request: header 'priority' must be a string, got number");
    assert.equal(problem({ to: 'queue:x', expiresAt: 'next tuesday' }), "bad_request: 'expiresAt' must be an ISO 8601 date-time");
    assert.equal(problem({ to: 'queue:x', id: null, headers: null, body: { any: ['json'] } }), undefined);
  });

  test('receive: integers in range, a query string counts, anything else names the field and the value', () => {
    const body = queueOperations.receive.body;
    assert.deepEqual(parseWith(body, {}, 'body'), { max: 1, leaseSeconds: 30 });
    assert.deepEqual(parseWith(body, { max: '7', leaseSeconds: 60 }, 'body'), { max: 7, leaseSeconds: 60 });
    assert.throws(() => parseWith(body, { max: 'ten' }, 'body'), { code: 'bad_request', message: `'max' must be an integer from 1 to 1000, got "ten"` });
    assert.throws(() => parseWith(body, { max: 1, leaseSeconds: 43_201 }, 'body'), { message: `'leaseSeconds' must be an integer from 1 to 43200, got 43201` });
    assert.throws(() => parseWith(body, 'max=3', 'body'), { code: 'bad_request', message: 'the request body must be a JSON object' });
  });
});
