import { Router as ExpressRouter } from 'express';
import * as z from 'zod';
import { parseAddress } from '../../core/address.ts';
import { Conflict, NotFound, ValidationError } from '../../core/errors.ts';
import { principalId } from '../../core/message.ts';
import type { AppDeps, TopicSubscriptions } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';
import { coreChecked, operation, requestOf } from '../openapi-operation.ts';
import { Subscription } from '../openapi-schemas.ts';

/** The topic transport of this gateway, or 404 when it has none. */
function topicsOf(deps: AppDeps, address: string): TopicSubscriptions {
  void address;
  if (!deps.topics) throw new NotFound('topics are not available in this gateway');
  return deps.topics;
}

/** `:topic` is `trades.eu` or `topic:trades.eu` (a pattern such as `trades.*` too), URL-encoded. */
function topicOf(raw: unknown): { topic: string; address: string } {
  const text = String(raw);
  const address = parseAddress(text.startsWith('topic:') ? text : `topic:${text}`).raw;
  if (address.includes('?')) throw new ValidationError(`'${text}': name the topic without ?subscription=; the subscription goes in the path or the body`);
  return { topic: address.slice('topic:'.length), address };
}

const Topic = coreChecked(topicOf, { description: '`trades.eu` or `topic:trades.eu` (a pattern such as `trades.*` too), URL-encoded', example: 'trades.eu' });
const TopicParam = z.object({ topic: Topic });
const boolean = (name: string) => z.boolean({ error: `'${name}' must be true or false` }).optional();

export const topicOperations = {
  list: operation({
    method: 'get', path: '/api/topics/:topic/subscriptions', id: 'listSubscriptions', tag: 'topics',
    summary: 'The subscriptions of a topic (admin on the topic)',
    params: TopicParam,
    ok: { status: 200, description: 'the subscriptions with their depth', schema: z.looseObject({ topic: z.string(), subscriptions: z.array(Subscription) }) },
    errors: [400, 403, 404],
  }),
  create: operation({
    method: 'post', path: '/api/topics/:topic/subscriptions', id: 'createSubscription', tag: 'topics',
    summary: 'Create a durable subscription (admin on the topic)',
    description: 'Consume it like a queue at `topic:<topic>?subscription=<name>`.',
    params: TopicParam,
    body: z.object({
      name: z.string({ error: "'name' (the subscription's name) is required" }).min(1, { error: "'name' (the subscription's name) is required" }),
      durable: boolean('durable').meta({ description: 'only true over HTTP: a non-durable subscription lives with its AMQP link' }),
      shared: boolean('shared'),
      maxDepth: z.int({ error: "'maxDepth' must be a positive integer" }).min(1, { error: "'maxDepth' must be a positive integer" }).optional().meta({ description: 'bounded: the publisher is held back when full' }),
    }).meta({ id: 'CreateSubscription' }),
    ok: { status: 201, description: 'created', schema: z.looseObject({ subscription: Subscription }) },
    errors: [400, 403, 404, 409],
  }),
  remove: operation({
    method: 'delete', path: '/api/topics/:topic/subscriptions/:name', id: 'deleteSubscription', tag: 'topics',
    summary: 'Delete a subscription with its messages (admin on the topic)',
    params: TopicParam.extend({ name: z.string() }),
    ok: { status: 200, description: 'deleted', schema: z.looseObject({ deleted: z.string() }) },
    errors: [400, 403, 404],
  }),
};

/**
 * Subscriptions of a topic (DESIGN §6), managed with `admin` on the topic. A durable
 * subscription is consumed like a queue at its address, `topic:<topic>?subscription=<name>`,
 * through the queue routes.
 */
export function topicRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const op = topicOperations;

  r.get(op.list.path, async (req, res) => {
    const { topic, address } = topicOf(requestOf.params(op.list, req).topic);
    deps.permissions.require(principalOf(res), 'admin', address);
    res.json({ topic: address, subscriptions: await topicsOf(deps, address).listSubscriptions(topic) });
  });

  r.post(op.create.path, async (req, res) => {
    const { topic, address } = topicOf(requestOf.params(op.create, req).topic);
    const p = principalOf(res);
    deps.permissions.require(p, 'admin', address);
    const { name, durable, shared, maxDepth } = requestOf.body(op.create, req);
    if (durable === false) throw new ValidationError("'durable: false': a non-durable subscription lives only as long as its consumer; subscribe over AMQP (or a route) to topic:" + topic);
    const { created, subscription } = await topicsOf(deps, address).createSubscription(topic, name, {
      createdBy: principalId(p), ...(shared !== undefined ? { shared } : {}), ...(maxDepth !== undefined ? { maxDepth } : {}),
    });
    if (!created) throw new Conflict(`topic:${topic} has a subscription named '${name}' already`);
    await deps.audit.record({ action: 'topic.subscription.created', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: subscription.address, detail: `subscription '${subscription.name}' on ${address}${subscription.shared ? ' (shared)' : ''}` });
    res.status(201).json({ subscription });
  });

  r.delete(op.remove.path, async (req, res) => {
    const params = requestOf.params(op.remove, req);
    const { topic, address } = topicOf(params.topic);
    const p = principalOf(res);
    deps.permissions.require(p, 'admin', address);
    const name = params.name;
    if (!(await topicsOf(deps, address).deleteSubscription(topic, name))) throw new NotFound(`no subscription '${name}' on ${address}`);
    await deps.audit.record({ action: 'topic.subscription.deleted', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: `${address}?subscription=${name}`, detail: `subscription '${name}' on ${address} deleted with its messages` });
    res.json({ deleted: name });
  });

  return r;
}
