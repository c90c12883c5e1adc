import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Delivery, EventContext, Receiver } from 'rhea';
import type { Logger } from 'pino';
import type { ConsumeOptions, DeliveryHandler, Endpoint, HealthReport, SendResult, Subscription } from '../../core/endpoint.ts';
import { UnknownTarget, ValidationError, isRetryable } from '../../core/errors.ts';
import { holdAfterFailure } from '../../core/hold.ts';
import type { LifecycleEvent, RecordLifecycle } from '../../core/lifecycle.ts';
import type { Message } from '../../core/message.ts';
import type { Metrics } from '../../core/metrics.ts';
import { Broker, describe } from '../../amqp/connection.ts';
import { fromAmqp, toAmqp, type AmqpMessage } from '../../amqp/mapping.ts';

export interface MqEndpointOptions {
  brokers: Broker[];
  redis: Redis;
  prefix: string;
  /** Failed deliveries of one message before it is rejected to the broker's dead-letter queue. */
  maxAttempts: number;
  backoffMs: number;
  /** Per broker: the broker address replies come back to (when a replyTo is a Switchboard address). */
  replyQueues: Map<string, string>;
  /**
   * Stores `switchboard.message.dead-lettered` durably, awaited before the reject that makes it
   * true (see `deadLetter`).
   * @defaultValue undefined (no event mapped: no extra Redis command per message)
   */
  deadLetterEvents?: RecordLifecycle;
  metrics: Metrics;
  log: Logger;
}

/** A flow instance: replies to it come back through the broker's reply queue (src/flows/broker-replies.ts). */
const FLOW_INSTANCE = /^flow:[^/]+\/[^/]+$/;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `mq:<broker>/<address>` — queues on in-house brokers over AMQP 1.0. Sends count only once the
 * broker accepted them. Consumers give credit only for what they can hand on, settle (accept)
 * only after the destination durably accepted, hold a message while the destination is
 * unavailable (so the rest waits on the broker), and reject a poison message to the broker's
 * dead-letter queue after maxAttempts.
 */
export class MqEndpoint implements Endpoint {
  readonly scheme = 'mq';
  // Brokers don't dedup; the ids travel as message_id so the next Switchboard ingress does.
  readonly dedupsOnIngress = false;
  private readonly brokers: Map<string, Broker>;
  private readonly subs = new Set<Subscription>();

  constructor(private readonly o: MqEndpointOptions) {
    this.brokers = new Map(o.brokers.map((b) => [b.config.name, b]));
  }

  private split(address: string): { broker: Broker; path: string } {
    const rest = address.slice('mq:'.length);
    const slash = rest.indexOf('/');
    const name = rest.slice(0, slash);
    const broker = this.brokers.get(name);
    if (!broker) throw new UnknownTarget(address, `broker named '${name}'`, [...this.brokers.keys()].map((b) => `mq:${b}`));
    return { broker, path: rest.slice(slash + 1) };
  }

  checkTarget(address: string): void {
    this.split(address);
  }

  async send(message: Message): Promise<SendResult> {
    const { broker, path } = this.split(message.to);
    let replyTo: string | undefined;
    if (message.replyTo) {
      // A reply to an mq: address of the same broker is a plain broker address; any other
      // Switchboard address (a waiting flow) comes back through this broker's reply queue.
      const own = `mq:${broker.config.name}/`;
      if (message.replyTo.startsWith(own)) replyTo = broker.address(message.replyTo.slice(own.length));
      else if (FLOW_INSTANCE.test(message.replyTo)) {
        const q = this.o.replyQueues.get(broker.config.name);
        if (!q) throw new ValidationError(`replies from broker '${broker.config.name}' need brokers.${broker.config.name}.replyQueue in the config`);
        replyTo = broker.address(q);
      } else {
        // Refused at the door: the broker's consumer could never answer there, and a message that
        // cannot be answered is better refused now than found in a dead-letter queue later.
        throw new ValidationError(`reply_to '${message.replyTo}' cannot be answered through broker '${broker.config.name}': ` +
          `expected an address on that broker (${own}<address>) or a waiting flow instance (flow:<name>/<instance>)`, 'reply_to_unreachable');
      }
    }
    const amqp = toAmqp(message, { ...(replyTo ? { replyTo } : {}) });
    if (message.replyTo) (amqp.application_properties as Record<string, string>)['switchboard-reply-to'] = message.replyTo;
    await broker.send(broker.address(path), amqp);
    return { id: message.id, duplicate: false };
  }

  private attemptsKey(broker: string, id: string): string {
    return `${this.o.prefix}:mq-attempts:{${broker}}:${createHash('sha256').update(id).digest('hex')}`;
  }

  /** How many times this message id was rejected to the broker already: a new dead-lettering is a new event. */
  private rejectionsKey(broker: string, id: string): string {
    return `${this.o.prefix}:mq-rejections:{${broker}}:${createHash('sha256').update(id).digest('hex')}`;
  }

  async consume(address: string, handler: DeliveryHandler, options: ConsumeOptions): Promise<Subscription> {
    const { broker, path } = this.split(address);
    let busy = 0;
    let stopping = false;
    let receiver: Receiver | undefined;
    let retry: NodeJS.Timeout | undefined;
    let releaseHeld = () => {};
    let dropHeld = () => {};
    // A link the broker detached, or one in a session it ended, is gone for good: rhea re-attaches
    // only links it still thinks open after a reconnect. One consumer per subscription: a new link
    // only when the current one is closed, whichever event noticed first.
    const attached = () => receiver !== undefined && !receiver.is_closed();
    const ensureAttached = () => { if (!stopping && !attached()) attach(); };
    const attachSoon = (why: string) => {
      if (stopping || retry) return;
      this.o.log.warn({ address }, `${why}; attaching again`);
      retry = setTimeout(() => { retry = undefined; ensureAttached(); }, 1000);
      retry.unref();
    };
    const attach = () => {
      const r = broker.receiver(broker.address(path));
      receiver = r;
      // Deliveries waiting for a free slot, held (not settled): those asked for ahead (below) and
      // any the broker sent past our credit.
      const overflow: EventContext[] = [];
      // Whether the broker settles deliveries as it sends them (then they cannot be held): unknown
      // until one came, and for good once one came settled.
      let settlesOnSending: boolean | undefined;
      const credit = () => (r as unknown as { credit: number }).credit;
      const topUp = () => {
        // Credit is granted only once the last grant is used up: RabbitMQ 3.x's AMQP 1.0 plugin
        // takes each flow frame as the credit from now on, ignoring what is already on the way,
        // so a grant while transfers are in flight makes it send past the credit. Never more
        // messages asked for than free slots. Under load the grant waits until half the slots
        // are free: one flow frame (and one batch from the broker's queue) per half window, not
        // one per finished message; on RabbitMQ 3.10 the per-message grants cost it ~15% more
        // CPU a message and the bridge ~8% of its rate (npm run bench -- mq).
        // Up to a second window is asked for ahead and held, unsettled, beside the one being
        // handled, so a freed slot starts the next message at once instead of after a grant's
        // round trip to the broker: with only the window itself, half of it sat idle between
        // grants. A destination that is down still stops the pulling: the held ones wait, no
        // credit is given, and the rest stays on the broker (nothing held is settled). Only once
        // a delivery came unsettled: what a broker that settles on sending sends cannot be held
        // (only handled), so a window ahead would be handled too, past the route's concurrency.
        if (stopping || credit() > 0 || !r.is_open() || r !== receiver) return;
        const want = (settlesOnSending === false ? 2 : 1) * options.maxInFlight - busy - overflow.length;
        if (want > 0 && want >= Math.ceil(options.maxInFlight / 2)) r.add_credit(want);
      };
      const start = (ctx: EventContext, settledBySender: boolean) => {
        busy++;
        void this.handle(broker, address, ctx.message as unknown as AmqpMessage, ctx.delivery as Delivery, handler, () => stopping && !settledBySender).finally(() => {
          busy--;
          const next = overflow.shift();
          if (next && !stopping && r === receiver && r.is_open()) start(next, false);
          topUp();
        });
      };
      r.on('receiver_open', topUp);
      r.on('message', (ctx: EventContext) => {
        const delivery = ctx.delivery as Delivery;
        // A broker that settles on sending (Qpid Proton's example broker) has already forgotten
        // the message: giving it back would lose it, so it is handled even now.
        const settledBySender = (delivery as unknown as { remote_settled?: boolean }).remote_settled === true;
        settlesOnSending = settlesOnSending === true || settledBySender;
        if (stopping && !settledBySender) {
          // Plain `released`: with parameters rhea sends `modified`, which RabbitMQ 3.10 refuses.
          delivery.release();
          return;
        }
        if (busy >= options.maxInFlight && !settledBySender) {
          // Sent past our credit: kept in hand, unsettled, for the next free slot. Giving it back
          // would have the broker send it again at once, and again past the credit.
          overflow.push(ctx);
          return;
        }
        start(ctx, settledBySender);
        // The last of a grant arrived: free slots get credit now, not when a message finishes.
        topUp();
      });
      // Handed back before the link closes; a link that is already gone leaves them to the broker.
      releaseHeld = () => { for (const ctx of overflow.splice(0)) if (r.is_open()) (ctx.delivery as Delivery).release(); };
      // After a lost connection or session the broker has them back already: forgotten, not settled.
      dropHeld = () => { overflow.length = 0; };
      // A broker shutting down detaches its links before it closes the connection.
      r.on('receiver_close', () => {
        if (r !== receiver) return;
        dropHeld();
        attachSoon('the broker detached a consumer link');
      });
      r.on('receiver_error', () => {});
    };
    // The session ends (RabbitMQ ends it when it shuts down) and the reconnect are heard through
    // the Broker, which must keep seeing them itself (see Broker.on).
    const offSession = broker.on('session_end', (session) => {
      if (receiver && (receiver as unknown as { session: unknown }).session === session) {
        dropHeld();
        attachSoon('the broker ended the consumer session');
      }
    });
    const offOpen = broker.on('open', () => {
      dropHeld();
      setImmediate(ensureAttached);
    });
    attach();
    const sub: Subscription = {
      close: async () => {
        stopping = true;
        clearTimeout(retry);
        offSession();
        offOpen();
        this.subs.delete(sub);
        releaseHeld();
        receiver?.close();
      },
    };
    this.subs.add(sub);
    return sub;
  }

  private async handle(broker: Broker, address: string, amqp: AmqpMessage, delivery: Delivery, handler: DeliveryHandler, stopping: () => boolean): Promise<void> {
    let message: Message;
    try {
      // The sender of a message from a broker is that broker; what it claims is kept as a header.
      message = fromAmqp(amqp, address, { kind: 'broker', name: broker.config.name }, {
        mapReplyTo: (r) => `mq:${broker.config.name}/${broker.config.addressFormat === 'rabbitmq' ? r.replace(/^\/queue\//, '') : r}`,
      });
      const claimedReplyTo = (amqp.application_properties as Record<string, unknown> | undefined)?.['switchboard-reply-to'];
      if (typeof claimedReplyTo === 'string') message.headers['switchboard-reply-to'] = claimedReplyTo;
    } catch (err) {
      this.o.log.warn({ address, err: (err as Error).message }, 'malformed message rejected to the broker');
      delivery.reject({ condition: 'amqp:decode-error', description: (err as Error).message });
      this.o.metrics.messagesFailed.inc({ endpoint: 'mq' });
      return;
    }
    // Dead-lettered already, but killed before the reject reached the broker: rejected again,
    // not delivered (its event is recorded again with the same id, deduplicated).
    if (this.o.deadLetterEvents && Number(await this.o.redis.get(this.attemptsKey(broker.config.name, message.id))) >= this.o.maxAttempts) {
      await this.deadLetter(broker.config.name, address, message, delivery, `failed ${this.o.maxAttempts} times before a restart`);
      return;
    }
    try {
      // Destination unavailable: hold this one (no new credit), try again later. Tried once
      // here: the hold's options and closure are made only for a message held.
      try {
        await handler(message);
      } catch (first) {
        await holdAfterFailure(first, () => handler(message), { stopping, firstPauseMs: Math.min(this.o.backoffMs, 250) });
      }
      delivery.accept(); // counted out by the router, around the handler
      return;
    } catch (err) {
      if (isRetryable(err)) {
        delivery.release();
        return;
      }
      const n = await this.o.redis.incr(this.attemptsKey(broker.config.name, message.id));
      await this.o.redis.pexpire(this.attemptsKey(broker.config.name, message.id), 86_400_000);
      if (n >= this.o.maxAttempts) {
        this.o.log.warn({ address, msgId: message.id, err: (err as Error).message, attempts: n }, 'poison message rejected to the broker (its dead-letter queue, if configured)');
        await this.deadLetter(broker.config.name, address, message, delivery, `failed ${n} times: ${(err as Error).message}`);
      } else {
        // Attempts are counted here (Redis), not by the broker's delivery-count, which not
        // every broker raises on a release.
        await sleep(this.o.backoffMs * 2 ** (n - 1));
        delivery.release();
      }
      return;
    }
  }

  /**
   * Rejects a poison message to the broker. The broker owns that change and tells us nothing
   * durable about it, so its event is stored first (awaited), and the decision is durable in
   * Redis already (the attempts count): a kill -9 between the two ends in a redelivery that is
   * rejected again without being delivered, never in a dead letter without its event. When the
   * event cannot be stored now, the message is released to the broker and dead-lettered later.
   */
  private async deadLetter(brokerName: string, address: string, message: Message, delivery: Delivery, reason: string): Promise<void> {
    const attempts = this.attemptsKey(brokerName, message.id);
    const rejections = this.rejectionsKey(brokerName, message.id);
    if (this.o.deadLetterEvents) {
      // The same message id dead-lettered again after an operator moved it back from the broker's
      // dead-letter queue is a new change, so a new event: the key counts earlier rejections.
      const earlier = Number(await this.o.redis.get(rejections));
      const event: LifecycleEvent = { type: 'switchboard.message.dead-lettered', subject: address, key: `${address}\0${message.id}\0${earlier}`, data: { address, messageId: message.id, transport: 'mq', reason } };
      try {
        await this.o.deadLetterEvents(event);
      } catch (err) {
        this.o.log.warn({ address, msgId: message.id, err: (err as Error).message }, 'dead-letter event not stored; the message goes back to the broker and is rejected on its next delivery');
        await sleep(this.o.backoffMs);
        delivery.release();
        return;
      }
    }
    this.o.metrics.deadLettered.inc({ endpoint: 'mq' });
    delivery.reject({ condition: 'switchboard:delivery-failed', description: reason });
    // Rejected: the attempts start again from zero, so the same message moved back from the
    // broker's dead-letter queue is delivered, not taken for a redelivery after a crash. A kill -9
    // before this line ends either in a redelivery rejected again (same event key), or, had the
    // reject reached the broker, in one rejected again if moved back within the attempts' 24 h.
    await this.o.redis.multi().del(attempts).incr(rejections).pexpire(rejections, 7 * 86_400_000).exec()
      .catch((err: Error) => this.o.log.warn({ address, msgId: message.id, err: err.message }, 'attempts of a rejected message not reset; moved back within 24 h it would be rejected again unseen'));
  }

  async health(): Promise<HealthReport> {
    const states = [...this.brokers.values()].map((b) => ({ name: b.config.name, ...b.status }));
    const down = states.filter((s) => s.state !== 'open');
    return { ok: down.length === 0, detail: states.map((s) => `${s.name}: ${s.state}${s.lastError ? ` (${s.lastError})` : ''}`).join('; ') };
  }

  brokerStates(): { name: string; state: string; lastError?: string }[] {
    return [...this.brokers.values()].map((b) => ({ name: b.config.name, ...b.status }));
  }

  async close(): Promise<void> {
    await Promise.all([...this.subs].map((s) => s.close()));
    await Promise.all([...this.brokers.values()].map((b) => b.close()));
  }
}

export { describe };
