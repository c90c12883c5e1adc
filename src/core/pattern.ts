import { AddressError } from './errors.ts';
import { SCHEMES } from './address.ts';

/**
 * Address patterns for permissions and routes: `*` matches one path segment (segments split on
 * `/`, `.` and `:`), `**` matches any rest, including nothing. `**` alone matches every address.
 * Wildcards are whole segments (`orders-*` is refused rather than guessed at).
 */
export interface AddressPattern {
  readonly raw: string;
  readonly scheme: string | '**';
  readonly segments: readonly string[];
}

const SEPARATORS = /[./:]/;
const SEGMENT = /^[^*\s]+$/;

export function parsePattern(raw: unknown): AddressPattern {
  if (typeof raw !== 'string' || raw === '') throw new AddressError(String(raw ?? ''), "expected a pattern like 'queue:orders.*' or '**'");
  if (raw === '**') return { raw, scheme: '**', segments: [] };
  const colon = raw.indexOf(':');
  if (colon <= 0) throw new AddressError(raw, "a pattern is scheme:path with wildcards * and **, or '**' for everything");
  const scheme = raw.slice(0, colon);
  if (!(SCHEMES as readonly string[]).includes(scheme)) {
    throw new AddressError(raw, `unknown scheme '${scheme}' (expected one of ${SCHEMES.join(', ')})`);
  }
  const segments = raw.slice(colon + 1).split(SEPARATORS);
  segments.forEach((s, i) => {
    if (s === '**' && i !== segments.length - 1) throw new AddressError(raw, "'**' may only be the last segment");
    if (s !== '*' && s !== '**' && !SEGMENT.test(s)) {
      throw new AddressError(raw, s === '' ? 'empty segment' : `segment '${s}': wildcards must be a whole segment (* or **)`);
    }
  });
  return { raw, scheme, segments };
}

export function matchesPattern(pattern: AddressPattern, address: string): boolean {
  if (pattern.scheme === '**') return true;
  const colon = address.indexOf(':');
  if (address.slice(0, colon) !== pattern.scheme) return false;
  const parts = address.slice(colon + 1).split(SEPARATORS);
  const segs = pattern.segments;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s === '**') return true;
    const part = parts[i];
    if (part === undefined) return false;
    if (s !== '*' && s !== part) return false;
  }
  return parts.length === segs.length;
}

/** True when every address `inner` can match is also matched by `outer` (for delegated admin). */
export function patternWithin(inner: AddressPattern, outer: AddressPattern): boolean {
  if (outer.scheme === '**') return true;
  if (inner.scheme !== outer.scheme) return false;
  for (let i = 0; i < outer.segments.length; i++) {
    const o = outer.segments[i];
    const n = inner.segments[i];
    if (o === '**') return true;
    if (n === undefined || n === '**') return false;
    if (o !== '*' && (n === '*' || n !== o)) return false;
  }
  return inner.segments.length === outer.segments.length;
}
