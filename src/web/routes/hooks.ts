import express, { Router as ExpressRouter } from 'express';
import { NotFound, SwitchboardError, Unauthenticated, ValidationError } from '../../core/errors.ts';
import type { Message } from '../../core/message.ts';
import { verify } from '../../network/webhook-signature.ts';
import type { AppDeps } from '../deps.ts';
import { withRequestTrace } from '../request-trace.ts';

export interface InboundHook {
  name: string;
  secret: string;
  to: string;
}

/**
 * POST /hooks/:name — inbound webhooks, authenticated by their HMAC signature (no user login):
 * a bad or stale signature, or one made for the outbound direction, is 401 (audited) and nothing
 * is routed; a good one is routed to the configured address with the sender `webhook:<name>`,
 * deduplicated by X-Switchboard-Id (which the signature covers).
 */
export function hookRoutes(deps: AppDeps & { hooks?: InboundHook[] }): ExpressRouter {
  const r = ExpressRouter();
  const hooks = new Map((deps.hooks ?? []).map((h) => [h.name, h]));
  r.post('/hooks/:name', express.raw({ type: () => true, limit: deps.bodyLimit }), async (req, res) => {
    const hook = hooks.get(String(req.params.name));
    if (!hook) throw new NotFound(`no inbound webhook '${req.params.name}'`);
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const id = req.get('x-switchboard-id');
    if (!id || !/^[\x21-\x7e]{1,256}$/.test(id)) throw new ValidationError('X-Switchboard-Id must be the message id: 1 to 256 visible ASCII characters');
    const correlationId = req.get('x-switchboard-correlation-id') || undefined;
    const subject = req.get('x-switchboard-subject') || undefined;
    const claimed = req.get('x-switchboard-sender') || undefined;
    // The signature covers everything routed from this request (direction, id, correlation id,
    // subject, claimed sender, body), so none of it can be changed or replayed from the other way.
    const problem = verify(hook.secret, { direction: 'inbound', timestamp: req.get('x-switchboard-timestamp'), id, correlationId, subject, sender: claimed }, req.get('x-switchboard-signature'), body);
    if (problem) {
      await deps.audit.record({ action: 'webhook.refused', actor: `webhook:${hook.name}`, ...(req.ip ? { ip: req.ip } : {}), target: hook.to, detail: problem });
      throw new Unauthenticated(`webhook '${hook.name}': ${problem}`);
    }
    let parsed: unknown;
    try {
      parsed = body.length ? JSON.parse(body.toString('utf8')) : null;
    } catch (err) {
      throw new SwitchboardError('bad_json', `webhook body is not valid JSON: ${(err as Error).message}`, 400);
    }
    // The trace headers are not under the signature: they steer telemetry only, never routing or dedup.
    let message: Message = {
      id,
      to: hook.to,
      from: `webhook:${hook.name}`,
      sender: { kind: 'webhook', name: hook.name },
      headers: {},
      contentType: 'application/json',
      body: parsed,
      createdAt: new Date().toISOString(),
      ...(correlationId ? { correlationId } : {}),
      ...(subject ? { subject } : {}),
    };
    // The pipeline keeps a client's switchboard-* header only as switchboard-claimed-*.
    if (claimed) message.headers['switchboard-sender'] = claimed;
    message = withRequestTrace(req, message);
    const result = await deps.router.send(message, { principal: { kind: 'webhook', name: hook.name }, door: 'webhook', ...(req.ip ? { ip: req.ip } : {}) });
    res.status(202).json({ id, duplicate: result.duplicate });
  });
  return r;
}
