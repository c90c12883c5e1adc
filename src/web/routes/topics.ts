import { Router as ExpressRouter, type Request } from 'express';
import { parseAddress } from '../../core/address.ts';
import { Conflict, NotFound, ValidationError } from '../../core/errors.ts';
import { principalId } from '../../core/message.ts';
import type { AppDeps, TopicSubscriptions } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

/** The topic transport of this gateway, or 404 when it has none. */
function topicsOf(deps: AppDeps, address: string): TopicSubscriptions {
  void address;
  if (!deps.topics) throw new NotFound('topics are not available in this gateway');
  return deps.topics;
}

/** `:topic` is `trades.eu` or `topic:trades.eu` (a pattern such as `trades.*` too), URL-encoded. */
function topicParam(req: Request): { topic: string; address: string } {
  const raw = String(req.params.topic);
  const address = parseAddress(raw.startsWith('topic:') ? raw : `topic:${raw}`).raw;
  if (address.includes('?')) throw new ValidationError(`'${raw}': name the topic without ?subscription=; the subscription goes in the path or the body`);
  return { topic: address.slice('topic:'.length), address };
}

function optionalBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (v !== undefined && typeof v !== 'boolean') throw new ValidationError(`'${name}' must be true or false`);
  return v;
}

/**
 * Subscriptions of a topic (DESIGN §6), managed with `admin` on the topic. A durable
 * subscription is consumed like a queue at its address, `topic:<topic>?subscription=<name>`,
 * through the queue routes.
 */
export function topicRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();

  r.get('/api/topics/:topic/subscriptions', async (req, res) => {
    const { topic, address } = topicParam(req);
    deps.permissions.require(principalOf(res), 'admin', address);
    res.json({ topic: address, subscriptions: await topicsOf(deps, address).listSubscriptions(topic) });
  });

  r.post('/api/topics/:topic/subscriptions', async (req, res) => {
    const { topic, address } = topicParam(req);
    const p = principalOf(res);
    deps.permissions.require(p, 'admin', address);
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (typeof body.name !== 'string' || body.name === '') throw new ValidationError("'name' (the subscription's name) is required");
    const maxDepth = body.maxDepth;
    if (maxDepth !== undefined && (typeof maxDepth !== 'number' || !Number.isInteger(maxDepth) || maxDepth < 1)) throw new ValidationError("'maxDepth' must be a positive integer");
    const durable = optionalBoolean(body, 'durable');
    const shared = optionalBoolean(body, 'shared');
    if (durable === false) throw new ValidationError("'durable: false': a non-durable subscription lives only as long as its consumer; subscribe over AMQP (or a route) to topic:" + topic);
    const { created, subscription } = await topicsOf(deps, address).createSubscription(topic, body.name, {
      createdBy: principalId(p), ...(shared !== undefined ? { shared } : {}), ...(maxDepth !== undefined ? { maxDepth } : {}),
    });
    if (!created) throw new Conflict(`topic:${topic} has a subscription named '${body.name}' already`);
    await deps.audit.record({ action: 'topic.subscription.created', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: subscription.address, detail: `subscription '${subscription.name}' on ${address}${subscription.shared ? ' (shared)' : ''}` });
    res.status(201).json({ subscription });
  });

  r.delete('/api/topics/:topic/subscriptions/:name', async (req, res) => {
    const { topic, address } = topicParam(req);
    const p = principalOf(res);
    deps.permissions.require(p, 'admin', address);
    const name = String(req.params.name);
    if (!(await topicsOf(deps, address).deleteSubscription(topic, name))) throw new NotFound(`no subscription '${name}' on ${address}`);
    await deps.audit.record({ action: 'topic.subscription.deleted', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: `${address}?subscription=${name}`, detail: `subscription '${name}' on ${address} deleted with its messages` });
    res.json({ deleted: name });
  });

  return r;
}
