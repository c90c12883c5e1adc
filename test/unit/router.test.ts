import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { registerScheme } from '../../src/core/address.ts';
import type { DedupStore } from '../../src/core/dedup.ts';
import type { BrowseResult, Endpoint, SendResult } from '../../src/core/endpoint.ts';
import { AddressError, UnknownScheme, ValidationError } from '../../src/core/errors.ts';
import type { Message, Principal } from '../../src/core/message.ts';
import { Metrics } from '../../src/core/metrics.ts';
import { Router } from '../../src/core/router.ts';
import { SYSTEM_CALLER } from '../support/callers.ts';

// The router without Redis or transports: two small in-memory endpoints stand in for a transport
// that dedups on ingress itself (like queue:) and one that does not (like webhook:), and an
// in-memory dedup store stands in for Redis. What is checked is what a door sees.

const anyPath = (expected: string) => ({ expected, check: (p: string) => (/^[\w.-]+$/.test(p) ? undefined : 'letters, digits, . and - only') });
registerScheme({ scheme: 'memq', ...anyPath('memq:<name>') });
registerScheme({ scheme: 'memx', ...anyPath('memx:<name>') });
registerScheme({ scheme: 'nobody', ...anyPath('nobody:<name>') });

const OPS: Principal = { kind: 'user', name: 'ops' };
const CALLER = { principal: OPS, door: 'http' as const };

/** An endpoint that keeps what it is sent; `dedups` says whether it checks ids itself. */
class MemoryEndpoint implements Endpoint {
  readonly sent: Message[] = [];
  private readonly ids = new Set<string>();
  constructor(readonly scheme: string, readonly dedupsOnIngress: boolean) {}

  async send(message: Message): Promise<SendResult> {
    if (this.dedupsOnIngress) {
      const key = `${message.to} ${message.id}`;
      if (this.ids.has(key)) return { id: message.id, duplicate: true };
      this.ids.add(key);
    }
    this.sent.push(message);
    return { id: message.id, duplicate: false };
  }

  async browse(address: string, limit: number): Promise<BrowseResult> {
    const messages = this.sent.filter((m) => m.to === address);
    return { address, depth: messages.length, messages: messages.slice(0, limit) };
  }

  async deadLetters(address: string): Promise<BrowseResult> {
    return { address: `dlq:${address}`, depth: 0, messages: [] };
  }

  async health() {
    return { ok: true };
  }

  async close() {}
}

/** The dedup store's contract (seen before send, remember after) in memory. */
class MemoryDedup {
  readonly remembered = new Set<string>();
  entry(scope: string, id: string) {
    return { scope, key: `${scope} ${id}` };
  }
  async seenEntry(e: { key: string }) {
    return this.remembered.has(e.key);
  }
  async rememberEntry(e: { key: string }) {
    this.remembered.add(e.key);
  }
}

function message(to: string, id: string, body: unknown = { id }): Message {
  return { id, to, sender: OPS, headers: {}, body, createdAt: new Date().toISOString() } as Message;
}

/** A router with the two in-memory endpoints registered; built in one place, as its constructor may grow options. */
function setup() {
  const dedup = new MemoryDedup();
  const metrics = new Metrics(async () => ({}));
  const router = new Router(dedup as unknown as DedupStore, metrics, pino({ level: 'silent' }));
  const queue = new MemoryEndpoint('memq', true);
  const hook = new MemoryEndpoint('memx', false);
  router.register(queue);
  router.register(hook);
  return { router, dedup, metrics, queue, hook };
}

async function counter(metrics: Metrics, name: string, endpoint: string): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return metric?.values.find((v) => v.labels.endpoint === endpoint)?.value ?? 0;
}

describe('Router: dispatch by scheme', () => {
  test('a message goes to the endpoint registered for its address scheme, and only there', async () => {
    const { router, queue, hook } = setup();
    assert.deepEqual(await router.send(message('memq:orders', 'm1'), CALLER), { id: 'm1', duplicate: false });
    assert.deepEqual(await router.send(message('memx:hook', 'm2'), CALLER), { id: 'm2', duplicate: false });
    assert.deepEqual(queue.sent.map((m) => m.id), ['m1']);
    assert.deepEqual(hook.sent.map((m) => m.id), ['m2']);
  });

  test('the schemes it serves are the registered endpoints', () => {
    assert.deepEqual(setup().router.schemes.sort(), ['memq', 'memx']);
  });

  test('browse reaches the endpoint of the address; dlq:<address> reaches that endpoint\'s dead letters', async () => {
    const { router } = setup();
    await router.send(message('memq:orders', 'm1'), CALLER);
    const browsed = await router.browse('memq:orders', 10, SYSTEM_CALLER);
    assert.equal(browsed.depth, 1);
    assert.equal((await router.browse('dlq:memq:orders', 10, SYSTEM_CALLER)).address, 'dlq:memq:orders');
  });

  test('a scheme no endpoint serves in this gateway is an UnknownScheme error listing the ones it has', async () => {
    const { router } = setup();
    await assert.rejects(router.send(message('nobody:x', 'm1'), CALLER), (err: unknown) => {
      assert.ok(err instanceof UnknownScheme, String(err));
      assert.equal(err.scheme, 'nobody');
      assert.match(err.message, /memq/);
      assert.match(err.message, /memx/);
      return true;
    });
    assert.throws(() => router.check('nobody:x'), UnknownScheme);
  });

  test('an address with a scheme nobody registered is an AddressError before any endpoint is asked', async () => {
    const { router, queue, hook } = setup();
    await assert.rejects(router.send(message('nowhere:x', 'm1'), CALLER), AddressError);
    assert.equal(queue.sent.length + hook.sent.length, 0);
  });
});

describe('Router: idempotent receiver around endpoints that do not dedup themselves', () => {
  test('the same id twice to such an endpoint is accepted twice and delivered once', async () => {
    const { router, hook, metrics } = setup();
    assert.deepEqual(await router.send(message('memx:hook', 'same'), CALLER), { id: 'same', duplicate: false });
    assert.deepEqual(await router.send(message('memx:hook', 'same', { again: true }), CALLER), { id: 'same', duplicate: true });
    assert.equal(hook.sent.length, 1);
    assert.equal(await counter(metrics, 'switchboard_duplicates_total', 'memx'), 1);
    assert.equal(await counter(metrics, 'switchboard_messages_in_total', 'memx'), 1);
  });

  test('dedup is per destination: the same id to another address is delivered', async () => {
    const { router, hook } = setup();
    await router.send(message('memx:a', 'same'), CALLER);
    await router.send(message('memx:b', 'same'), CALLER);
    assert.deepEqual(hook.sent.map((m) => m.to), ['memx:a', 'memx:b']);
  });

  test('an endpoint that dedups on ingress is trusted: the router keeps no ids for it', async () => {
    const { router, queue, dedup } = setup();
    await router.send(message('memq:orders', 'same'), CALLER);
    assert.deepEqual(await router.send(message('memq:orders', 'same'), CALLER), { id: 'same', duplicate: true });
    assert.equal(queue.sent.length, 1);
    assert.equal(dedup.remembered.size, 0);
  });

  test('an id is remembered only after the endpoint accepted: a failed send can be retried', async () => {
    const { router, hook, dedup } = setup();
    const send = hook.send.bind(hook);
    let fail = true;
    hook.send = async (m) => {
      if (fail) throw new Error('destination down');
      return send(m);
    };
    await assert.rejects(router.send(message('memx:hook', 'retry-me'), CALLER), /destination down/);
    assert.equal(dedup.remembered.size, 0);
    fail = false;
    assert.deepEqual(await router.send(message('memx:hook', 'retry-me'), CALLER), { id: 'retry-me', duplicate: false });
    assert.equal(hook.sent.length, 1);
  });
});

describe('Router: dead-letter queues', () => {
  test('dlq: addresses are not writable: a send is a ValidationError and reaches no endpoint', async () => {
    const { router, queue } = setup();
    await assert.rejects(router.send(message('dlq:memq:orders', 'm1'), CALLER), (err: unknown) => {
      assert.ok(err instanceof ValidationError, String(err));
      assert.match(err.message, /dead-letter queues are written by Switchboard only/);
      return true;
    });
    assert.equal(queue.sent.length, 0);
  });

  test('dlq:<address> is served where <address> is; the router hands out no endpoint', () => {
    const { router } = setup();
    assert.doesNotThrow(() => router.check('dlq:memq:orders'));
    assert.throws(() => router.check('dlq:nobody:x'), UnknownScheme);
    // A door holding an endpoint could send around the pipeline: no public member returns one.
    const publicMembers = Object.getOwnPropertyNames(Object.getPrototypeOf(router)).filter((k) => k !== 'constructor' && k !== 'resolve' && k !== 'dispatch');
    assert.ok(!publicMembers.includes('endpoints'));
  });
});

describe('Router: one guard decides every act besides a send', () => {
  /** Counts what reached the endpoint, so a refusal can be shown to have changed and read nothing. */
  function counted() {
    const s = setup();
    let reads = 0;
    const browse = s.queue.browse.bind(s.queue);
    s.queue.browse = async (a, l) => { reads++; return browse(a, l); };
    const dead = s.queue.deadLetters.bind(s.queue);
    s.queue.deadLetters = async (a) => { reads++; return dead(a); };
    return { ...s, reads: () => reads };
  }

  test('built without a guard, a client door may not browse or read dead letters (default deny); the gateway\'s own doors may', async () => {
    const { router, reads } = counted();
    for (const door of ['http', 'amqp', 'peer', 'webhook', 'broker'] as const) {
      const caller = { principal: OPS, door };
      assert.equal(router.allows('browse', 'memq:orders', caller), false, door);
      await assert.rejects(router.browse('memq:orders', 10, caller), (err: unknown) => err instanceof Error && /ops may not browse on memq:orders/.test(err.message), door);
      await assert.rejects(router.browse('dlq:memq:orders', 10, caller), /may not browse on memq:orders/, `${door}: dlq:X is read with X's rights`);
    }
    assert.equal(reads(), 0, 'nothing was read for a refused caller');
    assert.equal(router.allows('browse', 'memq:orders', { principal: { kind: 'route', name: 'r' }, door: 'route' }), true);
    assert.equal((await router.browse('memq:orders', 10, SYSTEM_CALLER)).depth, 0);
    assert.equal(reads(), 1);
  });

  test('with a guard, each act is asked with its name and the address it acts on, and a refusal stops it before the endpoint', async () => {
    const dedup = new MemoryDedup();
    const asked: string[] = [];
    const guard = {
      allows: (action: string, address: string) => action === 'deadLetters' && address === 'memq:open',
      async authorize(action: string, address: string) {
        asked.push(`${action} ${address}`);
        if (!(action === 'deadLetters' && address === 'memq:open')) throw new ValidationError(`refused: ${action} on ${address}`);
      },
    };
    const router = new Router(dedup as unknown as DedupStore, new Metrics(async () => ({})), pino({ level: 'silent' }), [], guard);
    const queue = new MemoryEndpoint('memq', true);
    let reads = 0;
    queue.browse = async () => { reads++; return { address: 'x', depth: 0, messages: [] }; };
    router.register(queue);
    await assert.rejects(router.browse('memq:orders', 5, CALLER), /refused: browse on memq:orders/);
    await assert.rejects(router.browse('dlq:memq:orders', 5, CALLER), /refused: deadLetters on memq:orders/);
    assert.equal((await router.browse('dlq:memq:open', 5, CALLER)).address, 'dlq:memq:open');
    assert.equal(reads, 0);
    assert.deepEqual(asked, ['browse memq:orders', 'deadLetters memq:orders', 'deadLetters memq:open']);
    assert.equal(router.allows('deadLetters', 'memq:open', CALLER), true);
    assert.equal(router.allows('browse', 'memq:open', SYSTEM_CALLER), false, 'with a guard, the guard answers for every door');
  });
});
