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
export class Permissions {
  private compiled: { rule: PermissionRule; pattern: AddressPattern }[] = [];

  constructor(rules: PermissionRule[]) {
    this.replace(rules);
  }

  replace(rules: PermissionRule[]): void {
    this.compiled = rules.map((rule) => ({ rule, pattern: parsePattern(rule.address) }));
  }

  get rules(): PermissionRule[] {
    return this.compiled.map((c) => c.rule);
  }

  private applies(rule: PermissionRule, p: Principal): boolean {
    if (rule.user !== undefined) return p.kind === 'user' && rule.user === p.name;
    if (rule.peer !== undefined) return p.kind === 'peer' && rule.peer === p.name;
    if (rule.group !== undefined) return p.kind === 'user' && (p.groups ?? []).some((g) => sameGroup(g, rule.group!));
    return false;
  }

  /** The rules that apply to a principal (by user, peer, or one of its groups). */
  rulesFor(p: Principal): PermissionRule[] {
    return this.compiled.filter((c) => this.applies(c.rule, p)).map((c) => c.rule);
  }

  check(p: Principal, verb: Verb, address: string): Decision {
    const base = { verb, address, principal: principalId(p) };
    if (p.kind === 'flow' || p.kind === 'system') return { ...base, allowed: true, reason: `${base.principal} is deployed code and acts unrestricted` };
    for (const { rule, pattern } of this.compiled) {
      if (rule.verbs.includes(verb) && this.applies(rule, p) && matchesPattern(pattern, address)) {
        const who = rule.group !== undefined ? `group ${rule.group}` : rule.user !== undefined ? `user ${rule.user}` : `peer ${rule.peer}`;
        return { ...base, allowed: true, rule, reason: `rule ${rule.id} (${rule.source}) allows ${who} to ${verb} on ${rule.address}` };
      }
    }
    return { ...base, allowed: false, reason: `no rule allows ${base.principal} to ${verb} on ${address} (default deny)` };
  }

  require(p: Principal, verb: Verb, address: string): Decision {
    const d = this.check(p, verb, address);
    if (!d.allowed) throw new PermissionDenied(d.principal, verb, address);
    return d;
  }
}
