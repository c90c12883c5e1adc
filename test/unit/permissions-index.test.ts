import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Permissions, VERBS, type PermissionRule, type Verb } from '../../src/auth/permissions.ts';
import type { Principal } from '../../src/core/message.ts';
import { parseAddress } from '../../src/core/address.ts';
import { matchesPattern, parsePattern, type AddressPattern } from '../../src/core/pattern.ts';

// The indexed Permissions (rules bucketed by scheme and first segment) must decide exactly as a
// naive scan over every rule in configuration order would: same allowed/denied, same deciding
// rule, same grants. Property-style: many random rule sets and addresses from a small vocabulary
// (so that patterns and addresses collide often), from fixed seeds so a failure reproduces.

/** mulberry32: a small, fast, seedable PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;

// Vocabulary. Segment names are shared between schemes so an exact-first-segment rule of one
// scheme never leaks into another scheme's bucket unnoticed. Large rule sets draw first segments
// from a wider set and have fewer catch-all rules (as real ones do), so that both decisions occur.
const SEPARATORS = ['.', '/'] as const;
const GROUPS = ['ops', 'clerks', 'approvers', 'cn=ops,ou=groups,dc=example,dc=com', 'CN=Clerks, OU=Groups,DC=Example,DC=Com'] as const;
const USERS = ['alice', 'bob', 'carol'] as const;
const PEERS = ['bank-b', 'bank-c'] as const;

interface Vocab {
  /** Candidates for the first path segment. */
  first: string[];
  /** Candidates for later path segments. */
  rest: string[];
  /** Chance of a '**' rule, of a scheme-wide 'scheme:**' rule, of a '*' segment. */
  anyP: number;
  schemeP: number;
  starP: number;
}

function vocab(ruleCount: number): Vocab {
  const rest = ['a', 'b', 'pay', 'eu', 'x-1'];
  if (ruleCount <= 300) return { first: rest, rest, anyP: 0.03, schemeP: 0.07, starP: 0.25 };
  const first = [...rest, ...Array.from({ length: Math.ceil(ruleCount / 4) }, (_, i) => `t${i}`)];
  return { first, rest, anyP: 0.3 / ruleCount, schemeP: 1 / ruleCount, starP: 0.1 / Math.log10(ruleCount) };
}

/** A random concrete path: 1–4 segments joined by . or /. */
function randomPath(r: Rand, v: Vocab): string {
  const n = 1 + Math.floor(r() * 4);
  let s = pick(r, v.first);
  for (let i = 1; i < n; i++) s += pick(r, SEPARATORS) + pick(r, v.rest);
  return s;
}

/** A random valid address of several schemes (dlq and mq/peer have inner ':' and '/' structure). */
function randomAddress(r: Rand, v: Vocab): string {
  const k = r();
  if (k < 0.5) return `queue:${randomPath(r, v)}`;
  if (k < 0.6) return `group:${pick(r, v.first)}`;
  if (k < 0.7) return `person:${pick(r, USERS)}`;
  if (k < 0.8) return `mq:${pick(r, ['legacy', 'a'])}/${randomPath(r, v)}`;
  if (k < 0.9) return `peer:${pick(r, PEERS)}/${randomPath(r, v)}`;
  return `dlq:queue:${randomPath(r, v)}`;
}

/** A pattern derived from a random address: some segments turned into * and maybe a ** tail. */
function randomPattern(r: Rand, v: Vocab): string {
  const k = r();
  if (k < v.anyP) return '**';
  if (k < v.anyP + v.schemeP) return `${pick(r, ['queue', 'group', 'mq', 'peer', 'dlq', 'person'])}:**`;
  const address = randomAddress(r, v);
  const colon = address.indexOf(':');
  const scheme = address.slice(0, colon);
  const parts = address.slice(colon + 1).split(/([./:])/);
  const out: string[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    const sep = i === 0 ? '' : parts[i - 1]!;
    const seg = parts[i]!;
    // Cut short with ** (only as the last segment).
    if (i > 0 && r() < 0.15) {
      out.push(sep, '**');
      return `${scheme}:${out.join('')}`;
    }
    out.push(sep, r() < v.starP ? '*' : seg);
  }
  if (r() < 0.2) out.push(pick(r, SEPARATORS), '**');
  else if (r() < 0.05) out.push(pick(r, SEPARATORS), '*');
  return `${scheme}:${out.join('')}`;
}

function randomVerbs(r: Rand): Verb[] {
  const vs = VERBS.filter(() => r() < 0.4);
  return vs.length ? vs : [pick(r, VERBS)];
}

function randomRule(r: Rand, v: Vocab, i: number): PermissionRule {
  const k = r();
  const selector = k < 0.7 ? { group: pick(r, GROUPS) } : k < 0.9 ? { user: pick(r, USERS) } : { peer: pick(r, PEERS) };
  return { id: `r${i}`, ...selector, address: randomPattern(r, v), verbs: randomVerbs(r), source: r() < 0.5 ? 'config' : 'console' };
}

function randomPrincipal(r: Rand): Principal {
  if (r() < 0.15) return { kind: 'peer', name: pick(r, PEERS) };
  const groups = GROUPS.filter(() => r() < 0.3).map((g) => (r() < 0.3 ? g.toUpperCase() : g));
  return { kind: 'user', name: pick(r, USERS), groups };
}

/** A concrete address the pattern matches (or a near miss): wildcards replaced by segments. */
function instantiate(r: Rand, v: Vocab, pattern: string): string {
  if (pattern === '**') return randomAddress(r, v);
  return pattern.replace(/\*\*$/, () => (r() < 0.3 ? 'a' : 'a.b')).replace(/\*/g, () => pick(r, v.rest)).replace(/[./]$/, '');
}

// ── the naive reference: every rule, in order ───────────────────────────────────────────────

const norm = (g: string) => g.toLowerCase().replace(/,\s+/g, ',');
function naiveApplies(rule: PermissionRule, p: Principal): boolean {
  if (rule.user !== undefined) return p.kind === 'user' && p.name === rule.user;
  if (rule.peer !== undefined) return p.kind === 'peer' && p.name === rule.peer;
  if (rule.group !== undefined) return p.kind === 'user' && (p.groups ?? []).some((g) => g === rule.group || norm(g) === norm(rule.group!));
  return false;
}
const parsed = new WeakMap<PermissionRule, AddressPattern>();
const patternOf = (rule: PermissionRule): AddressPattern => parsed.get(rule) ?? parsed.set(rule, parsePattern(rule.address)).get(rule)!;
function naiveDecision(rules: PermissionRule[], p: Principal, verb: Verb, address: string): PermissionRule | undefined {
  return rules.find((rule) => rule.verbs.includes(verb) && naiveApplies(rule, p) && matchesPattern(patternOf(rule), address));
}
function naiveGrants(rules: PermissionRule[], verb: Verb, address: string): string[] {
  return rules.filter((rule) => rule.verbs.includes(verb) && matchesPattern(patternOf(rule), address)).map((x) => x.id);
}

function compare(perms: Permissions, rules: PermissionRule[], p: Principal, verb: Verb, address: string): { allowed: boolean } {
  const expected = naiveDecision(rules, p, verb, address);
  const got = perms.check(p, verb, address);
  const ctx = () => `${JSON.stringify(p)} ${verb} ${address}\nexpected: ${expected?.id ?? 'deny'} (${expected?.address ?? ''})\ngot: ${got.rule?.id ?? 'deny'} (${got.rule?.address ?? ''})`;
  assert.equal(got.allowed, expected !== undefined, ctx());
  assert.equal(got.rule?.id, expected?.id, `the deciding rule differs: ${ctx()}`);
  assert.deepEqual(perms.grants(verb, address).map((x) => x.id), naiveGrants(rules, verb, address), `grants differ for ${verb} ${address}`);
  return { allowed: got.allowed };
}

describe('Permissions index agrees with a naive scan', () => {
  test('the generators produce only valid patterns and addresses', () => {
    const r = prng(7);
    for (const v of [vocab(10), vocab(10_000)]) {
      for (let i = 0; i < 2000; i++) {
        const pattern = randomPattern(r, v);
        const address = randomAddress(r, v);
        assert.doesNotThrow(() => parsePattern(pattern), pattern);
        assert.doesNotThrow(() => parseAddress(address), address);
      }
    }
  });

  for (const [seed, ruleCount, queries] of [[1, 10, 3000], [2, 50, 3000], [3, 300, 3000], [4, 2000, 3000], [5, 10_000, 1000]] as const) {
    test(`seed ${seed}: ${ruleCount} random rules, ${queries} random checks: same decisions, same deciding rule, same grants`, (t) => {
      const r = prng(seed);
      const v = vocab(ruleCount);
      const rules = Array.from({ length: ruleCount }, (_, i) => randomRule(r, v, i));
      const perms = new Permissions(rules);
      let allowed = 0;
      for (let q = 0; q < queries; q++) {
        // Half the addresses are drawn from the rules' own patterns (wildcards filled in), so
        // exact-first-segment buckets are hit, not only missed.
        const address = r() < 0.5 ? randomAddress(r, v) : instantiate(r, v, pick(r, rules).address);
        if (compare(perms, rules, randomPrincipal(r), pick(r, VERBS), address).allowed) allowed++;
      }
      t.diagnostic(`${allowed} of ${queries} checks allowed`);
      // A test where everything is denied (or allowed) would prove little: both outcomes occur.
      assert.ok(allowed > queries * 0.02 && allowed < queries * 0.98, `allowed ${allowed} of ${queries}: the generator should produce both outcomes`);
    });
  }

  test('many small rule sets (a fresh seed each), after replace() too', () => {
    const r = prng(42);
    const v = vocab(30);
    const perms = new Permissions([]);
    for (let round = 0; round < 300; round++) {
      const rules = Array.from({ length: 1 + Math.floor(r() * 30) }, (_, i) => randomRule(r, v, i));
      perms.replace(rules, round + 1);
      for (let q = 0; q < 40; q++) compare(perms, rules, randomPrincipal(r), pick(r, VERBS), r() < 0.5 ? randomAddress(r, v) : instantiate(r, v, pick(r, rules).address));
    }
  });

  test("'**', scheme-wide and exact-first-segment rules: the first rule in order decides, whichever bucket it is in", () => {
    const rules: PermissionRule[] = [
      { id: 'exact', group: 'ops', address: 'queue:pay.eu', verbs: ['send'], source: 'config' },
      { id: 'scheme', group: 'ops', address: 'queue:**', verbs: ['send', 'browse'], source: 'config' },
      { id: 'star-first', group: 'ops', address: 'queue:*.eu', verbs: ['send', 'consume'], source: 'console' },
      { id: 'all', group: 'admins', address: '**', verbs: ['admin', 'send'], source: 'config' },
      { id: 'exact-later', group: 'ops', address: 'queue:pay.**', verbs: ['consume', 'browse'], source: 'console' },
    ];
    const p = new Permissions(rules);
    const ops: Principal = { kind: 'user', name: 'olga', groups: ['ops'] };
    const admin: Principal = { kind: 'user', name: 'ada', groups: ['admins'] };
    assert.equal(p.check(ops, 'send', 'queue:pay.eu').rule?.id, 'exact');
    assert.equal(p.check(ops, 'browse', 'queue:pay.eu').rule?.id, 'scheme');
    assert.equal(p.check(ops, 'consume', 'queue:pay.eu').rule?.id, 'star-first');
    assert.equal(p.check(ops, 'consume', 'queue:pay.us').rule?.id, 'exact-later');
    assert.equal(p.check(ops, 'consume', 'queue:other.us').allowed, false);
    assert.equal(p.check(ops, 'send', 'group:pay').allowed, false, 'a queue: rule does not open another scheme with the same first segment');
    assert.equal(p.check(admin, 'send', 'mq:legacy/pay.eu').rule?.id, 'all');
    assert.equal(p.check(admin, 'admin', 'dlq:queue:pay').rule?.id, 'all');
    assert.deepEqual(p.grants('send', 'queue:pay.eu').map((r) => r.id), ['exact', 'scheme', 'star-first', 'all']);
    for (const v of VERBS) for (const a of ['queue:pay.eu', 'queue:pay', 'queue:pay/eu', 'queue:x.eu', 'group:pay', 'mq:pay/x']) for (const who of [ops, admin]) compare(p, rules, who, v, a);
  });

  test('the separator rule: queue:a.b and queue:a/b are different addresses, for exact and wildcard rules', () => {
    const rules: PermissionRule[] = [
      { id: 'dot', group: 'g', address: 'queue:a.b', verbs: ['send'], source: 'config' },
      { id: 'dot-tail', group: 'h', address: 'queue:a.**', verbs: ['send'], source: 'config' },
      { id: 'slash-star', group: 'i', address: 'queue:a/*', verbs: ['send'], source: 'config' },
      { id: 'mq-slash', group: 'j', address: 'mq:legacy/**', verbs: ['send'], source: 'config' },
      { id: 'dlq-colon', group: 'k', address: 'dlq:queue:**', verbs: ['send'], source: 'config' },
    ];
    const p = new Permissions(rules);
    const as = (g: string): Principal => ({ kind: 'user', name: 'u', groups: [g] });
    assert.equal(p.check(as('g'), 'send', 'queue:a.b').allowed, true);
    assert.equal(p.check(as('g'), 'send', 'queue:a/b').allowed, false);
    assert.equal(p.check(as('h'), 'send', 'queue:a.b.c').allowed, true);
    assert.equal(p.check(as('h'), 'send', 'queue:a').allowed, true);
    assert.equal(p.check(as('h'), 'send', 'queue:a/b').allowed, false);
    assert.equal(p.check(as('i'), 'send', 'queue:a/b').allowed, true);
    assert.equal(p.check(as('i'), 'send', 'queue:a.b').allowed, false);
    assert.equal(p.check(as('j'), 'send', 'mq:legacy/x.y').allowed, true);
    assert.equal(p.check(as('j'), 'send', 'mq:legacy.x').allowed, false);
    assert.equal(p.check(as('k'), 'send', 'dlq:queue:a.b').allowed, true);
    assert.equal(p.check(as('k'), 'send', 'dlq:queue.a').allowed, false);
    for (const g of ['g', 'h', 'i', 'j', 'k']) for (const a of ['queue:a.b', 'queue:a/b', 'queue:a', 'queue:a.b.c', 'queue:a/b/c', 'mq:legacy/x.y', 'mq:legacy.x', 'dlq:queue:a.b', 'dlq:queue.a']) compare(p, rules, as(g), 'send', a);
  });

  test('replace() rebuilds the index: a removed rule stops granting, a new bucket starts', () => {
    const ops: Principal = { kind: 'user', name: 'olga', groups: ['ops'] };
    const p = new Permissions([{ id: 'a', group: 'ops', address: 'queue:pay.**', verbs: ['send'], source: 'console' }]);
    assert.equal(p.check(ops, 'send', 'queue:pay.x').allowed, true);
    p.replace([{ id: 'b', group: 'ops', address: 'queue:orders.*', verbs: ['send'], source: 'console' }], 2);
    assert.equal(p.check(ops, 'send', 'queue:pay.x').allowed, false);
    assert.equal(p.check(ops, 'send', 'queue:orders.x').rule?.id, 'b');
    p.replace([], 3);
    assert.equal(p.check(ops, 'send', 'queue:orders.x').allowed, false);
    assert.deepEqual(p.grants('send', 'queue:orders.x'), []);
  });
});
