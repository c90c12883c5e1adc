/**
 * Items asked for in one turn of the event loop, grouped by key, sent together once the turn's
 * callbacks have run: one command for many (SADD, SREM, ZADD of many members). For paths where
 * many callers are woken by the same socket read and each asks for the same kind of write.
 */
export class TurnBatches<T> {
  /** Batches still collecting, by key. */
  private readonly open = new Map<string, { items: T[]; done: Promise<void> }>();
  /** Batches sent and not yet answered. */
  private readonly sent = new Set<Promise<void>>();

  /** @param send writes one key's batch; its rejection rejects every `add` of that batch */
  constructor(private readonly send: (key: string, items: T[]) => Promise<unknown>) {}

  /** Adds `item` to this turn's batch of `key`; resolved when that batch has been written. */
  add(key: string, item: T): Promise<void> {
    let batch = this.open.get(key);
    if (!batch) {
      const items: T[] = [];
      const done: Promise<void> = new Promise<void>((resolve) => process.nextTick(resolve)).then(async () => {
        this.open.delete(key);
        this.sent.add(done);
        try {
          await this.send(key, items);
        } finally {
          this.sent.delete(done);
        }
      });
      batch = { items, done };
      this.open.set(key, batch);
    }
    batch.items.push(item);
    return batch.done;
  }

  /** Resolves once every batch asked for so far has been answered (failed ones included). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.open.values()].map((b) => b.done).concat([...this.sent]));
  }
}
