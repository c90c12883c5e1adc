import { AddressError } from './errors.ts';
import { schemes, unknownScheme } from './address.ts';

/**
 * Address patterns for permissions and routes: `*` matches one path segment (segments split on
 * `/`, `.` and `:`), `**` matches any rest, including nothing. `**` alone matches every address.
 * Wildcards are whole segments (`orders-*` is refused rather than guessed at). The separator
 * before each segment must match too: `queue:demo.in` and `queue:demo/in` are different
 * addresses, and a rule for one must not open the other.
 */
export interface AddressPattern {
  readonly raw: string;
  readonly scheme: string | '**';
  readonly segments: readonly string[];
  /** The separator before each segment ('' before the first). */
  readonly separators: readonly string[];
}

const SEGMENT = /^[^*\s]+$/;

/** 'a.b/c' → segments [a, b, c], separators ['', '.', '/']. */
function split(path: string): { segments: string[]; separators: string[] } {
  const parts = path.split(/([./:])/);
  const segments: string[] = [];
  const separators: string[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    segments.push(parts[i]!);
    separators.push(i === 0 ? '' : parts[i - 1]!);
  }
  return { segments, separators };
}

export function parsePattern(raw: unknown): AddressPattern {
  if (typeof raw !== 'string' || raw === '') throw new AddressError(String(raw ?? ''), "expected a pattern like 'queue:orders.*' or '**'");
  if (raw === '**') return { raw, scheme: '**', segments: [], separators: [] };
  const colon = raw.indexOf(':');
  if (colon <= 0) throw new AddressError(raw, "a pattern is scheme:path with wildcards * and **, or '**' for everything");
  const scheme = raw.slice(0, colon);
  if (!schemes.get(scheme)) throw unknownScheme(raw, scheme);
  const { segments, separators } = split(raw.slice(colon + 1));
  segments.forEach((s, i) => {
    if (s === '**' && i !== segments.length - 1) throw new AddressError(raw, "'**' may only be the last segment");
    if (s !== '*' && s !== '**' && !SEGMENT.test(s)) {
      throw new AddressError(raw, s === '' ? 'empty segment' : `segment '${s}': wildcards must be a whole segment (* or **)`);
    }
  });
  return { raw, scheme, segments, separators };
}

export function matchesPattern(pattern: AddressPattern, address: string): boolean {
  if (pattern.scheme === '**') return true;
  const colon = address.indexOf(':');
  if (address.slice(0, colon) !== pattern.scheme) return false;
  const parts = split(address.slice(colon + 1));
  const { segments, separators } = pattern;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i];
    if (s === '**') return i >= parts.segments.length || parts.separators[i] === separators[i];
    const part = parts.segments[i];
    if (part === undefined || parts.separators[i] !== separators[i]) return false;
    if (s !== '*' && s !== part) return false;
  }
  return parts.segments.length === segments.length;
}

/** True when every address `inner` can match is also matched by `outer` (for delegated admin). */
export function patternWithin(inner: AddressPattern, outer: AddressPattern): boolean {
  if (outer.scheme === '**') return true;
  if (inner.scheme !== outer.scheme) return false;
  for (let i = 0; i < outer.segments.length; i++) {
    const o = outer.segments[i];
    const n = inner.segments[i];
    if (o === '**') return n === undefined || inner.separators[i] === outer.separators[i];
    if (n === undefined || n === '**' || inner.separators[i] !== outer.separators[i]) return false;
    if (o !== '*' && (n === '*' || n !== o)) return false;
  }
  return inner.segments.length === outer.segments.length;
}
