import { Router as ExpressRouter, type Request, type Response } from 'express';
import { parseAddress } from '../../core/address.ts';
import type { QueueStats } from '../../core/endpoint.ts';
import { MessageInFlight, NotFound, ValidationError } from '../../core/errors.ts';
import { principalId, type Message, type Principal } from '../../core/message.ts';
import type { AppDeps } from '../deps.ts';
import { ConsoleAccess, age, pagePrincipal } from '../console/access.ts';
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
 * a dead letter replayed (send, as in the API) or discarded (consume: it takes the message away
 * for good), each after a confirmation page, audited. A waiting message is discarded by an
 * administrator of its queue (admin: it removes a message nobody consumed, which consume alone
 * does not cover), after a confirmation page, audited, and never one a consumer holds right now.
 */
export function consoleQueueRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const access = new ConsoleAccess(deps.permissions);
  const addresses = async () => (await deps.console?.queueAddresses()) ?? [];

  const visible = async (p: Principal) => (await addresses()).filter((a) => access.mayLook(p, a));
  const visibleStats = async (p: Principal, mine?: string[]) => Promise.all((mine ?? (await visible(p))).slice(0, MAX_ROWS).map(async (a) => statsRow(await deps.router.queueStats(a))));

  r.get('/admin/queues', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    const mine = await visible(p);
    const queues = await visibleStats(p, mine);
    render(res, 'admin/queues', { title: 'Queues', section: 'queues', queues, more: mine.length - queues.length, done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined });
  });

  // Live: the same numbers every few seconds, for the rows this user may see (console/live.ts).
  const live = { streams: liveStreams(deps.session), log: deps.log };
  r.get('/admin/queues/live', login, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    serveLive(live, req, res, p, 'stats', () => visibleStats(p));
  });

  r.get('/admin/queues/:address', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    const address = queueParam(req);
    access.requireLook(p, address);
    const [stats, waiting, dead] = await Promise.all([deps.router.queueStats(address), deps.router.browse(address, 50), deps.router.deadLetters(address, 50)]);
    render(res, 'admin/queue', {
      title: address, section: 'queues', address, stats: statsRow(stats), waiting: waiting.messages, dead: dead.messages,
      mayReplay: deps.permissions.check(p, 'send', address).allowed, mayDiscard: deps.permissions.check(p, 'consume', address).allowed,
      mayDiscardWaiting: deps.permissions.check(p, 'admin', address).allowed,
      done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined,
    });
  });

  const findWaiting = async (address: string, id: string) => {
    const m = (await deps.router.browse(address, 1000)).messages.find((x) => x.id === id);
    if (!m) throw new NotFound(`no message '${id}' waiting in ${address} (among its first 1,000)`);
    return m;
  };
  const findDead = async (address: string, id: string) => {
    const m = (await deps.router.deadLetters(address, 1000)).messages.find((x) => x.id === id);
    if (!m) throw new NotFound(`no dead letter '${id}' in dlq:${address}`);
    return m as Message & { deadLetter?: { reason?: string; attempts?: number; at?: string } };
  };

  r.get('/admin/queues/:address/messages/:id', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    const address = queueParam(req);
    access.requireLook(p, address);
    const m = await findWaiting(address, idParam(req));
    render(res, 'admin/message', { title: `Message ${m.id}`, section: 'queues', address, message: m, body: bodyText(m), dead: false, mayDiscardWaiting: deps.permissions.check(p, 'admin', address).allowed });
  });

  const waitingPage = (address: string, id: string) => `/admin/queues/${encodeURIComponent(address)}/messages/${encodeURIComponent(id)}`;

  r.get('/admin/queues/:address/messages/:id/discard', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    const address = queueParam(req);
    deps.permissions.require(p, 'admin', address);
    const m = await findWaiting(address, idParam(req));
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
    deps.permissions.require(p, 'admin', address);
    const id = idParam(req);
    const ip = req.ip ? { ip: req.ip } : {};
    try {
      await deps.router.discardWaiting(address, id);
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
    const p = pagePrincipal(res);
    const address = queueParam(req);
    access.requireLook(p, address);
    const m = await findDead(address, idParam(req));
    render(res, 'admin/message', {
      title: `Dead letter ${m.id}`, section: 'queues', address, message: m, body: bodyText(m), dead: true,
      mayReplay: deps.permissions.check(p, 'send', address).allowed, mayDiscard: deps.permissions.check(p, 'consume', address).allowed,
    });
  });

  /** A dead-letter action: its verb (the API's for the same act), its words, and what it does. */
  const actions = {
    replay: { verb: 'send' as const, label: 'Replay', audit: 'deadletter.replayed', explain: 'It goes back into the queue it came from with a full set of delivery attempts.', run: (a: string, id: string) => deps.router.replayDeadLetters(a, [id]) },
    discard: { verb: 'consume' as const, label: 'Discard', audit: 'deadletter.discarded', explain: 'It is deleted for good; nothing can bring it back.', run: (a: string, id: string) => deps.router.discardDeadLetters(a, [id]) },
  };

  for (const [name, act] of Object.entries(actions)) {
    r.get(`/admin/queues/:address/dead/:id/${name}`, login, csrfToken, async (req, res) => {
      const p = pagePrincipal(res);
      const address = queueParam(req);
      deps.permissions.require(p, act.verb, address);
      const m = await findDead(address, idParam(req));
      render(res, 'admin/confirm', {
        title: `${act.label} dead letter?`, section: 'queues', heading: `${act.label} dead letter ${m.id}?`,
        lines: [`From ${address}, dead-lettered ${m.deadLetter?.at ?? ''} after ${m.deadLetter?.attempts ?? '?'} attempts: ${m.deadLetter?.reason ?? ''}`, act.explain],
        action: req.originalUrl.split('?')[0], button: act.label, cancel: `/admin/queues/${encodeURIComponent(address)}/dead/${encodeURIComponent(m.id)}`,
      });
    });
    r.post(`/admin/queues/:address/dead/:id/${name}`, login, csrfToken, csrfProtect, async (req: Request, res: Response) => {
      const p = pagePrincipal(res);
      const address = queueParam(req);
      deps.permissions.require(p, act.verb, address);
      const id = idParam(req);
      await act.run(address, id);
      await deps.audit.record({ action: act.audit, actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: `dlq:${address}`, detail: `dead letter ${id} ${name === 'replay' ? 'replayed' : 'discarded'} from the console` });
      res.redirect(303, `/admin/queues/${encodeURIComponent(address)}?done=${encodeURIComponent(`${name === 'replay' ? 'replayed' : 'discarded'} ${id}`)}`);
    });
  }
  return r;
}
