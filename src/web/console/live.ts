import type { Request, Response } from 'express';
import type { Logger } from 'pino';
import { SwitchboardError } from '../../core/errors.ts';
import type { Principal } from '../../core/message.ts';
import type { LiveStreams } from '../sessions.ts';

/** How often a live console page gets fresh numbers over server-sent events. */
export const LIVE_EVERY_MS = 2000;

/**
 * Serves one live console stream (server-sent events): every `everyMs` it sends `event` with what
 * `read` answers, read afresh for this user (so a right taken away stops showing at the next
 * tick). The stream counts against the per-user cap shared with the inbox
 * (http.inboxStreamsPerUser; over it a 429 before anything is read), ends when its session does
 * (logout, expiry) and stops its timers when the browser goes away.
 */
export function serveLive(
  o: { streams: LiveStreams; log: Logger; everyMs?: number },
  req: Request, res: Response, p: Principal, event: string, read: () => Promise<unknown>,
): void {
  let ended = false;
  const end = (reason: string) => {
    if (ended) return;
    ended = true;
    res.write(`event: end\ndata: ${JSON.stringify({ reason })}\n\n`);
    res.end();
  };
  const stream = o.streams.open(p.name, req.sessionID, end);
  if (!stream) throw new SwitchboardError('too_many_streams', `${p.name} already has ${o.streams.perUser} live streams open (http.inboxStreamsPerUser): close another console or inbox tab`, 429);
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache, no-transform', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
  res.write('retry: 3000\n\n');
  let busy = false;
  const tick = async () => {
    if (busy || ended) return;
    busy = true;
    try {
      const data = await read();
      if (!ended) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    } catch (err) {
      o.log.debug({ err: (err as Error).message, event }, 'console live read failed; the next tick tries again');
    } finally {
      busy = false;
    }
  };
  void tick(); // the first numbers at once: the page was rendered a moment ago, but a reconnect may be late
  const timer = setInterval(() => void tick(), o.everyMs ?? LIVE_EVERY_MS);
  const check = setInterval(() => {
    req.sessionStore.get(req.sessionID, (err, session) => {
      if (!err && !(session as { user?: unknown } | null | undefined)?.user) end('session ended');
    });
  }, o.streams.sessionCheckMs);
  req.on('close', () => {
    clearInterval(timer);
    clearInterval(check);
    stream.close();
  });
}
