import type { Request, Response } from 'express';
import type { Permissions } from '../../auth/permissions.ts';
import { PermissionDenied, SwitchboardError } from '../../core/errors.ts';
import { principalId, type Principal } from '../../core/message.ts';

/**
 * Who sees what in the operations console (DESIGN §6). Every decision is the permission model's
 * own (`Permissions.check`/`require`, the same checks as the API): looking needs admin or browse
 * on the thing looked at; acting needs the verb the API asks for the same action.
 */
export class ConsoleAccess {
  constructor(private readonly permissions: Permissions) {}

  /** Admin or browse on `address` (a concrete address or a pattern a connection stands for). */
  mayLook(p: Principal, address: string): boolean {
    return this.permissions.check(p, 'admin', address).allowed || this.permissions.check(p, 'browse', address).allowed;
  }

  /** Throws the 403 the error handler audits, naming the address, unless `mayLook`. */
  requireLook(p: Principal, address: string): void {
    if (!this.mayLook(p, address)) throw new PermissionDenied(principalId(p), 'browse', address);
  }

  /**
   * The console at all: some rule gives the user admin or browse somewhere. A user without one
   * gets a 403 page (audited by the error handler), before anything is read.
   */
  requireConsole(p: Principal): void {
    if (this.permissions.rulesFor(p).some((r) => r.verbs.includes('admin') || r.verbs.includes('browse'))) return;
    throw new SwitchboardError('forbidden', 'the operations console needs an admin or browse permission, and no rule gives you one', 403);
  }
}

/** The signed-in principal of a page request (set by requireLogin). */
export function pagePrincipal(res: Response): Principal {
  return res.locals.principal as Principal;
}

/** A text query parameter, trimmed and bounded; undefined when empty. */
export function textParam(req: Request, name: string, max = 200): string | undefined {
  const v = req.query[name];
  if (typeof v !== 'string') return undefined;
  const t = v.trim().slice(0, max);
  return t === '' ? undefined : t;
}

/** Milliseconds as a short age: 45 s, 12 min, 3 h, 2 d. */
export function age(ms: number | undefined): string {
  if (ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86_400) return `${Math.round(s / 360) / 10} h`;
  return `${Math.round(s / 8640) / 10} d`;
}
