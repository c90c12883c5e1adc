import type { Redis } from 'ioredis';

interface Stream {
  cork(): void;
  uncork(): void;
}

const corked = new WeakSet<Stream>();

/**
 * Holds `redis`'s socket writes until this turn of the event loop has run its callbacks, so the
 * commands asked for in the turn after this call leave in one write. For the hot paths of many
 * messages or flows in flight, whose replies arrive in one read and whose next commands are asked
 * for together: each command's own write was the largest single cost there. Commands keep their
 * order, promises and replies. A cluster client (no single stream) or one not connected is left as is.
 */
export function corkForTurn(redis: Redis): void {
  const s = (redis as unknown as { stream?: Stream; status?: string }).stream;
  if (!s || redis.status !== 'ready' || corked.has(s)) return;
  corked.add(s);
  s.cork();
  process.nextTick(() => {
    corked.delete(s);
    s.uncork();
  });
}
