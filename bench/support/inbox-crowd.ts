/**
 * The crowd of the inbox latency benchmark: holds N inbox streams (GET /inbox/events) open for
 * sessions the parent logged in, in a process of its own, so reading them does not land on the
 * event loop of the gateway and the measured client (which share the parent process).
 *
 * Protocol (IPC, `child_process.fork`): the parent sends `{ base, cookies }` (one cookie header a
 * stream); the crowd answers `{ opened, refused }` once every stream got its answer (a refused
 * stream is counted with its status and body, never retried). On `{ stop: true }` it answers with
 * `{ open, ended, events }` — how many streams were still open at that moment, how many the
 * server ended (with the reason of the first), and the 'created' task events each stream got —
 * then closes them and exits.
 */

interface Start { base: string; cookies: string[] }
/** `watchers`: the first that many streams belong to the group every task goes to. */
interface Stop { stop: true; watchers: number; expect: number; waitMs: number }
interface Held { accepted: boolean; open: boolean; endReason?: string; created: number; ac: AbortController }

const held: Held[] = [];

async function hold(i: number, base: string, cookie: string): Promise<{ ok: true } | { ok: false; why: string }> {
  const h: Held = { accepted: false, open: false, created: 0, ac: new AbortController() };
  held[i] = h;
  let res: Response;
  try {
    res = await fetch(`${base}/inbox/events`, { headers: { accept: 'text/event-stream', cookie }, redirect: 'manual', signal: h.ac.signal });
  } catch (err) {
    return { ok: false, why: (err as Error).message };
  }
  if (res.status !== 200 || !res.body) return { ok: false, why: `${res.status} ${(await res.text().catch(() => '')).slice(0, 200)}` };
  h.accepted = true;
  h.open = true;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  void (async () => {
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (block.startsWith('event: task') && block.includes('"type":"created"')) h.created++;
        else if (block.startsWith('event: end')) h.endReason ??= block.slice(block.indexOf('data:') + 5).trim();
      }
    }
  })().catch((err: Error) => {
    if (!h.ac.signal.aborted) h.endReason ??= err.message;
  }).finally(() => {
    if (!h.ac.signal.aborted) h.open = false;
  });
  return { ok: true };
}

process.on('message', (m: Start | Stop) => {
  if ('stop' in m) {
    void (async () => {
      // The watchers' last events may still be on their way when the measured client has all of its.
      const end = performance.now() + m.waitMs;
      while (performance.now() < end && held.slice(0, m.watchers).some((h) => h.open && h.created < m.expect)) await new Promise((r) => setTimeout(r, 20));
      const accepted = held.filter((h) => h.accepted);
      const ended = accepted.filter((h) => !h.open || h.endReason !== undefined);
      process.send!({ open: accepted.length - ended.length, ended: ended.length, endReason: ended[0]?.endReason ?? null, events: accepted.map((h) => h.created) }, () => {
        for (const h of held) h.ac.abort();
        process.exit(0);
      });
    })();
    return;
  }
  void (async () => {
    const refused: Record<string, number> = {};
    let opened = 0;
    // A few at a time: a browser crowd arrives over a while, not in one burst of connects.
    for (let i = 0; i < m.cookies.length; i += 50) {
      const got = await Promise.all(m.cookies.slice(i, i + 50).map((c, j) => hold(i + j, m.base, c)));
      for (const g of got) {
        if (g.ok) opened++;
        else refused[g.why] = (refused[g.why] ?? 0) + 1;
      }
    }
    process.send!({ opened, refused });
  })();
});

process.on('disconnect', () => process.exit(0));
