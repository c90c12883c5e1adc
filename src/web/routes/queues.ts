import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import type { Message } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { callerOf } from '../middleware/authenticate.ts';
import { integerIn, operation, requestOf } from '../openapi-operation.ts';
import { Address, LeasedMessage, QueueContents } from '../openapi-schemas.ts';

/** The address in the URL (percent-encode a `/` inside it as %2F), checked by the address parser. */
const AddressParam = z.object({ address: Address });
const Limit = z.object({ limit: integerIn('limit', 1, 1000, 20) });
const LEASES = "'leases' must be a non-empty array (at most 1000) of lease strings from a receive";

export const queueOperations = {
  browse: operation({
    method: 'get', path: '/api/queues/:address', id: 'browseQueue', tag: 'queues',
    summary: 'Depth and the first messages of a queue (browse)',
    description: 'Takes nothing. A durable topic subscription is browsed at `topic:<topic>?subscription=<name>`.',
    params: AddressParam, query: Limit,
    ok: { status: 200, description: 'the queue', schema: QueueContents },
    errors: [400, 403, 404],
  }),
  receive: operation({
    method: 'post', path: '/api/queues/:address/receive', id: 'receiveMessages', tag: 'queues',
    summary: 'Take messages under a lease (peek-lock, consume)',
    description: 'Messages not acknowledged before their lease ends come back.',
    params: AddressParam,
    body: z.object({ max: integerIn('max', 1, 1000, 1), leaseSeconds: integerIn('leaseSeconds', 1, 43_200, 30) }).meta({ id: 'ReceiveRequest' }),
    ok: { status: 200, description: 'up to `max` messages, each with its lease (none: an empty list)', schema: z.looseObject({ messages: z.array(LeasedMessage) }) },
    errors: [400, 403, 404],
  }),
  ack: operation({
    method: 'post', path: '/api/queues/:address/ack', id: 'ackMessages', tag: 'queues',
    summary: 'Acknowledge received messages by their leases (consume)',
    params: AddressParam,
    body: z.object({ leases: z.array(z.string({ error: LEASES }).min(1, { error: LEASES }).max(199, { error: LEASES }), { error: LEASES }).min(1, { error: LEASES }).max(1000, { error: LEASES }) }).meta({ id: 'AckRequest' }),
    ok: { status: 200, description: 'how many were acknowledged; leases that had expired are listed', schema: z.looseObject({ acked: z.number(), expired: z.array(z.string()) }) },
    errors: [400, 403, 404],
  }),
  deadLetters: operation({
    method: 'get', path: '/api/dlq/:address', id: 'browseDeadLetters', tag: 'queues',
    summary: 'The dead letters of an address (browse)',
    params: AddressParam, query: Limit,
    ok: { status: 200, description: 'the dead letters', schema: QueueContents },
    errors: [400, 403, 404],
  }),
  replay: operation({
    method: 'post', path: '/api/dlq/:address/replay', id: 'replayDeadLetters', tag: 'queues',
    summary: 'Put dead letters back into the queue they came from (send)',
    params: AddressParam,
    body: z.object({ ids: z.array(z.string({ error: "'ids' must be an array of message ids (omit it to replay every dead letter)" }), { error: "'ids' must be an array of message ids (omit it to replay every dead letter)" }).optional() }).meta({ id: 'ReplayRequest' }),
    ok: { status: 200, description: 'how many were replayed; ids that were not dead letters are listed', schema: z.looseObject({ replayed: z.number(), notFound: z.array(z.string()).optional() }) },
    errors: [400, 403, 404],
  }),
};

/**
 * A message as JSON (DESIGN §6): a binary body is `{"base64": "…"}` beside its `contentType`
 * (JSON would otherwise turn a Buffer into `{type: 'Buffer', data: […]}`). Of `amqp`, the typed
 * copies of the body are left out: the body is already there, and ids and headers are strings.
 */
export function messageJson<M extends Message>(m: M): M {
  const body = Buffer.isBuffer(m.body) || m.body instanceof Uint8Array ? { base64: Buffer.from(m.body as Uint8Array).toString('base64') } : m.body;
  if (!m.amqp) return { ...m, body };
  const { body: _typed, data: _bytes, ...amqp } = m.amqp;
  return { ...m, body, amqp };
}

function withMessagesJson<T extends { messages: Message[] }>(r: T): T {
  return { ...r, messages: r.messages.map(messageJson) };
}

/** Browse, peek-lock receive and ack, dead letters and replay; the router decides who may. */
export function queueRoutes({ router }: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const op = queueOperations;

  r.get(op.browse.path, async (req, res) => {
    const { address } = requestOf.params(op.browse, req);
    res.json(withMessagesJson(await router.browse(address, requestOf.query(op.browse, req).limit, callerOf(req, res))));
  });

  r.post(op.receive.path, async (req, res) => {
    const { address } = requestOf.params(op.receive, req);
    const { max, leaseSeconds } = requestOf.body(op.receive, req);
    res.json({ messages: (await router.receive(address, max, leaseSeconds * 1000, callerOf(req, res))).map(messageJson) });
  });

  r.post(op.ack.path, async (req, res) => {
    const { address } = requestOf.params(op.ack, req);
    res.json(await router.ack(address, requestOf.body(op.ack, req).leases, callerOf(req, res)));
  });

  r.get(op.deadLetters.path, async (req, res) => {
    const { address } = requestOf.params(op.deadLetters, req);
    res.json(withMessagesJson(await router.deadLetters(address, requestOf.query(op.deadLetters, req).limit, callerOf(req, res))));
  });

  // Replay puts dead letters back into the queue they came from: a send into that address.
  r.post(op.replay.path, async (req, res) => {
    const { address } = requestOf.params(op.replay, req);
    res.json(await router.replayDeadLetters(address, requestOf.body(op.replay, req).ids, callerOf(req, res)));
  });

  return r;
}
