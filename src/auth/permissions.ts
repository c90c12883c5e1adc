import { PermissionDenied } from '../core/errors.ts';
import { principalId, type Principal } from '../core/message.ts';
import { matchesPattern, parsePattern, type AddressPattern } from '../core/pattern.ts';

export const VERBS = ['send', 'consume', 'browse', 'start', 'admin'] as const;
export type Verb = (typeof VERBS)[number];

/** One selector, one address pattern, its verbs (DESIGN §5). */
export interface PermissionRule {
  id: string;
  group?: string;
  user?: string;
  peer?: string;
  address: string;
  verbs: Verb[];
  source: 'config' | 'console';
  createdBy?: string;
  createdAt?: string;
}

export interface Decision {
  allowed: boolean;
  verb: Verb;
  address: string;
  principal: string;
  /** The rule that allowed it; absent when denied (default deny) or for an unrestricted principal. */
  rule?: PermissionRule;
  reason: string;
}

/**
 * A right that follows from how the gateway is deployed rather than from a rule: a route may send
 * to its destination, an inbound webhook to its configured address, a broker's reply queue to the
 * flow instances waiting on it. Derived from the config at start, never editable at run time.
 */
export interface DeploymentGrant {
  /** Exact principal id, e.g. `route:queue:in -> queue:out`, `webhook:crm`, `broker:legacy`. */
  principal: string;
  address: string;
  verbs: Verb[];
  /** Shown in explanations, e.g. "the route queue:in -> queue:out in the config". */
  reason: string;
}

/** Live deployment grants of one principal (see Permissions.addGrantSource). */
export type GrantSource = (p: Principal) => readonly { pattern: AddressPattern; verbs: readonly Verb[]; reason: string }[];

/** The shape of `permissions:` in config. */
export interface PermissionConfigEntry {
  group?: string;
  user?: string;
  peer?: string;
  allow: { address: string; verbs: Verb[] }[];
}

export function rulesFromConfig(entries: PermissionConfigEntry[]): PermissionRule[] {
  return entries.flatMap((e, i) =>
    e.allow.map((a, j) => ({
      id: `config-${i + 1}-${j + 1}`,
      ...(e.group !== undefined ? { group: e.group } : {}),
      ...(e.user !== undefined ? { user: e.user } : {}),
      ...(e.peer !== undefined ? { peer: e.peer } : {}),
      address: a.address,
      verbs: [...a.verbs],
      source: 'config' as const,
    })),
  );
}

/** A group in a rule may be a cn or a full DN; DNs compare case-insensitively, ignoring spaces after commas. */
const normalizeGroup = (g: string) => g.toLowerCase().replace(/,\s+/g, ',');
function sameGroup(a: string, b: string): boolean {
  return a === b || normalizeGroup(a) === normalizeGroup(b);
}

/**
 * Default deny: a principal may do what at least one rule for it, or for one of its groups,
 * allows. Flows and the gateway itself are deployed code and act unrestricted.
 */
type Compiled = { rule: PermissionRule; pattern: AddressPattern; order: number };

/** Scheme and first path segment of an address: the keys the rule index is built on. */
function indexKeys(address: string): { scheme: string; first: string } {
  const colon = address.indexOf(':');
  const rest = address.slice(colon + 1);
  const m = /^[^./:]*/.exec(rest);
  return { scheme: address.slice(0, colon), first: m ? m[0] : '' };
}

export class Permissions {
  private compiled: Compiled[] = [];
  // Rules indexed by scheme and first segment, so a check looks at the few rules that could
  // match instead of all of them (thousands of console rules stay cheap).
  private anyScheme: Compiled[] = [];
  private schemeWide = new Map<string, Compiled[]>();
  private exact = new Map<string, Compiled[]>();
  private listeners = new Set<() => void>();
  // Candidate lists merged once per (scheme, first segment) and reused until the rules change.
  private merged = new Map<string, Compiled[]>();
  /** Version of the console rules these permissions reflect (0: config only). */
  version = 0;

  private deployment = new Map<string, { grant: DeploymentGrant; pattern: AddressPattern }[]>();
  // A route or a bridge asks the same question for every message it moves, and deployment grants
  // never change after the start: their answers are kept (bounded), frozen since they are shared.
  private deploymentAnswers = new Map<string, Readonly<Decision> | null>();
  private grantSources: GrantSource[] = [];

  constructor(rules: PermissionRule[], grants: DeploymentGrant[] = []) {
    this.replace(rules);
    for (const grant of grants) {
      const list = this.deployment.get(grant.principal) ?? [];
      list.push({ grant, pattern: parsePattern(grant.address) });
      this.deployment.set(grant.principal, list);
    }
  }

  replace(rules: PermissionRule[], version = this.version): void {
    const compiled = rules.map((rule, order) => ({ rule, pattern: parsePattern(rule.address), order }));
    const anyScheme: Compiled[] = [];
    const schemeWide = new Map<string, Compiled[]>();
    const exact = new Map<string, Compiled[]>();
    for (const c of compiled) {
      const first = c.pattern.segments[0];
      if (c.pattern.scheme === '**') anyScheme.push(c);
      else if (first === undefined || first === '*' || first === '**') (schemeWide.get(c.pattern.scheme) ?? schemeWide.set(c.pattern.scheme, []).get(c.pattern.scheme)!).push(c);
      else {
        const key = `${c.pattern.scheme}\0${first}`;
        (exact.get(key) ?? exact.set(key, []).get(key)!).push(c);
      }
    }
    this.compiled = compiled;
    this.merged = new Map();
    this.anyScheme = anyScheme;
    this.schemeWide = schemeWide;
    this.exact = exact;
    const changed = version !== this.version;
    this.version = version;
    if (changed || rules.length > 0) for (const l of this.listeners) l();
  }

  /**
   * Adds grants that change while the gateway runs without being rules, e.g. a peer's `allow`
   * patterns from a network map that is read again when its file changes.
   */
  addGrantSource(source: GrantSource): void {
    this.grantSources.push(source);
  }

  /** Called after every replace (a rule change): doors re-check what they hold open. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get rules(): PermissionRule[] {
    return this.compiled.map((c) => c.rule);
  }

  private applies(rule: PermissionRule, p: Principal): boolean {
    if (rule.user !== undefined) return p.kind === 'user' && rule.user === p.name;
    // A peer's rules name its local alias; its name is its network identity.
    if (rule.peer !== undefined) return p.kind === 'peer' && rule.peer === (p.alias ?? p.name);
    if (rule.group !== undefined) return p.kind === 'user' && (p.groups ?? []).some((g) => sameGroup(g, rule.group!));
    return false;
  }

  /** The rules that apply to a principal (by user, peer, or one of its groups). */
  rulesFor(p: Principal): PermissionRule[] {
    return this.compiled.filter((c) => this.applies(c.rule, p)).map((c) => c.rule);
  }

  /** Rules whose pattern could match the address, in configuration order. */
  private candidates(address: string): Compiled[] {
    const { scheme, first } = indexKeys(address);
    const exactKey = `${scheme}\0${first}`;
    // Addresses whose first segment no rule names share their scheme's list, so the cache stays
    // as small as the rule set however many different addresses are checked.
    const key = this.exact.has(exactKey) ? exactKey : scheme;
    let list = this.merged.get(key);
    if (!list) {
      const lists = [this.anyScheme, this.schemeWide.get(scheme), key === exactKey ? this.exact.get(exactKey) : undefined].filter((l): l is Compiled[] => l !== undefined && l.length > 0);
      list = lists.length === 1 ? lists[0]! : lists.flat().sort((a, b) => a.order - b.order);
      this.merged.set(key, list);
    }
    return list;
  }

  /** Every rule granting `verb` on `address` (to anyone). */
  grants(verb: Verb, address: string): PermissionRule[] {
    return this.candidates(address).filter((c) => c.rule.verbs.includes(verb) && matchesPattern(c.pattern, address)).map((c) => c.rule);
  }

  check(p: Principal, verb: Verb, address: string): Decision {
    const principal = principalId(p);
    // Flows are deployed code; `system` is the gateway's own notices and decisions, which no door
    // can present (the router's require-principal interceptor refuses it from client doors).
    // Built without spreads: a flow's every send and start asks.
    if (p.kind === 'flow' || p.kind === 'system') return { verb, address, principal, allowed: true, reason: `${principal} is deployed code and acts unrestricted` };
    const base = { verb, address, principal };
    const granted = this.deploymentGrant(base);
    if (granted) return granted;
    for (const source of this.grantSources) {
      for (const g of source(p)) {
        if (g.verbs.includes(verb) && matchesPattern(g.pattern, address)) return { ...base, allowed: true, reason: `${g.reason} allows ${base.principal} to ${verb} on ${g.pattern.raw}` };
      }
    }
    for (const { rule, pattern } of this.candidates(address)) {
      if (rule.verbs.includes(verb) && this.applies(rule, p) && matchesPattern(pattern, address)) {
        const who = rule.group !== undefined ? `group ${rule.group}` : rule.user !== undefined ? `user ${rule.user}` : `peer ${rule.peer}`;
        return { ...base, allowed: true, rule, reason: `rule ${rule.id} (${rule.source}) allows ${who} to ${verb} on ${rule.address}` };
      }
    }
    return { ...base, allowed: false, reason: `no rule allows ${base.principal} to ${verb} on ${address} (default deny)` };
  }

  /** The decision a deployment grant makes, or null when none allows it. */
  private deploymentGrant(base: { verb: Verb; address: string; principal: string }): Decision | null {
    const { verb, address } = base;
    const grants = this.deployment.get(base.principal);
    if (!grants) return null;
    const key = `${base.principal}\0${verb}\0${address}`;
    const known = this.deploymentAnswers.get(key);
    if (known !== undefined) return known;
    let answer: Decision | null = null;
    for (const { grant, pattern } of grants) {
      if (grant.verbs.includes(verb) && matchesPattern(pattern, address)) {
        answer = Object.freeze({ ...base, allowed: true, reason: `${grant.reason} allows ${base.principal} to ${verb} on ${grant.address}` });
        break;
      }
    }
    if (this.deploymentAnswers.size >= 10_000) this.deploymentAnswers.clear();
    this.deploymentAnswers.set(key, answer);
    return answer;
  }

  /** Admin patterns of a principal: where it may manage rules (delegated administration). */
  adminScopes(p: Principal): AddressPattern[] {
    if (p.kind === 'system') return [parsePattern('**')];
    return this.compiled.filter((c) => c.rule.verbs.includes('admin') && this.applies(c.rule, p)).map((c) => c.pattern);
  }

  require(p: Principal, verb: Verb, address: string): Decision {
    const d = this.check(p, verb, address);
    if (!d.allowed) throw new PermissionDenied(d.principal, verb, address);
    return d;
  }
}
