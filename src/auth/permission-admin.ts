import { Conflict, NotFound, PermissionDenied, ValidationError } from '../core/errors.ts';
import type { EventJournal, LifecycleEvent } from '../core/lifecycle.ts';
import { principalId, type Principal } from '../core/message.ts';
import { parsePattern, patternWithin } from '../core/pattern.ts';
import type { Directory } from './directory.ts';
import type { PermissionStore, RecordedEvents, RuleChange } from './permission-store.ts';
import { VERBS, type PermissionRule, type Permissions, type Verb } from './permissions.ts';

export interface RuleInput {
  group?: unknown;
  user?: unknown;
  peer?: unknown;
  address?: unknown;
  verbs?: unknown;
  /** Add even when the directory does not know the group or user (yet). */
  force?: unknown;
}

export interface Grant {
  group?: string;
  user?: string;
  peer?: string;
  verbs: Verb[];
  rule: string;
  source: PermissionRule['source'];
  members?: string[];
}

/**
 * What admins may do to the rules: add, remove, revert, and ask who can. `admin` on a pattern
 * lets a principal manage rules whose address lies inside it and nothing wider; nobody grants
 * where they could not administer themselves. A refused change changes nothing.
 */
export class PermissionAdmin {
  constructor(
    private readonly permissions: Permissions,
    private readonly store: PermissionStore,
    private readonly directory: Directory,
    private readonly knownPeers: () => string[],
    /** Where each change records its lifecycle event, in the same script (none: events off). */
    private readonly journal?: EventJournal,
  ) {}

  /**
   * The `permission.changed` event of a change, recorded by the store's script with it. A rule id
   * is added and removed at most once each; a revert is one event per request (`at`).
   */
  private changed(change: 'added' | 'removed' | 'reverted', by: Principal, key: string, data: Record<string, unknown>): RecordedEvents {
    const event: LifecycleEvent = { type: 'switchboard.permission.changed', subject: 'permissions', key: `${change}\0${key}`, data: { change, by: principalId(by), ...data } };
    return { ...(this.journal ? { journal: this.journal } : {}), events: () => [event] };
  }

  private scopeCheck(p: Principal, address: string): void {
    const pattern = parsePattern(address);
    const scopes = this.permissions.adminScopes(p);
    if (!scopes.some((s) => patternWithin(pattern, s))) {
      throw new PermissionDenied(principalId(p), 'admin', `${address}${scopes.length ? ` (you may manage rules inside ${scopes.map((s) => s.raw).join(', ')})` : ''}`);
    }
  }

  /** Whether the principal may manage rules at all (has admin somewhere). */
  isAdmin(p: Principal): boolean {
    return this.permissions.adminScopes(p).length > 0;
  }

  async add(p: Principal, input: RuleInput, from?: string): Promise<PermissionRule> {
    if (input === null || typeof input !== 'object') throw new ValidationError('expected {group|user|peer, address, verbs}');
    const selectors = (['group', 'user', 'peer'] as const).filter((k) => input[k] !== undefined && input[k] !== null && input[k] !== '');
    if (selectors.length !== 1) throw new ValidationError('a rule names exactly one of group, user or peer');
    const kind = selectors[0]!;
    const who = input[kind];
    if (typeof who !== 'string' || who.trim() === '' || who.length > 512) throw new ValidationError(`'${kind}' must be a non-empty name`);
    if (typeof input.address !== 'string') throw new ValidationError("'address' must be an address pattern like queue:payments.** ");
    parsePattern(input.address);
    if (!Array.isArray(input.verbs) || input.verbs.length === 0) throw new ValidationError(`'verbs' must be a non-empty list of ${VERBS.join(', ')}`);
    for (const v of input.verbs) if (!(VERBS as readonly unknown[]).includes(v)) throw new ValidationError(`unknown verb ${JSON.stringify(v)} (expected ${VERBS.join(', ')})`);
    const verbs = [...new Set(input.verbs as Verb[])];
    this.scopeCheck(p, input.address);
    const name = who.trim();
    const same = this.permissions.rules.find((r) => r[kind] === name && r.address === input.address && r.verbs.length === verbs.length && verbs.every((v) => r.verbs.includes(v)));
    if (same) throw new Conflict(`the same rule exists already (${same.id}, from ${same.source})`);
    if (input.force !== true) {
      // A group given as a DN is looked up by its cn (the first RDN).
      const cn = name.includes('=') ? (/^[^=]+=((?:\\.|[^,\\])*)/.exec(name)?.[1] ?? name) : name;
      if (kind === 'group' && !(await this.directory.groups(cn, 50)).includes(cn)) throw new ValidationError(`the directory has no group '${name}' (add with force: true if it was just created)`);
      if (kind === 'user' && !(await this.directory.lookup(name))) throw new ValidationError(`the directory has no user '${name}' (add with force: true if it was just created)`);
      if (kind === 'peer' && !this.knownPeers().includes(name)) throw new ValidationError(`no peer '${name}' in the network map (add with force: true to allow it ahead of time)`);
    }
    return this.store.add({ [kind]: name, address: input.address, verbs }, principalId(p), from, (rule) => this.changed('added', p, rule.id, { rule }));
  }

  async remove(p: Principal, id: string, from?: string): Promise<PermissionRule> {
    const rule = this.permissions.rules.find((r) => r.id === id);
    if (!rule) throw new NotFound(`no rule '${id}'`);
    if (rule.source === 'config') throw new Conflict(`rule '${id}' lives in the configuration file; change it there`);
    this.scopeCheck(p, rule.address);
    const removed = await this.store.remove(id, principalId(p), from, (r) => this.changed('removed', p, r.id, { rule: r }));
    if (!removed) throw new NotFound(`no rule '${id}' (removed meanwhile)`);
    return removed;
  }

  async revert(p: Principal, version: unknown, from?: string): Promise<{ added: PermissionRule[]; removed: PermissionRule[] }> {
    if (!this.isAdmin(p)) throw new PermissionDenied(principalId(p), 'admin', 'any address');
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 0) throw new ValidationError("'version' must be a version number from the history");
    const current = await this.store.version();
    if (version > current) throw new ValidationError(`there is no version ${version} yet (current: ${current})`);
    const target = await this.store.rulesAt(version);
    const now = await this.store.consoleRules();
    const touched = [...now.filter((r) => !target.has(r.id)), ...[...target.values()].filter((r) => !now.some((n) => n.id === r.id))];
    for (const r of touched) this.scopeCheck(p, r.address);
    const at = new Date().toISOString();
    return this.store.revert(version, principalId(p), from, (plan) => this.changed('reverted', p, `${version}\0${at}`, { version, added: plan.added, removed: plan.removed }));
  }

  async list(): Promise<{ version: number; rules: PermissionRule[] }> {
    return { version: this.permissions.version, rules: this.permissions.rules };
  }

  async history(limit: number): Promise<RuleChange[]> {
    return this.store.history(limit);
  }

  /** The rules granting `verb` on `address`, with each group's members from the directory. */
  async whoCan(verb: Verb, address: string): Promise<Grant[]> {
    const out: Grant[] = [];
    for (const r of this.permissions.grants(verb, address)) {
      const g: Grant = { ...(r.group !== undefined ? { group: r.group } : {}), ...(r.user !== undefined ? { user: r.user } : {}), ...(r.peer !== undefined ? { peer: r.peer } : {}), verbs: r.verbs, rule: r.id, source: r.source };
      if (r.group !== undefined) g.members = (await this.directory.members(r.group).catch(() => [])).map((m) => m.name).sort();
      out.push(g);
    }
    return out;
  }
}
