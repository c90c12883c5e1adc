import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { createMessage } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf } from '../middleware/authenticate.ts';
import { operation, requestOf } from '../openapi-operation.ts';
import { Address } from '../openapi-schemas.ts';

const text = (name: string, max: number) => {
  const problem = `'${name}' must be a non-empty string of at most ${max} characters`;
  return z.string({ error: problem }).min(1, { error: problem }).max(max, { error: problem }).nullable().optional();
};
const ID_PROBLEM = "'id' must be 1 to 256 visible ASCII characters without spaces";
export const MessageId = z.string({ error: ID_PROBLEM }).regex(/^[\x21-\x7e]{1,256}$/, { error: ID_PROBLEM }).nullable().optional().meta({ description: 'your id for this message: sending it again is accepted and delivered once' });

/** What a client may send; in the order createMessage checks it, so the first problem is the same. */
export const SendMessage = z.object({
  to: Address,
  id: MessageId,
  headers: z.record(z.string(), z.string({ error: (iss) => `header '${String(iss.path?.at(-1))}' must be a string, got ${typeof iss.input}` }), { error: "'headers' must be an object of string values" })
    .refine((h) => Object.keys(h).length <= 64, { error: "'headers' may have at most 64 entries" }).nullable().optional(),
  replyTo: Address.nullable().optional(),
  expiresAt: text('expiresAt', 64).refine((v) => v == null || !Number.isNaN(Date.parse(v)), { error: "'expiresAt' must be an ISO 8601 date-time" }).meta({ description: 'ISO 8601 date-time after which it is not delivered' }),
  contentType: text('contentType', 255).meta({ description: 'application/json unless given; a binary body is `{"base64": "…"}`' }),
  correlationId: text('correlationId', 1024),
  subject: text('subject', 1024),
  body: z.unknown().optional(),
}, { error: 'expected a JSON object with at least {"to": "<address>"}' }).meta({ id: 'SendMessage' });

export const messageOperations = {
  send: operation({
    method: 'post', path: '/api/messages', id: 'sendMessage', tag: 'messages',
    summary: 'Send a message to any address',
    description: '202 only after the destination durably accepted it. The sender is the authenticated principal; a `sender` in the body is ignored.',
    body: SendMessage,
    ok: { status: 202, description: 'accepted (duplicate: this sender sent this id to this address before; delivered once)', schema: z.looseObject({ id: z.string(), duplicate: z.boolean() }) },
    errors: [400, 403, 404],
  }),
};
import { withRequestTrace } from '../request-trace.ts';

/** POST /api/messages — the HTTP door's send. 202 only after the destination durably accepted. */
export function messageRoutes({ router }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const { send } = messageOperations;
  r.post(send.path, async (req, res) => {
    const caller = callerOf(req, res);
    requestOf.body(send, req);
    // The sender is always the authenticated principal; a `sender` in the body is ignored. Whether
    // it may send there (and ask for replies where it asks) is the router's pipeline to decide.
    const message = withRequestTrace(req, createMessage(req.body ?? {}, caller.principal));
    const result = await router.send(message, caller);
    res.status(202).json({ id: result.id, duplicate: result.duplicate });
  });
  return r;
}
