import { matchesPattern, parsePattern, type AddressPattern } from './pattern.ts';

/** One `queues.dedup` entry from the config: a window for the addresses its pattern matches. */
export interface DedupWindowRule {
  /** An address pattern, e.g. `queue:orders.*`. */
  address: string;
  /** Milliseconds an id is remembered on a matching address; 0 turns deduplication off there. */
  window: number;
}

/**
 * How long a message id is remembered per address (the idempotent consumer's window): a message
 * whose (sender, id) was seen on that address within the window is acknowledged and dropped,
 * and counted. The first rule whose pattern matches wins; an address no rule matches gets the
 * default (`queues.dedupTtl`, one day). A window of 0 means no deduplication on that address.
 *
 * @example
 * const windows = new DedupWindows([{ address: 'queue:telemetry.*', window: 0 }], 86_400_000);
 * windows.windowFor('queue:telemetry.cpu'); // 0: off
 * windows.windowFor('queue:orders');        // 86400000
 */
export class DedupWindows {
  private readonly rules: { pattern: AddressPattern; window: number }[];
  // Addresses repeat on every send; a bounded memo keeps the pattern walk off the hot path.
  private readonly memo = new Map<string, number>();

  constructor(rules: readonly DedupWindowRule[], readonly defaultMs: number) {
    this.rules = rules.map((r) => ({ pattern: parsePattern(r.address), window: r.window }));
  }

  /** The window in milliseconds for `address` (0: deduplication off). */
  windowFor(address: string): number {
    const known = this.memo.get(address);
    if (known !== undefined) return known;
    const window = dedupWindowFor(address, this.rules, this.defaultMs);
    if (this.memo.size >= 10_000) this.memo.clear();
    this.memo.set(address, window);
    return window;
  }
}

/** The pure rule: the first matching pattern's window, else the default. */
export function dedupWindowFor(address: string, rules: readonly { pattern: AddressPattern; window: number }[], defaultMs: number): number {
  for (const r of rules) if (matchesPattern(r.pattern, address)) return r.window;
  return defaultMs;
}
