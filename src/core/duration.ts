import { ValidationError } from './errors.ts';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;

/** '500ms', '30s', '10m', '4h', '7d', or a number of milliseconds → milliseconds. */
export function parseDuration(value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  if (typeof value === 'string') {
    const m = DURATION.exec(value.trim());
    if (m) return Math.round(Number(m[1]) * UNITS[m[2]!]!);
  }
  throw new ValidationError(`invalid duration ${JSON.stringify(value)}: expected a number of milliseconds or a string like 500ms, 30s, 10m, 4h, 7d`);
}
