import { Router as ExpressRouter, type Request, type Response } from 'express';
import { parseAddress } from '../../core/address.ts';
import type { QueueStats } from '../../core/endpoint.ts';
import { MessageInFlight, NotFound, ValidationError } from '../../core/errors.ts';
import { principalId, type Message } from '../../core/message.ts';
import type { Caller } from '../../core/pipeline.ts';
import type { AppDeps } from '../deps.ts';
import { ConsoleAccess, age, pagePrincipal } from '../console/access.ts';
import { callerOf } from '../middleware/authenticate.ts';
import { serveLive } from '../console/live.ts';
import { csrfProtect, csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { liveStreams } from '../sessions.ts';
import { render } from '../views.ts';

/**
 * Queues shown at most (in address order): each costs a few Redis reads per refresh, and a
 * page of thousands of rows helps nobody; the page says how many more there are.
 */
const MAX_ROWS = 300;

/** The `queue:` address in the URL (percent-encoded), validated. */
function queueParam(req: Request): string {
  const a = parseAddress(String(req.params.address));
  if (a.scheme !== 'queue') throw new ValidationError(`'${a.raw}' is not a queue: address; the console's queue pages show internal queues`);
  return a.raw;
}

const idParam = (req: Request): string => {
  const id = String(req.params.id);
  if (id.length === 0 || id.length > 500) throw new ValidationError('a message id is 1 to 500 characters');
  return id;
};

/** A message's body for reading: JSON pretty-printed, bytes as base64. */
function bodyText(m: Message): string {
  if (Buffer.isBuffer(m.body) || m.body instanceof Uint8Array) return `(binary, ${m.contentType}) base64: ${Buffer.from(m.body as Uint8Array).toString('base64')}`;
  return JSON.stringify(m.body, null, 2);
}

const statsRow = (s: QueueStats) => ({
  ...s,
  oldest: age(s.oldestAgeMs),
  rate: `${s.inPerSecond.toFixed(1)} in / ${s.outPerSecond.toFixed(1)} out`,
});

/**
 * The console's queues (DESIGN §6): depth, in flight, rates and oldest age of every queue the
 * user may look at (admin or browse), live; a queue's messages and dead letters, each viewable;
 * a queue's messages and dead letters for those who may browse it (an administrator of it without
 * browse sees its numbers only); a dead letter replayed (send, as in the API) or discarded (consume: it takes the message away
 * for good), each after a confirmation page, audited. A waiting message is discarded by an
 * administrator of its queue (admin: it removes a message nobody consumed, which consume alone
 * does not cover), after a confirmation page, audited, and never one a consumer holds right now.
 * Who may look at or do what is the router's decision (its guard), as for the API.
 */
export function consoleQueueRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const access = new ConsoleAccess(deps.permissions);
  const addresses = async () => (await deps.console?.queueAddresses()) ?? [];

  const visible = async (c: Caller) => (await addresses()).filter((a) => deps.router.allows('stats', a, c));
  const visibleStats = async (c: Caller, mine?: string[]) => Promise.all((mine ?? (await visible(c))).slice(0, MAX_ROWS).map(async (a) => statsRow(await deps.router.queueStats(a, c))));
  /** The buttons a page shows: what the router would let this caller do there. */
  const mayAct = (c: Caller, address: string) => ({
    mayReplay: deps.router.allows('replay', address, c), mayDiscard: deps.router.allows('discardDeadLetters', address, c),
    mayDiscardWaiting: deps.router.allows('discardWaiting', address, c),
  });

  r.get('/admin/queues', login, csrfToken, async (req, res) => {
    access.requireConsole(pagePrincipal(res));
    const c = callerOf(req, res);
    const mine = await visible(c);
    const queues = await visibleStats(c, mine);
    render(res, 'admin/queues', { title: 'Queues', section: 'queues', queues, more: mine.length - queues.length, done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined });
  });

  // Live: the same numbers every few seconds, for the rows this user may see (console/live.ts).
  const live = { streams: liveStreams(deps.session), log: deps.log };
  r.get('/admin/queues/live', login, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    const c = callerOf(req, res);
    serveLive(live, req, res, p, 'stats', () => visibleStats(c));
  });

  r.get('/admin/queues/:address', login, csrfToken, async (req, res) => {
    const c = callerOf(req, res);
    const address = queueParam(req);
    const stats = await deps.router.queueStats(address, c); // first: a refusal reads nothing
    // An administrator without browse sees the numbers, not the messages.
    const mayRead = deps.router.allows('browse', address, c);
    const [waiting, dead] = mayRead ? await Promise.all([deps.router.browse(address, 50, c), deps.router.deadLetters(address, 50, c)]) : [{ messages: [] }, { messages: [] }];
    render(res, 'admin/queue', {
      title: address, section: 'queues', address, stats: statsRow(stats), mayRead, waiting: waiting.messages, dead: dead.messages,
      ...mayAct(c, address),
      done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined,
    });
  });

  const findWaiting = async (address: string, id: string, c: Caller) => {
    const m = (await deps.router.browse(address, 1000, c)).messages.find((x) => x.id === id);
    if (!m) throw new NotFound(`no message '${id}' waiting in ${address} (among its first 1,000)`);
    return m;
  };
  const findDead = async (address: string, id: string, c: Caller) => {
    const m = (await deps.router.deadLetters(address, 1000, c)).messages.find((x) => x.id === id);
    if (!m) throw new NotFound(`no dead letter '${id}' in dlq:${address}`);
    return m as Message & { deadLetter?: { reason?: string; attempts?: number; at?: string } };
  };

  r.get('/admin/queues/:address/messages/:id', login, csrfToken, async (req, res) => {
    const c = callerOf(req, res);
    const address = queueParam(req);
    const m = await findWaiting(address, idParam(req), c);
    render(res, 'admin/message', { title: `Message ${m.id}`, section: 'queues', address, message: m, body: bodyText(m), dead: false, mayDiscardWaiting: deps.router.allows('discardWaiting', address, c) });
  });

  const waitingPage = (address: string, id: string) => `/admin/queues/${encodeURIComponent(address)}/messages/${encodeURIComponent(id)}`;

  r.get('/admin/queues/:address/messages/:id/discard', login, csrfToken, async (req, res) => {
    const c = callerOf(req, res);
    const address = queueParam(req);
    await deps.router.authorize('discardWaiting', address, c);
    const m = await findWaiting(address, idParam(req), c);
    render(res, 'admin/confirm', {
      title: 'Discard message?', section: 'queues', heading: `Discard message ${m.id}?`,
      lines: [
        `Waiting in ${address} since ${m.createdAt}, sent by ${m.sender.kind}:${m.sender.name}.`,
        'It is deleted for good and never delivered; nothing can bring it back.',
        'If a consumer takes it before you confirm, it is in flight and is not discarded: you are told so, and nothing changes.',
      ],
      action: req.originalUrl.split('?')[0], button: 'Discard', cancel: waitingPage(address, m.id),
    });
  });

  r.post('/admin/queues/:address/messages/:id/discard', login, csrfToken, csrfProtect, async (req: Request, res: Response) => {
    const p = pagePrincipal(res);
    const address = queueParam(req);
    const id = idParam(req);
    const ip = req.ip ? { ip: req.ip } : {};
    try {
      await deps.router.discardWaiting(address, id, callerOf(req, res));
    } catch (err) {
      if (!(err instanceof MessageInFlight)) throw err;
      // Not an error of the user's: the consumer was first. The attempt is in the trail too.
      await deps.audit.record({ action: 'message.discard-refused', actor: principalId(p), ...ip, target: address, detail: `message ${id} was in flight; not discarded` });
      render(res, 'error', { title: 'Not discarded', heading: 'Not discarded: the message is in flight', message: err.message.charAt(0).toUpperCase() + err.message.slice(1), back: `/admin/queues/${encodeURIComponent(address)}`, backLabel: `Back to ${address}` }, 409);
      return;
    }
    await deps.audit.record({ action: 'message.discarded', actor: principalId(p), ...ip, target: address, detail: `waiting message ${id} discarded from the console` });
    res.redirect(303, `/admin/queues/${encodeURIComponent(address)}?done=${encodeURIComponent(`discarded ${id}`)}`);
  });

  r.get('/admin/queues/:address/dead/:id', login, csrfToken, async (req, res) => {
    const c = callerOf(req, res);
    const address = queueParam(req);
    const m = await findDead(address, idParam(req), c);
    const { mayReplay, mayDiscard } = mayAct(c, address);
    render(res, 'admin/message', { title: `Dead letter ${m.id}`, section: 'queues', address, message: m, body: bodyText(m), dead: true, mayReplay, mayDiscard });
  });

  /** A dead-letter action: the router's act (the API's for the same thing), its words, and what it does. */
  const actions = {
    replay: { act: 'replay' as const, label: 'Replay', audit: 'deadletter.replayed', explain: 'It goes back into the queue it came from with a full set of delivery attempts.', run: (a: string, id: string, c: Caller) => deps.router.replayDeadLetters(a, [id], c) },
    discard: { act: 'discardDeadLetters' as const, label: 'Discard', audit: 'deadletter.discarded', explain: 'It is deleted for good; nothing can bring it back.', run: (a: string, id: string, c: Caller) => deps.router.discardDeadLetters(a, [id], c) },
  };

  for (const [name, act] of Object.entries(actions)) {
    r.get(`/admin/queues/:address/dead/:id/${name}`, login, csrfToken, async (req, res) => {
      const c = callerOf(req, res);
      const address = queueParam(req);
      await deps.router.authorize(act.act, address, c);
      const m = await findDead(address, idParam(req), c);
      render(res, 'admin/confirm', {
        title: `${act.label} dead letter?`, section: 'queues', heading: `${act.label} dead letter ${m.id}?`,
        lines: [`From ${address}, dead-lettered ${m.deadLetter?.at ?? ''} after ${m.deadLetter?.attempts ?? '?'} attempts: ${m.deadLetter?.reason ?? ''}`, act.explain],
        action: req.originalUrl.split('?')[0], button: act.label, cancel: `/admin/queues/${encodeURIComponent(address)}/dead/${encodeURIComponent(m.id)}`,
      });
    });
    r.post(`/admin/queues/:address/dead/:id/${name}`, login, csrfToken, csrfProtect, async (req: Request, res: Response) => {
      const p = pagePrincipal(res);
      const address = queueParam(req);
      const id = idParam(req);
      await act.run(address, id, callerOf(req, res));
      await deps.audit.record({ action: act.audit, actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: `dlq:${address}`, detail: `dead letter ${id} ${name === 'replay' ? 'replayed' : 'discarded'} from the console` });
      res.redirect(303, `/admin/queues/${encodeURIComponent(address)}?done=${encodeURIComponent(`${name === 'replay' ? 'replayed' : 'discarded'} ${id}`)}`);
    });
  }
  return r;
}
