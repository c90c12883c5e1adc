import { AddressError } from './errors.ts';

/**
 * Addresses are `scheme:path` (DESIGN §1). This module is the one parser every door, route and
 * flow goes through, so an address means the same thing everywhere and a bad one is refused the
 * same way everywhere.
 */
export const SCHEMES = ['queue', 'person', 'group', 'mq', 'peer', 'webhook', 'email', 'flow', 'dlq'] as const;
export type Scheme = (typeof SCHEMES)[number];

export interface Address {
  readonly scheme: Scheme;
  /** Everything after the first `:`. */
  readonly path: string;
  /** The address as written, `scheme:path`. */
  readonly raw: string;
}

const MAX_LENGTH = 512;
const NAME = /^[A-Za-z0-9_-]+$/;
const DOTTED = /^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$/;
const USER = /^[A-Za-z0-9][A-Za-z0-9._@-]*$/;
const EMAIL = /^[^\s@<>(),;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;
const VISIBLE = /^[\x21-\x7e]+$/;

const RULES: Record<Scheme, { check: (path: string) => string | undefined; expected: string }> = {
  queue: { check: (p) => (DOTTED.test(p) ? undefined : 'bad queue name'), expected: 'queue:<name>, segments of letters, digits, _ or - separated by . or /, e.g. queue:orders.eu' },
  person: { check: (p) => (USER.test(p) ? undefined : 'bad user name'), expected: 'person:<user>, e.g. person:alice' },
  group: { check: (p) => (USER.test(p) ? undefined : 'bad group name'), expected: 'group:<group>, e.g. group:payment-approvers' },
  mq: { check: (p) => brokerPath(p, 'broker'), expected: 'mq:<broker>/<address>, e.g. mq:legacy/payments.in' },
  peer: { check: (p) => brokerPath(p, 'peer alias'), expected: 'peer:<alias>/<queue>, e.g. peer:bank-b/trades' },
  webhook: { check: (p) => (NAME.test(p) ? undefined : 'bad webhook name'), expected: 'webhook:<name>, e.g. webhook:crm' },
  email: { check: (p) => (EMAIL.test(p) ? undefined : 'bad e-mail address'), expected: 'email:<user@domain>, e.g. email:ops@example.com' },
  flow: { check: flowPath, expected: 'flow:<name> or flow:<name>/<instanceId>, e.g. flow:payment-approval' },
  dlq: { check: dlqPath, expected: 'dlq:<address>, e.g. dlq:queue:orders' },
};

function brokerPath(p: string, what: string): string | undefined {
  const slash = p.indexOf('/');
  if (slash < 0) return `missing '/' between the ${what} name and the address`;
  if (slash === 0) return `missing ${what} name before '/'`;
  if (!NAME.test(p.slice(0, slash))) return `bad ${what} name '${p.slice(0, slash)}'`;
  const rest = p.slice(slash + 1);
  if (rest === '') return 'missing address after the /';
  if (!VISIBLE.test(rest)) return 'the address after the / may not contain spaces or control characters';
  return undefined;
}

function flowPath(p: string): string | undefined {
  const [name, instance, ...extra] = p.split('/');
  if (!name || !NAME.test(name)) return 'bad flow name';
  if (extra.length > 0 || (instance !== undefined && !NAME.test(instance))) return 'bad instance id';
  return undefined;
}

function dlqPath(p: string): string | undefined {
  try {
    const inner = parseAddress(p);
    return inner.scheme === 'dlq' ? 'a dead-letter queue has no dead-letter queue of its own' : undefined;
  } catch (err) {
    return err instanceof AddressError ? `inner address: ${err.message}` : String(err);
  }
}

/** Parses and validates an address; throws AddressError saying what was expected. */
export function parseAddress(raw: unknown): Address {
  if (typeof raw !== 'string' || raw === '') throw new AddressError(String(raw ?? ''), 'expected a non-empty string like queue:orders');
  if (raw.length > MAX_LENGTH) throw new AddressError(raw.slice(0, 40) + '…', `longer than ${MAX_LENGTH} characters`);
  const colon = raw.indexOf(':');
  if (colon <= 0) throw new AddressError(raw, `expected scheme:path with a scheme of ${SCHEMES.join(', ')}`);
  const scheme = raw.slice(0, colon);
  const path = raw.slice(colon + 1);
  if (!(SCHEMES as readonly string[]).includes(scheme)) {
    throw new AddressError(raw, `unknown scheme '${scheme}' (expected one of ${SCHEMES.join(', ')})`);
  }
  const rule = RULES[scheme as Scheme];
  const problem = path === '' ? 'empty path' : rule.check(path);
  if (problem) throw new AddressError(raw, `${problem}; expected ${rule.expected}`);
  return { scheme: scheme as Scheme, path, raw };
}

export function isAddress(raw: unknown): boolean {
  try {
    parseAddress(raw);
    return true;
  } catch {
    return false;
  }
}
