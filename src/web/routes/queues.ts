import { Router as ExpressRouter, type Request } from 'express';
import { parseAddress } from '../../core/address.ts';
import { ValidationError } from '../../core/errors.ts';
import type { Message } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { principalOf } from '../middleware/authenticate.ts';

function intIn(value: unknown, name: string, min: number, max: number, fallback: number): number {
  if (value === undefined || value === null || value === '') return fallback;
  const n = typeof value === 'string' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ValidationError(`'${name}' must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** The address in the URL (percent-encode a `/` inside it as %2F), validated. */
function addressParam(req: Request): string {
  return parseAddress(req.params.address).raw;
}

/** What the rules are checked on: a topic subscription (`topic:t?subscription=s`) is governed by its topic's rules. */
function ruleAddress(address: string): string {
  const q = address.indexOf('?');
  return q < 0 ? address : address.slice(0, q);
}

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

/** Browse, peek-lock receive and ack, dead letters and replay. */
export function queueRoutes({ router, permissions }: AppDeps): ExpressRouter {
  const r = ExpressRouter();

  r.get('/api/queues/:address', async (req, res) => {
    const address = addressParam(req);
    permissions.require(principalOf(res), 'browse', ruleAddress(address));
    res.json(withMessagesJson(await router.browse(address, intIn(req.query.limit, 'limit', 1, 1000, 20))));
  });

  r.post('/api/queues/:address/receive', async (req, res) => {
    const address = addressParam(req);
    permissions.require(principalOf(res), 'consume', ruleAddress(address));
    const body = (req.body ?? {}) as { max?: unknown; leaseSeconds?: unknown };
    const max = intIn(body.max, 'max', 1, 1000, 1);
    const leaseSeconds = intIn(body.leaseSeconds, 'leaseSeconds', 1, 43_200, 30);
    res.json({ messages: (await router.receive(address, max, leaseSeconds * 1000)).map(messageJson) });
  });

  r.post('/api/queues/:address/ack', async (req, res) => {
    const address = addressParam(req);
    permissions.require(principalOf(res), 'consume', ruleAddress(address));
    const leases = (req.body ?? {}).leases as unknown;
    if (!Array.isArray(leases) || leases.length === 0 || leases.length > 1000 || !leases.every((l) => typeof l === 'string' && l.length > 0 && l.length < 200)) {
      throw new ValidationError("'leases' must be a non-empty array (at most 1000) of lease strings from a receive");
    }
    res.json(await router.ack(address, leases as string[]));
  });

  r.get('/api/dlq/:address', async (req, res) => {
    const address = addressParam(req);
    permissions.require(principalOf(res), 'browse', ruleAddress(address));
    res.json(withMessagesJson(await router.deadLetters(address, intIn(req.query.limit, 'limit', 1, 1000, 20))));
  });

  // Replay puts dead letters back into the queue they came from: a send into that address.
  r.post('/api/dlq/:address/replay', async (req, res) => {
    const address = addressParam(req);
    permissions.require(principalOf(res), 'send', ruleAddress(address));
    const ids = (req.body ?? {}).ids as unknown;
    if (ids !== undefined && (!Array.isArray(ids) || !ids.every((i) => typeof i === 'string'))) {
      throw new ValidationError("'ids' must be an array of message ids (omit it to replay every dead letter)");
    }
    res.json(await router.replayDeadLetters(address, ids as string[] | undefined));
  });

  return r;
}
