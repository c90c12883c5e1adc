/**
 * Events per second over the last minute, per key, counted in this process: six 10-second
 * buckets a key, so memory stays bounded by the keys counted (at most `maxKeys`, least recently
 * counted dropped first).
 */
export class RateMeter {
  private readonly buckets = new Map<string, { at: number[]; n: number[] }>();

  constructor(private readonly maxKeys = 1000, private readonly now: () => number = Date.now) {}

  add(key: string, n = 1): void {
    const slot = Math.floor(this.now() / 10_000);
    let b = this.buckets.get(key);
    if (b) this.buckets.delete(key);
    else b = { at: [0, 0, 0, 0, 0, 0], n: [0, 0, 0, 0, 0, 0] };
    this.buckets.set(key, b);
    const i = slot % 6;
    if (b.at[i] !== slot) {
      b.at[i] = slot;
      b.n[i] = 0;
    }
    b.n[i]! += n;
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
  }

  /** Per second over the last 60 s (the current, partly filled bucket included). */
  perSecond(key: string): number {
    const b = this.buckets.get(key);
    if (!b) return 0;
    const slot = Math.floor(this.now() / 10_000);
    let sum = 0;
    for (let i = 0; i < 6; i++) if (slot - b.at[i]! < 6) sum += b.n[i]!;
    return sum / 60;
  }
}
