import type { Permissions } from '../auth/permissions.ts';
import type { Principal } from '../core/message.ts';
import type { TaskEvent } from '../people/task-events.ts';

/**
 * Whether one open inbox stream's user may act on tasks at a place (a person's or a group's
 * inbox), remembered per place.
 *
 * Why a memo per stream rather than an index of streams by what they may see: a task event was
 * checked against every open stream's rules (1,000 streams → 1,000 rule checks a task), yet a
 * stream's answer for a place only changes when the rules change or its user's groups change. A
 * memo keeps the one decision function (`mayAct`, the same one the task pages use) and needs no
 * second copy of the permission model; an index would have to invert address patterns (wildcards,
 * DN groups, deployment grants) and would be a second place deciding who sees what.
 *
 * Invalidation, so a revoked right stops and a granted right starts exactly when it did before:
 * - every rule change (`Permissions.onChange`, called synchronously inside `replace`, before any
 *   later task event can be checked) forgets every answer;
 * - `follow(principal)` with different groups (the session's groups, refreshed from the
 *   directory) forgets every answer.
 * Grant sources (`addGrantSource`) change without `onChange`, but the only one grants peers `send`;
 * a stream's principal is a user asking `consume`, so they never decide here.
 */
export class StreamAccess {
  private principal: Principal;
  private readonly memo = new Map<string, boolean>();
  private readonly offRules: () => void;

  /**
   * @param maxPlaces - answers kept before the memo starts over (tasks to many different people
   *   would otherwise grow it without bound).
   */
  constructor(private readonly permissions: Permissions, principal: Principal, private readonly decide: (p: Principal, place: { assignee?: string; group?: string }) => boolean, private readonly maxPlaces = 1024) {
    this.principal = principal;
    this.offRules = permissions.onChange(() => this.memo.clear());
  }

  get user(): Principal {
    return this.principal;
  }

  /** Takes the user's current groups; a change forgets every answer. */
  follow(principal: Principal): void {
    const same = principal.name === this.principal.name && sameGroups(principal.groups, this.principal.groups);
    this.principal = principal;
    if (!same) this.memo.clear();
  }

  /** May the user act on tasks with this assignee or in this group (the stream's test)? */
  mayAct(place: { assignee: string } | { group: string }): boolean {
    const key = 'assignee' in place ? `a\0${place.assignee}` : `g\0${place.group}`;
    const known = this.memo.get(key);
    if (known !== undefined) return known;
    const answer = this.decide(this.principal, place);
    if (this.memo.size >= this.maxPlaces) this.memo.clear();
    this.memo.set(key, answer);
    return answer;
  }

  /** Does the event concern this user: its task is, or was until this change, where they may act? */
  concerns(e: TaskEvent): boolean {
    const p = this.principal;
    return [e, e.previous ?? {}].some((w) => (w.assignee !== undefined && (w.assignee === p.name || this.mayAct({ assignee: w.assignee }))) || (w.group !== undefined && this.mayAct({ group: w.group })));
  }

  /** How many answers are remembered (for tests). */
  get size(): number {
    return this.memo.size;
  }

  close(): void {
    this.offRules();
    this.memo.clear();
  }
}

function sameGroups(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  const x = a ?? [];
  const y = b ?? [];
  return x.length === y.length && x.every((g, i) => g === y[i]);
}
