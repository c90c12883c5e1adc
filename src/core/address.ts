import { AddressError } from './errors.ts';

/**
 * Addresses are `scheme:path` (DESIGN §1). This module is the one parser every door, route and
 * flow goes through, so an address means the same thing everywhere and a bad one is refused the
 * same way everywhere. It knows no scheme by name: each transport registers its own (Camel's
 * component model), with the rule its paths follow; `src/schemes.ts` is the one list of them.
 */
export type Scheme = string;

export interface Address {
  readonly scheme: Scheme;
  /** Everything after the first `:`. */
  readonly path: string;
  /** The address as written, `scheme:path`. */
  readonly raw: string;
}

/** What a transport tells the parser about its addresses. */
export interface SchemeDefinition {
  readonly scheme: string;
  /** Returns what is wrong with a (non-empty) path, or undefined when it is valid. */
  check(path: string): string | undefined;
  /** The shape a path should have, with an example, for error messages. */
  readonly expected: string;
}

const MAX_LENGTH = 512;
const SCHEME_NAME = /^[a-z][a-z0-9-]*$/;

/** The registered schemes. One per process: an address must mean the same everywhere in it. */
class SchemeRegistry {
  private readonly definitions = new Map<string, SchemeDefinition>();

  register(definition: SchemeDefinition): void {
    if (!SCHEME_NAME.test(definition.scheme)) throw new Error(`scheme name '${definition.scheme}' must be lowercase letters, digits and -`);
    const existing = this.definitions.get(definition.scheme);
    if (existing && existing !== definition) throw new Error(`scheme '${definition.scheme}' is registered twice`);
    this.definitions.set(definition.scheme, definition);
  }

  get(scheme: string): SchemeDefinition | undefined {
    return this.definitions.get(scheme);
  }

  get names(): string[] {
    return [...this.definitions.keys()];
  }
}

export const schemes = new SchemeRegistry();

/** Registers a transport's scheme; registering the same definition again is harmless. */
export function registerScheme(definition: SchemeDefinition): void {
  schemes.register(definition);
}

/** Fails with the list of known schemes when `scheme` is not registered. */
export function unknownScheme(raw: string, scheme: string): AddressError {
  return new AddressError(raw, `unknown scheme '${scheme}' (expected one of ${schemes.names.join(', ')})`);
}

/** `dlq:<address>` is the router's own (the dead letters of any address), not a transport's. */
registerScheme({
  scheme: 'dlq',
  expected: 'dlq:<address>, e.g. dlq:queue:orders',
  check(p) {
    try {
      const inner = parseAddress(p);
      return inner.scheme === 'dlq' ? 'a dead-letter queue has no dead-letter queue of its own' : undefined;
    } catch (err) {
      return err instanceof AddressError ? `inner address: ${err.message}` : String(err);
    }
  },
});

/**
 * Addresses parsed before (bounded): every message's address is parsed on its way, and a route
 * or a flow sends to the same few again and again. Only valid ones are kept, frozen since they are
 * shared; schemes are only ever added, so an address that was valid stays valid.
 */
const parsed = new Map<string, Address>();
const PARSED_MAX = 10_000;

/** Parses and validates an address; throws AddressError saying what was expected. */
export function parseAddress(raw: unknown): Address {
  const known = typeof raw === 'string' ? parsed.get(raw) : undefined;
  if (known) return known;
  const address = Object.freeze(parseNew(raw));
  if (parsed.size >= PARSED_MAX) parsed.clear();
  parsed.set(address.raw, address);
  return address;
}

function parseNew(raw: unknown): Address {
  if (typeof raw !== 'string' || raw === '') throw new AddressError(String(raw ?? ''), 'expected a non-empty string like queue:orders');
  if (raw.length > MAX_LENGTH) throw new AddressError(raw.slice(0, 40) + '…', `longer than ${MAX_LENGTH} characters`);
  const colon = raw.indexOf(':');
  if (colon <= 0) throw new AddressError(raw, `expected scheme:path with a scheme of ${schemes.names.join(', ')}`);
  const scheme = raw.slice(0, colon);
  const path = raw.slice(colon + 1);
  const definition = schemes.get(scheme);
  if (!definition) throw unknownScheme(raw, scheme);
  const problem = path === '' ? 'empty path' : definition.check(path);
  if (problem) throw new AddressError(raw, `${problem}; expected ${definition.expected}`);
  return { scheme, path, raw };
}

export function isAddress(raw: unknown): boolean {
  try {
    parseAddress(raw);
    return true;
  } catch {
    return false;
  }
}

// Path rules several transports share.
export const NAME = /^[A-Za-z0-9_-]+$/;
export const DOTTED = /^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$/;
const VISIBLE = /^[\x21-\x7e]+$/;

/** `<name>/<address>`: a broker's or a peer's own address after a configured name. */
export function namedRemotePath(p: string, what: string): string | undefined {
  const slash = p.indexOf('/');
  if (slash < 0) return `missing '/' between the ${what} name and the address`;
  if (slash === 0) return `missing ${what} name before '/'`;
  if (!NAME.test(p.slice(0, slash))) return `bad ${what} name '${p.slice(0, slash)}'`;
  const rest = p.slice(slash + 1);
  if (rest === '') return 'missing address after the /';
  if (!VISIBLE.test(rest)) return 'the address after the / may not contain spaces or control characters';
  return undefined;
}
