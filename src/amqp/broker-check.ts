import { randomUUID } from 'node:crypto';
import rhea, { type Connection, type Delivery, type EventContext, type Receiver } from 'rhea';
import type { Logger } from 'pino';
import { Broker, describe, type BrokerConfig } from './connection.ts';

/** One row of `switchboard broker check`: what was tried, how it went, in the broker's own words. */
export interface CheckRow {
  check: string;
  result: 'pass' | 'fail' | 'not supported';
  /** A must-have row that fails makes the whole check fail (exit 1). */
  must: boolean;
  detail: string;
}

/** Options of a broker qualification. */
export interface BrokerCheckOptions {
  /** How long one step waits for the broker. @defaultValue 5000 */
  stepTimeoutMs?: number;
  /** Scratch address the checks use; named so an operator recognises it. @defaultValue switchboard.check.<random> */
  scratch?: string;
}

const ROWS: { check: string; must: boolean }[] = [
  { check: 'connect and SASL', must: true },
  { check: 'durable send and settle', must: true },
  { check: 'receive and accept', must: true },
  { check: 'ids and typed properties both ways', must: true },
  { check: 'reply_to honoured', must: true },
  { check: 'reject → dead-letter queue', must: false },
  { check: 'credit respected', must: false },
  { check: 'largest message round trip', must: false },
  { check: 'reconnect after a dropped connection', must: true },
  { check: 'temporary queues (dynamic receiver)', must: false },
  { check: 'anonymous relay', must: false },
];

class StepFailed extends Error {}

function within<T>(ms: number, what: string, fn: (resolve: (v: T) => void, reject: (e: Error) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new StepFailed(`no answer from the broker within ${ms} ms (${what})`)), ms);
    fn((v) => { clearTimeout(t); resolve(v); }, (e) => { clearTimeout(t); reject(e); });
  });
}

/**
 * Qualifies a configured broker the way an ops team would before go-live: each row is tried on a
 * scratch address over its own AMQP connection and reported pass / fail / not supported with what
 * the broker said. Nothing is left running; a broker that cannot delete queues over AMQP 1.0
 * (RabbitMQ 3.10) keeps the empty scratch queue, and the report says so.
 */
export async function checkBroker(config: BrokerConfig, log: Logger, o: BrokerCheckOptions = {}): Promise<{ rows: CheckRow[]; notes: string[] }> {
  const ms = o.stepTimeoutMs ?? 5000;
  const scratch = o.scratch ?? `switchboard.check.${randomUUID().slice(0, 8)}`;
  const rows: CheckRow[] = [];
  const notes: string[] = [];
  const row = (i: number, result: CheckRow['result'], detail: string) => rows.push({ ...ROWS[i]!, result, detail });
  const address = (p: string) => (config.addressFormat === 'rabbitmq' ? `/queue/${p}` : p);

  // The Broker class gives the same connection options (SASL, TLS) the gateway uses.
  const broker = new Broker({ ...config, containerId: `switchboard-check-${randomUUID().slice(0, 8)}` }, log);
  let conn: Connection | undefined;
  try {
    broker.start();
    conn = (broker as unknown as { connection: Connection }).connection;
    for (const ev of ['sender_error', 'receiver_error', 'session_error']) conn.on(ev, () => {});
    try {
      await broker.ready(ms);
      const open = broker.remoteOpen;
      row(0, 'pass', `connected (${config.sasl}); broker container ${open?.container_id ?? '?'}${open?.properties?.product ? `, ${String(open.properties.product)} ${String(open.properties.version ?? '')}` : ''}`);
    } catch {
      row(0, 'fail', broker.status.lastError || 'no connection');
      for (let i = 1; i < ROWS.length; i++) row(i, 'fail', 'not tried: no connection');
      return { rows, notes };
    }
    const c = conn;
    const q = address(scratch);
    const sender = c.open_sender({ target: { address: q, durable: 2 }, autosettle: true });
    const send = (m: Record<string, unknown>) => within<void>(ms, 'settlement', (resolve, reject) => {
      const go = () => {
        const d = sender.send({ durable: true, ...m } as never);
        const done = () => {
          sender.removeListener('accepted', ok);
          sender.removeListener('rejected', bad);
          sender.removeListener('released', bad);
        };
        const ok = (ctx: EventContext) => { if (ctx.delivery === d) { done(); resolve(); } };
        const bad = (ctx: EventContext) => { if (ctx.delivery === d) { done(); reject(new StepFailed(describe((ctx.delivery?.remote_state as { error?: unknown } | undefined)?.error) || 'the broker did not take it')); } };
        sender.on('accepted', ok);
        sender.on('rejected', bad);
        sender.on('released', bad);
      };
      if (sender.sendable()) go(); else sender.once('sendable', go);
      sender.once('sender_error', (ctx: EventContext) => reject(new StepFailed(describe(ctx.sender?.error))));
    });
    const receiver = (): Receiver => c.open_receiver({ source: { address: q, durable: 2 }, autoaccept: false, credit_window: 0 });
    const next = (r: Receiver, what: string) => within<{ message: Record<string, any>; delivery: Delivery }>(ms, what, (resolve) => {
      r.once('message', (ctx: EventContext) => resolve({ message: ctx.message as Record<string, any>, delivery: ctx.delivery as Delivery }));
      r.add_credit(1);
    });

    // 1–2: durable send and settle
    let sent = false;
    try {
      await send({ message_id: 'check-1', body: 'switchboard broker check' });
      sent = true;
      row(1, 'pass', `accepted by the broker on ${q}`);
    } catch (err) { row(1, 'fail', (err as Error).message); }

    // 3: receive and accept
    const r = receiver();
    await within<void>(ms, 'attach', (resolve) => { if (r.is_open()) resolve(); else r.once('receiver_open', () => resolve()); }).catch(() => {});
    let settledBySender = false;
    if (sent) {
      try {
        const got = await next(r, 'the message back');
        settledBySender = (got.delivery as unknown as { remote_settled?: boolean }).remote_settled === true;
        got.delivery.accept();
        row(2, 'pass', settledBySender ? 'received; the broker settled it when it sent it (at-most-once to consumers: accept has no effect)' : 'received and accepted');
      } catch (err) { row(2, 'fail', (err as Error).message); }
    } else row(2, 'fail', 'not tried: the send failed');

    // 4–5: typed ids and properties, reply_to
    try {
      await send({ message_id: rhea.types.wrap_ulong(4242), correlation_id: 'corr-check', reply_to: address(`${scratch}.replies`), subject: 'check', application_properties: { n: rhea.types.wrap_long(7), b: true, d: 1.5, s: 'text' }, body: 'typed' });
      const { message: m, delivery } = await next(r, 'the typed message back');
      delivery.accept();
      const problems: string[] = [];
      if (typeof m.message_id !== 'number' || m.message_id !== 4242) problems.push(`message_id came back as ${typeof m.message_id} ${String(m.message_id)}`);
      if (m.correlation_id !== 'corr-check') problems.push(`correlation_id ${String(m.correlation_id)}`);
      const ap = m.application_properties ?? {};
      if (ap.n !== 7 || ap.b !== true || ap.d !== 1.5 || ap.s !== 'text') problems.push(`application properties ${JSON.stringify(ap)}`);
      row(3, problems.length ? 'fail' : 'pass', problems.join('; ') || 'ulong message_id, string correlation_id, long/boolean/double/string properties kept');
      row(4, m.reply_to === address(`${scratch}.replies`) ? 'pass' : 'fail', `reply_to came back as ${JSON.stringify(m.reply_to)}`);
    } catch (err) { row(3, 'fail', (err as Error).message); row(4, 'fail', 'not tried'); }

    // 6: reject → DLQ
    try {
      await send({ message_id: 'check-reject', body: 'to be rejected' });
      const { delivery } = await next(r, 'the message to reject');
      if ((delivery as unknown as { remote_settled?: boolean }).remote_settled) row(5, 'not supported', 'the broker settled the message when it sent it: a consumer cannot reject it (no dead-lettering)');
      else {
        delivery.reject({ condition: 'switchboard:check', description: 'broker check rejects this on purpose' });
        const back = await next(r, 'a redelivery').then(() => true, () => false);
        row(5, back ? 'fail' : 'pass', back ? 'the rejected message came back to the queue' : 'rejected and not redelivered: it went to the broker\'s dead-letter queue where one is configured (otherwise dropped)');
      }
    } catch (err) { row(5, 'fail', (err as Error).message); }

    // 7: credit
    try {
      for (let i = 0; i < 3; i++) await send({ message_id: `check-credit-${i}`, body: i });
      let extra = 0;
      const count = (ctx: EventContext) => { extra++; (ctx.delivery as Delivery).accept(); };
      r.on('message', count);
      await new Promise((res) => setTimeout(res, 1000));
      const withoutCredit = extra;
      r.add_credit(3);
      await new Promise((res) => setTimeout(res, 1000));
      r.removeListener('message', count);
      row(6, withoutCredit === 0 ? 'pass' : 'fail', withoutCredit === 0 ? `nothing sent without credit; ${extra} after 3 credits` : `${withoutCredit} message(s) sent with no credit`);
    } catch (err) { row(6, 'fail', (err as Error).message); }

    // 8: largest message, on a fresh link (the credit check may leave credit and messages behind)
    r.close();
    const drained = receiver();
    drained.on('message', (ctx: EventContext) => (ctx.delivery as Delivery).accept());
    drained.add_credit(10);
    await new Promise((res) => setTimeout(res, 500));
    drained.close();
    const big = receiver();
    await within<void>(ms, 'attach', (resolve) => big.once('receiver_open', () => resolve())).catch(() => {});
    let largest = 0;
    let why = '';
    for (const size of [64 * 1024, 1024 * 1024, 4 * 1024 * 1024]) {
      try {
        await send({ message_id: `check-size-${size}`, body: rhea.message.data_section(Buffer.alloc(size, 0x61)) });
        const { message: m, delivery } = await next(big, `the ${size}-byte message back`);
        delivery.accept();
        const body = m.body?.content ?? m.body;
        if (!Buffer.isBuffer(body) || body.length !== size) { why = `${size} bytes came back as ${Buffer.isBuffer(body) ? body.length : typeof body}`; break; }
        largest = size;
      } catch (err) { why = `${size} bytes: ${(err as Error).message}`; break; }
    }
    row(7, largest > 0 ? 'pass' : 'fail', `${largest / 1024} KiB round-trips${why ? `; ${why}` : ' (largest tried)'}`);
    big.close();
    sender.close();

    // 9: reconnect
    try {
      const reopened = within<void>(ms * 3, 'reconnect', (resolve) => { const off = broker.on('open', () => { off(); resolve(); }); });
      // rhea notices a socket error or end (not a bare close): drop it the way a network fault would.
      (c as unknown as { socket?: { destroy(err?: Error): void } }).socket?.destroy(new Error('connection dropped by the broker check'));
      await reopened;
      row(8, 'pass', 'the connection came back by itself');
    } catch (err) { row(8, 'fail', (err as Error).message); }

    // 10: temporary queues. No credit on it: Proton's example broker crashes when a dynamic
    // receiver it did not name asks for messages.
    try {
      const d = c.open_receiver({ source: { dynamic: true } as unknown as string, credit_window: 0 });
      const addr = await within<string | undefined>(ms, 'dynamic attach', (resolve) => {
        d.once('receiver_open', () => resolve((d.source as { address?: string } | undefined)?.address ?? undefined));
        d.once('receiver_error', (ctx: EventContext) => resolve(`!${describe(ctx.receiver?.error)}`));
      });
      d.close();
      if (addr && !addr.startsWith('!')) row(9, 'pass', `temporary address ${addr}`);
      else row(9, 'not supported', addr ? addr.slice(1) : 'the broker answered the dynamic source with no address');
    } catch (err) { row(9, 'not supported', (err as Error).message); }

    // 11: anonymous relay
    const caps = broker.remoteOpen?.offered_capabilities;
    const list = (Array.isArray(caps) ? caps : caps ? [caps] : []).map(String);
    row(10, list.includes('ANONYMOUS-RELAY') ? 'pass' : 'not supported', list.length ? `offered: ${list.join(', ')}` : 'the broker offers no capabilities at open');
    if (config.addressFormat === 'rabbitmq') notes.push(`RabbitMQ 3.10 cannot delete queues over AMQP 1.0: the empty queue ${scratch} stays (delete it with rabbitmqctl delete_queue ${scratch})`);
    return { rows, notes };
  } finally {
    await broker.close().catch(() => {});
  }
}

/** The rows as a fixed-width table for a terminal. */
export function formatCheck(name: string, rows: CheckRow[], notes: string[]): string {
  const w = Math.max(...rows.map((r) => r.check.length));
  const lines = [`broker ${name}`, ...rows.map((r) => `${r.check.padEnd(w)}  ${r.result.padEnd(13)}  ${r.must ? 'must' : '    '}  ${r.detail}`), ...notes.map((n) => `note: ${n}`)];
  return `${lines.join('\n')}\n`;
}
