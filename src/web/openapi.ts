import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { createDocument, type ZodOpenApiOperationObject, type ZodOpenApiPathsObject, type ZodOpenApiResponseObject } from 'zod-openapi';
import type { ApiOperation } from './openapi-operation.ts';
import { ErrorBody } from './openapi-schemas.ts';
import { auditOperations } from './routes/audit.ts';
import { canOperations } from './routes/can.ts';
import { flowOperations } from './routes/flows.ts';
import { messageOperations } from './routes/messages.ts';
import { permissionOperations } from './routes/permissions.ts';
import { queueOperations } from './routes/queues.ts';
import { taskOperations } from './routes/tasks.ts';
import { tokenOperations } from './routes/tokens.ts';
import { topicOperations } from './routes/topics.ts';

export const OPENAPI_PATH = '/api/openapi.json';
/** The contract's version (DESIGN §6: fields may be added, never renamed), not the package's. */
const API_VERSION = '1.0.0';

const describeApi = {
  document: {
    method: 'get', path: OPENAPI_PATH, id: 'getOpenApiDocument', tag: 'meta', public: true,
    summary: 'This description (OpenAPI 3.1); no credentials needed',
    ok: { status: 200, description: 'the OpenAPI document', schema: z.looseObject({ openapi: z.string() }) },
    errors: [],
  },
} satisfies Record<string, ApiOperation>;

/** Every `/api` route, by area. A new area adds its operations here (one line). */
export const API_AREAS: Record<string, ApiOperation>[] = [
  messageOperations, queueOperations, topicOperations, flowOperations, taskOperations,
  canOperations, permissionOperations, tokenOperations, auditOperations, describeApi,
];

const REASONS: Record<number, string> = {
  400: 'bad input: the message names what was wrong, where, and what was expected (bad_request, bad_address, bad_json, unknown_scheme, …)',
  401: 'missing or bad credentials (one message for an unknown user and a wrong password)',
  403: 'a known principal without the right, or a refusal such as four-eyes (audited)',
  404: 'no such flow, task, instance, rule or subscription, or the feature is not enabled in this gateway',
  409: 'conflict with the current state (decided already, claimed by someone else, exists already)',
  413: 'the body is larger than the configured limit',
  429: 'too many failed logins: wait for Retry-After',
  503: 'a dependency (Redis, the directory, the destination) is down: try again after Retry-After',
};

/** Express `/api/tasks/:id` → OpenAPI `/api/tasks/{id}`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** What every authenticated route may also answer, whatever it does. */
function statusesOf(op: ApiOperation): number[] {
  const common = op.public ? [] : [401, 429, 503];
  const body = op.body ? [400, 413] : [];
  return [...new Set([...op.errors, ...common, ...body])].sort((a, b) => a - b);
}

function operationObject(op: ApiOperation): ZodOpenApiOperationObject {
  const retryAfter = { 'Retry-After': { description: 'seconds to wait', schema: { type: 'integer' as const } } };
  const responses: Record<`${number}`, ZodOpenApiResponseObject> = {
    [`${op.ok.status}`]: { description: op.ok.description, content: { [op.ok.type ?? 'application/json']: { schema: op.ok.schema } } },
  };
  for (const status of statusesOf(op)) {
    responses[`${status}`] = {
      description: REASONS[status] ?? 'refused',
      ...(status === 503 || status === 429 ? { headers: retryAfter } : {}),
      content: { 'application/json': { schema: ErrorBody } },
    };
  }
  return {
    operationId: op.id,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    ...(op.public ? { security: [] } : {}),
    ...(op.params || op.query ? { requestParams: { ...(op.params ? { path: op.params } : {}), ...(op.query ? { query: op.query } : {}) } } : {}),
    // Required exactly when sending nothing (read as `{}`) would be refused.
    ...(op.body ? { requestBody: { required: !op.body.safeParse({}).success, content: { [op.bodyType ?? 'application/json']: { schema: op.body } } } } : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of `operations`, generated from their zod schemas. */
export function buildOpenApiDocument(operations: ApiOperation[]): ReturnType<typeof createDocument> {
  const paths: ZodOpenApiPathsObject = {};
  for (const op of operations) {
    const path = (paths[openApiPath(op.path)] ??= {});
    if (path[op.method]) throw new Error(`two operations for ${op.method.toUpperCase()} ${op.path}`);
    path[op.method] = operationObject(op);
  }
  return createDocument({
    openapi: '3.1.0',
    info: {
      title: 'Switchboard API',
      version: API_VERSION,
      description: 'Send to any address, consume queues, start and follow flows, decide tasks, manage topics, permissions and tokens. Errors are `{error: {code, message}}`.',
    },
    servers: [{ url: '/' }],
    security: [{ basic: [] }, { bearer: [] }],
    components: {
      securitySchemes: {
        basic: { type: 'http', scheme: 'basic', description: 'a directory user (LDAP bind or the file directory)' },
        bearer: { type: 'http', scheme: 'bearer', description: 'an API token from POST /api/tokens (sbt_…)' },
      },
    },
    paths,
  });
}

let cached: string | undefined;

/** Every `/api` operation of this gateway. */
export function apiOperations(): ApiOperation[] {
  return API_AREAS.flatMap((area) => Object.values(area));
}

/**
 * GET /api/openapi.json, without credentials: the description is the same for every gateway (a
 * feature that is off answers 404, it is not left out), so it tells nobody more than DESIGN does,
 * and client generators can read it as they are.
 */
export function openApiRoutes(): ExpressRouter {
  const r = ExpressRouter();
  r.get(OPENAPI_PATH, (_req, res) => {
    cached ??= JSON.stringify(buildOpenApiDocument(apiOperations()));
    res.type('application/json').send(cached);
  });
  return r;
}
