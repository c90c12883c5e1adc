import express, { Router as ExpressRouter, type Request, type Response } from 'express';
import { join } from 'node:path';
import { SwitchboardError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import type { Inbox } from '../../people/inbox.ts';
import type { Task } from '../../people/task-store.ts';
import type { TaskEvent } from '../../people/task-events.ts';
import type { AppDeps } from '../deps.ts';
import { csrfProtect, csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { liveStreams, sessionPrincipal } from '../sessions.ts';
import { StreamAccess } from '../stream-access.ts';
import { formatValue, readerLocale, type FormattedValue } from '../locale-format.ts';
import { inRequestSpan } from '../request-span.ts';
import { render } from '../views.ts';

interface ListQuery {
  q?: string;
  sort?: 'due' | 'created';
  show?: 'all' | 'mine' | 'groups';
}

function listFor(tasks: Task[], p: Principal, query: ListQuery): { tasks: Task[]; counts: { mine: number; groups: number; overdue: number; all: number } } {
  const now = Date.now();
  const counts = {
    all: tasks.length,
    mine: tasks.filter((t) => t.assignee === p.name || t.claimedBy === principalId(p)).length,
    groups: tasks.filter((t) => t.group !== undefined).length,
    overdue: tasks.filter((t) => t.due && Date.parse(t.due) < now).length,
  };
  let shown = tasks;
  if (query.show === 'mine') shown = shown.filter((t) => t.assignee === p.name || t.claimedBy === principalId(p));
  if (query.show === 'groups') shown = shown.filter((t) => t.group !== undefined);
  const q = (query.q ?? '').trim().toLowerCase();
  if (q) shown = shown.filter((t) => t.title.toLowerCase().includes(q) || (t.description ?? '').toLowerCase().includes(q));
  if (query.sort === 'created') shown = [...shown].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  return { tasks: shown, counts };
}

function query(req: Request): ListQuery {
  const q = req.query as Record<string, unknown>;
  return {
    ...(typeof q.q === 'string' ? { q: q.q.slice(0, 200) } : {}),
    sort: q.sort === 'created' ? 'created' : 'due',
    show: q.show === 'mine' || q.show === 'groups' ? q.show : 'all',
  };
}

/** A value of a task's data for its table, formatted for the reader (nested values as compact JSON). */
function cell(v: unknown, locale: string): FormattedValue {
  return formatValue(v, locale);
}

/**
 * The task's own field for a comment (`comment`, any case, of kind text), if it declares one. The
 * task page shows one comment box, the built-in one, and its text fills that field too.
 */
export function commentField(fields: Task['fields'] | undefined): string | undefined {
  return Object.entries(fields ?? {}).find(([name, kind]) => name.toLowerCase() === 'comment' && kind === 'text')?.[0];
}

// One frame per event, shared by every stream it concerns (hundreds may watch the same group).
const frames = new WeakMap<TaskEvent, string>();
function taskFrame(e: TaskEvent): string {
  let frame = frames.get(e);
  if (frame === undefined) {
    frame = `event: task\ndata: ${JSON.stringify({ type: e.type, taskId: e.taskId, by: e.by })}\n\n`;
    frames.set(e, frame);
  }
  return frame;
}

/** The web inbox: my tasks and my groups', live over server-sent events; a task page to act. */
export function inboxRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const inbox = (): Inbox => {
    if (!deps.inbox) throw new SwitchboardError('not_found', 'the inbox is not enabled in this gateway', 404);
    return deps.inbox;
  };

  r.use('/static', express.static(join(import.meta.dirname, '..', '..', '..', 'public'), { maxAge: '1h', index: false }));

  r.get('/inbox', login, csrfToken, async (req, res) => {
    const p = res.locals.principal as Principal;
    const q = query(req);
    const { tasks, counts } = listFor(await inbox().list(p), p, q);
    render(res, 'inbox/index', { title: counts.all ? `Inbox (${counts.all})` : 'Inbox', tasks, counts, query: q, done: typeof req.query.done === 'string' ? req.query.done.slice(0, 300) : undefined, now: Date.now() });
  });

  // The list alone, for the live refresh.
  r.get('/inbox/list', login, async (req, res) => {
    const p = res.locals.principal as Principal;
    const { tasks, counts } = listFor(await inbox().list(p), p, query(req));
    render(res, 'inbox/list', { title: 'Inbox', tasks, counts, now: Date.now(), partial: true });
  });

  // Live streams are capped per user (http.inboxStreamsPerUser: one more is refused, and an
  // EventSource refused with a non-200 does not retry) and end with their session.
  const streams = liveStreams(deps.session);
  r.get('/inbox/events', login, (req, res) => {
    // A client gone while its session was looked up (a page left at once) closed before this
    // handler ran: the 'close' it listens for below has fired already, and nothing would ever
    // stop the stream's timers (they kept a test process alive in CI).
    if (req.socket.destroyed || res.closed) return;
    const p = res.locals.principal as Principal;
    let ended = false;
    const end = (reason: string) => {
      if (ended) return;
      ended = true;
      res.write(`event: end\ndata: ${JSON.stringify({ reason })}\n\n`);
      res.end();
    };
    const stream = streams.open(p.name, req.sessionID, end);
    if (!stream) throw new SwitchboardError('too_many_streams', `${p.name} already has ${streams.perUser} live inbox streams open (http.inboxStreamsPerUser): close another inbox tab or window`, 429);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache, no-transform', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.write('retry: 3000\n\n');
    // Each stream remembers its answer per place and forgets it on a rule or group change (see
    // StreamAccess): a task event costs a map lookup per open stream, not a rule check.
    const access = new StreamAccess(deps.permissions, p, (who, place) => inbox().mayAct(who, place));
    const off = inbox().events.on((e) => {
      if (access.concerns(e)) res.write(taskFrame(e));
    });
    // A rule change may add or take away whole groups' tasks: every open inbox reloads its list.
    const offRules = deps.permissions.onChange(() => res.write(`event: task\ndata: ${JSON.stringify({ type: 'rules-changed' })}\n\n`));
    const ping = setInterval(() => res.write(': keep-alive\n\n'), 20_000).unref();
    // Logout in another process, or expiry: the stream notices its session is gone. The session's
    // groups (refreshed from the directory at every page the user loads) are the stream's too.
    const check = setInterval(() => {
      req.sessionStore.get(req.sessionID, (err, session) => {
        if (!err && !session?.user) end('session ended');
        else if (!err && session?.user) access.follow(sessionPrincipal(session.user));
      });
    }, streams.sessionCheckMs).unref();
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      off();
      offRules();
      access.close();
      clearInterval(ping);
      clearInterval(check);
      stream.close();
    };
    // Whichever tells first that the connection is gone.
    req.on('close', close);
    res.on('close', close);
  });

  const showTask = async (req: Request, res: Response, extra: { error?: string; status?: number } = {}) => {
    const p = res.locals.principal as Principal;
    const task = await inbox().get(p, String(req.params.id));
    const locale = readerLocale(req.headers['accept-language']);
    const rows = Object.entries(task.data ?? {}).map(([k, v]) => ({ key: k, ...cell(v, locale) }));
    render(res, 'inbox/task', { title: task.title, task, rows, locale, commentField: commentField(task.fields), mayAct: inbox().mayAct(p, task), excludedBecause: inbox().excludedReason(p, task), me: principalId(p), error: extra.error, done: typeof req.query.done === 'string' ? req.query.done.slice(0, 200) : undefined, now: Date.now() }, extra.status ?? 200);
  };

  r.get('/tasks/:id', login, csrfToken, (req, res) => showTask(req, res));

  // Each form: act, then back to a page (POST-redirect-GET); a conflict shows on the task page.
  const act = (fn: (p: Principal, req: Request) => Promise<unknown>, after: (req: Request) => string) => async (req: Request, res: Response) => {
    try {
      await fn(res.locals.principal as Principal, req);
      res.redirect(303, after(req));
    } catch (err) {
      if (err instanceof SwitchboardError && (err.status === 409 || err.status === 400)) return showTask(req, res, { error: err.message, status: err.status });
      throw err;
    }
  };
  const id = (req: Request) => String(req.params.id);
  r.post('/tasks/:id/claim', login, csrfToken, csrfProtect, act((p, req) => inbox().claim(p, id(req), req.ip), (req) => `/tasks/${encodeURIComponent(id(req))}?done=claimed`));
  r.post('/tasks/:id/release', login, csrfToken, csrfProtect, act((p, req) => inbox().release(p, id(req), req.ip), () => '/inbox?done=released'));
  r.post('/tasks/:id/delegate', login, csrfToken, csrfProtect, act((p, req) => inbox().delegate(p, id(req), (req.body as { to?: unknown }).to, req.ip), (req) => `/inbox?done=${encodeURIComponent(`delegated to ${String((req.body as { to?: unknown }).to).trim()}`)}`));
  r.post('/tasks/:id/decision', login, csrfToken, csrfProtect, act(async (p, req) => {
    const body = req.body as Record<string, unknown>;
    const fields: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(body)) if (k.startsWith('field.')) fields[k.slice(6)] = v;
    const comment = typeof body.comment === 'string' ? body.comment.trim() : '';
    // One comment box on the page: when the task declares its own comment field, the box fills it
    // too, so the flow finds the text where it asked for it (and the inbox validates it as that field).
    const own = comment ? commentField((await inbox().get(p, id(req))).fields) : undefined;
    if (own !== undefined) fields[own] = comment;
    return inRequestSpan(deps.tracing, req, '/tasks/{id}/decision', p, (span) => inbox().decide(p, id(req), { action: body.action, fields, ...(comment ? { comment } : {}) }, req.ip, span));
  }, (req) => `/inbox?done=${encodeURIComponent(`decided "${String((req.body as { action?: unknown }).action)}"`)}`));
  return r;
}
