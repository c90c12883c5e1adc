import { Router as ExpressRouter } from 'express';
import type { StoredAuditEntry } from '../../auth/audit.ts';
import { SwitchboardError, ValidationError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';
import type { AppDeps, ConnectionState } from '../deps.ts';
import { ConsoleAccess, pagePrincipal, textParam } from '../console/access.ts';
import { serveLive } from '../console/live.ts';
import { csrfToken } from '../middleware/csrf.ts';
import { requireLogin } from '../middleware/require-login.ts';
import { liveStreams } from '../sessions.ts';
import { render } from '../views.ts';

/** One CSV field (RFC 4180), with a leading = + - @ defused so a spreadsheet never runs it as a formula. */
export function csvField(v: unknown): string {
  let s = v === undefined || v === null ? '' : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function auditCsv(entries: StoredAuditEntry[]): string {
  const cols = ['at', 'action', 'actor', 'ip', 'target', 'detail'] as const;
  return [cols.join(','), ...entries.map((e) => cols.map((c) => csvField(e[c])).join(','))].join('\r\n') + '\r\n';
}

const time = (iso: string | undefined) => (iso ? iso.replace('T', ' ').slice(0, 19) : '—');

/** A connection as the page shows it, the same for the first render and the live updates. */
export function connectionRow(c: ConnectionState) {
  return {
    key: `${c.kind}:${c.name}`, kind: c.kind, name: c.name, state: c.state, ok: c.ok,
    outbox: c.outbox ? `${c.outbox.depth} waiting, ${c.outbox.deadLetters} dead` : '—',
    nextRetry: time(c.outbox?.nextRetryAt),
    lastError: c.lastError ?? c.outbox?.lastError?.message ?? '—',
  };
}

/**
 * The console's connections (brokers, peers with their outboxes, webhooks, the directory: each
 * shown to who has admin or browse on its address) and the audit trail (admin on everything, as
 * `GET /api/audit`), searchable and exported as CSV.
 */
export function consoleOpsRoutes(deps: AppDeps): ExpressRouter {
  const r = ExpressRouter();
  const login = requireLogin(deps.directory, deps.permissions);
  const access = new ConsoleAccess(deps.permissions);

  const visible = async (p: Principal) => {
    const all = (await deps.console?.connections()) ?? [];
    const connections = all.filter((c) => access.mayLook(p, c.address)).map(connectionRow);
    return { connections, hidden: all.length - connections.length };
  };

  r.get('/admin/connections', login, csrfToken, async (_req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    render(res, 'admin/connections', { title: 'Connections', section: 'connections', ...(await visible(p)) });
  });

  // Live: the same rows every few seconds (state, outbox, last error), read from the transports'
  // own state and the outboxes' counters, never by scanning Redis.
  const live = { streams: liveStreams(deps.session), log: deps.log };
  r.get('/admin/connections/live', login, async (req, res) => {
    const p = pagePrincipal(res);
    access.requireConsole(p);
    serveLive(live, req, res, p, 'connections', async () => (await visible(p)).connections);
  });

  const search = (q: Record<string, string | undefined>, limit: number) => {
    const since = q.since ? Date.parse(q.since) : undefined;
    const until = q.until ? Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(q.until) ? `${q.until}T23:59:59.999Z` : q.until) : undefined;
    if (Number.isNaN(since) || Number.isNaN(until)) throw new ValidationError('since and until must be dates like 2026-12-01');
    return deps.audit.search({ limit, ...(q.actor ? { actor: q.actor } : {}), ...(q.action ? { action: q.action } : {}), ...(q.text ? { text: q.text } : {}), ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}) });
  };
  const form = (req: Parameters<typeof textParam>[0]) => ({ actor: textParam(req, 'actor'), action: textParam(req, 'action'), text: textParam(req, 'text'), since: textParam(req, 'since', 40), until: textParam(req, 'until', 40) });

  r.get('/admin/audit', login, csrfToken, async (req, res) => {
    const p = pagePrincipal(res);
    deps.permissions.require(p, 'admin', '**');
    const q = form(req);
    let entries: StoredAuditEntry[] = [];
    let error: string | undefined;
    try {
      entries = await search(q, 200);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      error = err.message;
    }
    const csv = `/admin/audit.csv?${new URLSearchParams(Object.entries(q).filter((e): e is [string, string] => e[1] !== undefined)).toString()}`;
    render(res, 'admin/audit', { title: 'Audit trail', section: 'audit', entries, form: q, csv, error }, error ? 400 : 200);
  });

  r.get('/admin/audit.csv', login, async (req, res) => {
    const p = pagePrincipal(res);
    deps.permissions.require(p, 'admin', '**');
    const entries = await search(form(req), 10_000);
    await deps.audit.record({ action: 'audit.exported', actor: principalId(p), ...(req.ip ? { ip: req.ip } : {}), target: 'audit', detail: `${entries.length} entries exported as CSV` });
    res.setHeader('Content-Disposition', `attachment; filename="switchboard-audit-${new Date().toISOString().slice(0, 10)}.csv"`);
    res.type('text/csv; charset=utf-8').send(auditCsv(entries));
  });
  return r;
}
