import * as z from 'zod';
import { parseAddress } from '../core/address.ts';
import { parsePattern } from '../core/pattern.ts';
import { coreChecked } from './openapi-operation.ts';

/*
 * What the API answers with, shared by several areas (DESIGN §6). These document the responses;
 * response objects are loose because "fields may be added, never renamed".
 */

/** Every refusal: `{error: {code, message}}`. */
export const ErrorBody = z.object({
  error: z.object({
    code: z.string().meta({ description: 'stable machine-readable code, e.g. bad_request, bad_address, unauthenticated, forbidden, not_found, conflict, payload_too_large, unavailable', example: 'forbidden' }),
    message: z.string().meta({ description: 'what was wrong, where, and what was expected', example: 'user:clerk may not send on queue:orders: no permission rule allows it' }),
  }),
}).meta({ id: 'Error', description: 'The body of every 4xx/5xx answer.' });

/** An address, checked by the one address parser (a refusal is `bad_address`). */
export const Address = coreChecked((v) => parseAddress(v), { description: 'a Switchboard address `scheme:path` (DESIGN §1)', example: 'queue:orders' });

/** An address or a pattern with `*` / `**`, checked by the pattern parser. */
export const AddressPattern = coreChecked((v) => parsePattern(v), { description: 'an address or a pattern (`*` one segment, `**` any rest)', example: 'queue:orders.*' });

export const Verb = z.enum(['send', 'consume', 'browse', 'start', 'admin']).meta({ id: 'Verb' });

export const Sender = z.looseObject({
  kind: z.enum(['user', 'peer', 'flow', 'broker', 'webhook', 'route', 'system']),
  name: z.string(),
  alias: z.string().optional(),
}).meta({ id: 'Sender', description: 'who sent it, stamped by Switchboard from authentication' });

export const Message = z.looseObject({
  id: z.string().meta({ description: 'the dedup key, kept across every hop' }),
  to: z.string(),
  from: z.string().optional(),
  sender: Sender,
  correlationId: z.string().optional(),
  replyTo: z.string().optional(),
  subject: z.string().optional(),
  headers: z.record(z.string(), z.string()),
  contentType: z.string(),
  body: z.unknown().meta({ description: 'JSON; a binary body is `{"base64": "…"}`' }),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  amqp: z.looseObject({}).optional().meta({ description: 'AMQP properties kept for fidelity (types of ids, application properties, …)' }),
}).meta({ id: 'Message' });

export const LeasedMessage = Message.extend({
  lease: z.string().meta({ description: 'acknowledge with this before the lease ends, or the message comes back' }),
}).meta({ id: 'LeasedMessage' });

export const QueueContents = z.looseObject({
  address: z.string(),
  depth: z.number(),
  messages: z.array(Message),
}).meta({ id: 'QueueContents', description: 'depth and the first messages (browse, dead letters)' });

const FieldKind = z.union([z.enum(['text', 'number', 'date']), z.object({ choice: z.array(z.string()) })]);

const HistoryEntry = z.looseObject({
  at: z.string(),
  by: z.string(),
  action: z.string().meta({ description: 'created, claimed, released, delegated, approved, decided, escalated' }),
  detail: z.string().optional(),
});

export const Task = z.looseObject({
  id: z.string(),
  kind: z.enum(['task', 'message']),
  title: z.string(),
  description: z.string().optional(),
  data: z.record(z.string(), z.unknown()),
  actions: z.array(z.string()),
  fields: z.record(z.string(), FieldKind),
  assignee: z.string().optional(),
  group: z.string().optional(),
  claimedBy: z.string().optional(),
  due: z.string().optional(),
  status: z.enum(['open', 'decided']),
  decision: z.looseObject({ action: z.string(), fields: z.record(z.string(), z.unknown()), comment: z.string().optional(), by: z.string(), at: z.string() }).optional(),
  createdAt: z.string(),
  sender: z.string(),
  history: z.array(HistoryEntry),
}).meta({ id: 'Task' });

export const FlowStatus = z.enum(['running', 'waiting', 'completed', 'failed', 'cancelled']).meta({ id: 'FlowStatus' });

export const FlowInstance = z.looseObject({
  instanceId: z.string(),
  flow: z.string(),
  status: FlowStatus,
  waitingOn: z.looseObject({ step: z.number(), kind: z.string(), target: z.string().optional(), until: z.string().optional() }).optional(),
  input: z.unknown(),
  result: z.unknown().optional(),
  error: z.looseObject({ code: z.string().optional(), message: z.string() }).optional(),
  startedBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  steps: z.array(z.looseObject({ n: z.number(), kind: z.string(), target: z.string().optional(), at: z.string(), done: z.boolean(), error: z.string().optional() })),
}).meta({ id: 'FlowInstance' });

export const PermissionRule = z.looseObject({
  id: z.string(),
  group: z.string().optional(),
  user: z.string().optional(),
  peer: z.string().optional(),
  address: z.string(),
  verbs: z.array(Verb),
  source: z.enum(['config', 'console']),
  createdBy: z.string().optional(),
  createdAt: z.string().optional(),
}).meta({ id: 'PermissionRule' });

export const TokenInfo = z.looseObject({ id: z.string(), name: z.string(), user: z.string(), createdAt: z.string() }).meta({ id: 'TokenInfo' });

export const Subscription = z.looseObject({
  name: z.string(),
  durable: z.boolean(),
  shared: z.boolean(),
  pattern: z.string().optional(),
  depth: z.number(),
  address: z.string().meta({ description: 'consume it like a queue at this address' }),
}).meta({ id: 'Subscription' });
