import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { buildCloudEvent, defaultMode, eventId, eventMessage, isEventId, withoutSecrets } from '../../src/events/cloudevent.ts';
import { ALL_EVENT_TYPES, EventTypePatternError, matchesType, parseTypePattern } from '../../src/events/event-types.ts';
import { claimedEventType } from '../../src/events/forged-events.ts';
import { toAmqp } from '../../src/amqp/mapping.ts';

const SOURCE = 'https://switchboard.example.com';
const completed = { type: 'switchboard.flow.completed', subject: 'flow:payment/abc', key: 'abc', data: { flow: 'payment', instanceId: 'abc', startedBy: 'user:dana' } };

describe('CloudEvents builder', () => {
  test('a structured event has every required attribute of CloudEvents 1.0, the subject and the data', () => {
    const e = buildCloudEvent(completed, SOURCE, new Date('2026-01-02T03:04:05.000Z'));
    assert.deepEqual(e, {
      specversion: '1.0', id: eventId(completed.type, 'abc'), source: SOURCE, type: 'switchboard.flow.completed', subject: 'flow:payment/abc',
      time: '2026-01-02T03:04:05.000Z', datacontenttype: 'application/json', data: { flow: 'payment', instanceId: 'abc', startedBy: 'user:dana' },
    });
  });

  test('the same change reported twice has the same id; another change or another type has another', () => {
    assert.equal(buildCloudEvent(completed, SOURCE).id, buildCloudEvent({ ...completed, data: {} }, SOURCE).id);
    assert.notEqual(buildCloudEvent(completed, SOURCE).id, buildCloudEvent({ ...completed, key: 'other' }, SOURCE).id);
    assert.notEqual(buildCloudEvent(completed, SOURCE).id, buildCloudEvent({ ...completed, type: 'switchboard.flow.failed' }, SOURCE).id);
    // The id is a valid message id (visible ASCII, no spaces) and does not reveal the key.
    assert.match(eventId('t', 'secret-key'), /^ev-[A-Za-z0-9_-]{32}$/);
    assert.ok(isEventId(eventId('t', 'k')));
    assert.ok(!isEventId('order-17') && !isEventId(undefined) && !isEventId(`${eventId('t', 'k')}x`));
  });

  test('no secrets: credential-like fields at any depth, reply tokens and URL credentials are dropped', () => {
    const data = {
      flow: 'payment', token: 't0k3n', password: 'pw', clientSecret: 's', nonce: 'n', replyToken: 'r', signature: 'sig', authorization: 'Basic x',
      correlationId: 'abc', replyTo: 'queue:x',
      nested: { apiKey: 'k', ok: 1, list: [{ sessionId: 's', keep: 'yes' }] },
      reply: 'Zm9vYmFyYmF6cXV4cXV1eA:3:AbCdEfGh12345678',
      reason: 'POST https://user:hunter2@hooks.example.com/in?token=abc failed: 500',
    };
    const clean = withoutSecrets(data) as Record<string, unknown>;
    assert.deepEqual(clean, { flow: 'payment', nested: { ok: 1, list: [{ keep: 'yes' }] }, reason: 'POST https://hooks.example.com/in failed: 500' });
    const text = JSON.stringify(buildCloudEvent({ ...completed, data }, SOURCE));
    for (const secret of ['t0k3n', 'hunter2', 'token=abc', 'AbCdEfGh12345678', 'Basic x']) assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  });

  test('structured mode: the whole event is the body, as application/cloudevents+json, sent by the gateway', () => {
    const e = buildCloudEvent(completed, SOURCE);
    const m = eventMessage(e, 'topic:ops.events', 'structured');
    assert.equal(m.id, e.id);
    assert.equal(m.to, 'topic:ops.events');
    assert.equal(m.contentType, 'application/cloudevents+json');
    assert.deepEqual(m.body, e);
    assert.deepEqual(m.sender, { kind: 'system', name: 'switchboard' });
  });

  test('binary mode over AMQP: cloudEvents:* application properties, datacontenttype as content-type, data as the body', () => {
    const e = buildCloudEvent(completed, SOURCE);
    const m = eventMessage(e, 'mq:legacy/events', 'binary');
    const a = toAmqp(m);
    const props = a.application_properties as Record<string, unknown>;
    assert.equal(props['cloudEvents:specversion'], '1.0');
    assert.equal(props['cloudEvents:id'], e.id);
    assert.equal(props['cloudEvents:type'], 'switchboard.flow.completed');
    assert.equal(props['cloudEvents:source'], SOURCE);
    assert.equal(props['cloudEvents:subject'], 'flow:payment/abc');
    assert.equal(props['cloudEvents:time'], e.time);
    assert.equal(props['cloudEvents:datacontenttype'], undefined);
    assert.equal(props['cloudEvents:data'], undefined);
    assert.equal(a.content_type, 'application/json');
    assert.equal(a.message_id, e.id);
    const section = a.body as { content: Buffer };
    assert.deepEqual(JSON.parse(section.content.toString('utf8')), e.data);
  });

  test('default mode: binary for mq:, structured elsewhere', () => {
    assert.equal(defaultMode('mq:legacy/events'), 'binary');
    for (const to of ['topic:ops.events', 'queue:events', 'webhook:siem', 'peer:bank-b/events']) assert.equal(defaultMode(to), 'structured');
  });
});

describe('event type patterns', () => {
  test('* is one segment, ** any rest, an exact type only itself', () => {
    const flows = parseTypePattern('switchboard.flow.*');
    assert.ok(matchesType(flows, 'switchboard.flow.completed'));
    assert.ok(!matchesType(flows, 'switchboard.task.created'));
    assert.ok(!matchesType(flows, 'switchboard.flow'));
    const all = parseTypePattern('switchboard.**');
    assert.ok(ALL_EVENT_TYPES.every((t) => matchesType(all, t)));
    const ends = parseTypePattern('switchboard.*.failed');
    assert.deepEqual(ALL_EVENT_TYPES.filter((t) => matchesType(ends, t)), ['switchboard.flow.failed']);
    const one = parseTypePattern('switchboard.message.dead-lettered');
    assert.deepEqual(ALL_EVENT_TYPES.filter((t) => matchesType(one, t)), ['switchboard.message.dead-lettered']);
  });

  test('a malformed pattern, or one that matches no event type, is refused with the reason', () => {
    assert.throws(() => parseTypePattern('switchboard.flw.*'), (e: unknown) => e instanceof EventTypePatternError && /matches no event type/.test(e.message));
    assert.throws(() => parseTypePattern('switchboard.**.failed'), /'\*\*' may only be the last segment/);
    assert.throws(() => parseTypePattern('switchboard.flow.compl*'), /whole-segment wildcard/);
    assert.throws(() => parseTypePattern('switchboard..x'), /empty segment/);
  });
});

describe('forged events', () => {
  test('a claimed type is read from binary properties in any spelling and from a structured body', () => {
    for (const k of ['cloudEvents:type', 'cloudEvents_type', 'ce_type', 'ce-type', 'CLOUDEVENTS:TYPE']) {
      assert.equal(claimedEventType({ headers: { [k]: 'switchboard.flow.completed' }, contentType: 'application/json', body: {} }), 'switchboard.flow.completed');
    }
    assert.equal(claimedEventType({ headers: {}, contentType: 'application/cloudevents+json', body: { type: 'switchboard.task.decided' } }), 'switchboard.task.decided');
    assert.equal(claimedEventType({ headers: {}, contentType: 'application/json', body: { type: 'switchboard.task.decided' } }), undefined);
  });
});

describe('config: events', () => {
  const base = 'http: { port: 3000 }\nredis: { url: "redis://127.0.0.1:6379" }\n';
  function problems(yaml: string): string {
    try {
      parseConfig(base + yaml, 'events.yaml', {});
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.message;
    }
    assert.fail('expected a ConfigError');
  }

  test('a valid mapping parses, mode optional', () => {
    const c = parseConfig(`${base}events:\n  - { types: ['switchboard.flow.*', 'switchboard.task.decided'], to: 'topic:ops.events' }\n  - { types: ['switchboard.**'], to: 'mq:legacy/events', mode: structured }\n`, 'events.yaml', {});
    assert.deepEqual(c.events, [{ types: ['switchboard.flow.*', 'switchboard.task.decided'], to: 'topic:ops.events' }, { types: ['switchboard.**'], to: 'mq:legacy/events', mode: 'structured' }]);
    assert.deepEqual(parseConfig(base, 'events.yaml', {}).events, []);
  });

  test('an unknown type, a bad address, an unknown key, a bad mode and no types are each named', () => {
    assert.match(problems("events: [{ types: ['switchboard.flw.*'], to: 'topic:ops' }]"), /events\[0\]\.types\[0\].*'switchboard\.flw\.\*': matches no event type/s);
    assert.match(problems("events: [{ types: ['switchboard.**'], to: 'ops-events' }]"), /events\[0\]\.to.*expected an address/s);
    assert.match(problems("events: [{ types: ['switchboard.**'], to: 'topic:ops', filter: x }]"), /events\[0\].*filter/s);
    assert.match(problems("events: [{ types: ['switchboard.**'], to: 'topic:ops', mode: json }]"), /events\[0\]\.mode/s);
    assert.match(problems("events: [{ types: [], to: 'topic:ops' }]"), /events\[0\]\.types.*at least one event type/s);
  });
});
