import '../../src/schemes.ts';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Permissions, type PermissionRule } from '../../src/auth/permissions.ts';
import { AddressError, ValidationError } from '../../src/core/errors.ts';
import type { Principal } from '../../src/core/message.ts';
import type { FieldKind } from '../../src/core/task.ts';
import { dueDate, escalationTarget, mayAct, maySee, placeOf, taskAddress, validateFields, validateFieldSpec } from '../../src/people/task-rules.ts';

const user = (name: string, groups: string[] = []): Principal => ({ kind: 'user', name, groups });
const rule = (r: Omit<PermissionRule, 'source'>): PermissionRule => ({ source: 'config', ...r });
const refused = (pattern: RegExp) => (err: unknown) => err instanceof ValidationError && err.status === 400 && pattern.test(err.message);

const FORM: Record<string, FieldKind> = { note: 'text', amount: 'number', payOn: 'date', priority: { choice: ['low', 'high'] } };

describe('validateFields: submitted values against the task form', () => {
  test('text, number, date and choice values come back typed', () => {
    assert.deepEqual(validateFields(FORM, { note: 'ok', amount: '12.5', payOn: '2026-12-31', priority: 'high' }), { note: 'ok', amount: 12.5, payOn: '2026-12-31', priority: 'high' });
    assert.deepEqual(validateFields(FORM, { amount: 3 }), { amount: 3 });
  });

  test('no values, and empty values, are no fields', () => {
    assert.deepEqual(validateFields(FORM, undefined), {});
    assert.deepEqual(validateFields(FORM, null), {});
    assert.deepEqual(validateFields(FORM, { note: '', amount: null }), {});
  });

  test('values of the wrong kind are refused, naming the field and what it expects', () => {
    assert.throws(() => validateFields(FORM, { note: 42 }), refused(/field 'note' must be text/));
    assert.throws(() => validateFields(FORM, { note: 'x'.repeat(10_001) }), refused(/at most 10000 characters/));
    assert.throws(() => validateFields(FORM, { amount: 'lots' }), refused(/field 'amount' must be a number, got "lots"/));
    assert.throws(() => validateFields(FORM, { amount: Infinity }), refused(/must be a number/));
    assert.throws(() => validateFields(FORM, { payOn: 'tomorrow' }), refused(/field 'payOn' must be a date like 2026-12-31/));
    assert.throws(() => validateFields(FORM, { payOn: '2026-13-45' }), refused(/must be a date/));
    assert.throws(() => validateFields(FORM, { priority: 'urgent' }), refused(/field 'priority' must be one of low, high, got "urgent"/));
  });

  test('fields that are not an object are refused', () => {
    assert.throws(() => validateFields(FORM, 'note=ok'), refused(/'fields' must be an object/));
    assert.throws(() => validateFields(FORM, ['ok']), refused(/'fields' must be an object/));
  });

  test('an unknown field is refused, listing the fields the task has', () => {
    assert.throws(() => validateFields(FORM, { colour: 'red' }), refused(/unknown field 'colour' \(this task has: note, amount, payOn, priority\)/));
    assert.throws(() => validateFields({}, { colour: 'red' }), refused(/this task has: no fields/));
  });

  test('constructor, __proto__ and inherited names are refused with a ValidationError, never a crash', () => {
    assert.throws(() => validateFields(FORM, { constructor: 'x' }), refused(/field 'constructor' is a reserved name/));
    assert.throws(() => validateFields(FORM, JSON.parse('{"__proto__": {"polluted": true}}')), refused(/field '__proto__' is a reserved name/));
    assert.throws(() => validateFields(FORM, { prototype: 'x' }), refused(/reserved name/));
    assert.throws(() => validateFields(FORM, { toString: 'x' }), refused(/unknown field 'toString'/));
    assert.throws(() => validateFields(FORM, { hasOwnProperty: 'x' }), refused(/unknown field 'hasOwnProperty'/));
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test('a stored form carrying a reserved name still cannot be filled in through it', () => {
    const stored = JSON.parse('{"__proto__": "text", "constructor": "text"}') as Record<string, FieldKind>;
    assert.throws(() => validateFields(stored, JSON.parse('{"__proto__": "x"}')), refused(/reserved name/));
    assert.throws(() => validateFields(stored, { constructor: 'x' }), refused(/reserved name/));
  });
});

describe('validateFieldSpec: the form a task asks for', () => {
  test('text, number, date and {choice} are accepted; none is no fields', () => {
    assert.deepEqual(validateFieldSpec(FORM), FORM);
    assert.deepEqual(validateFieldSpec(undefined), {});
  });

  test('an unknown kind, or a choice that is not a list of strings, is refused', () => {
    assert.throws(() => validateFieldSpec({ when: 'time' }), refused(/task field 'when': expected text, number, date or \{choice/));
    assert.throws(() => validateFieldSpec({ p: { choice: [1, 2] } }), refused(/task field 'p'/));
    assert.throws(() => validateFieldSpec({ p: null }), refused(/task field 'p'/));
    assert.throws(() => validateFieldSpec(['text']), refused(/task 'fields' must be an object/));
  });

  test('constructor and __proto__ are refused as field names', () => {
    assert.throws(() => validateFieldSpec({ constructor: 'text' }), refused(/task field 'constructor' is a reserved name/));
    assert.throws(() => validateFieldSpec(JSON.parse('{"__proto__": "text"}')), refused(/task field '__proto__' is a reserved name/));
  });
});

describe('dueDate: when a task is due', () => {
  const created = '2026-01-01T00:00:00.000Z';
  test('a duration counts from the task creation', () => {
    assert.equal(dueDate('4h', created), '2026-01-01T04:00:00.000Z');
    assert.equal(dueDate('30m', created), '2026-01-01T00:30:00.000Z');
    assert.equal(dueDate('2d', created), '2026-01-03T00:00:00.000Z');
  });

  test('an ISO date or date-time is taken as it is, normalised to UTC', () => {
    assert.equal(dueDate('2026-03-01', created), '2026-03-01T00:00:00.000Z');
    assert.equal(dueDate('2026-03-01T10:00:00+02:00', created), '2026-03-01T08:00:00.000Z');
  });

  test('anything else is refused, saying what is expected', () => {
    assert.throws(() => dueDate('soon', created), refused(/task 'due' must be a duration like 4h or an ISO date-time, got "soon"/));
    assert.throws(() => dueDate('2026-13-45', created), refused(/task 'due' must be/));
  });
});

describe('escalationTarget: where an overdue task goes', () => {
  test('a person: or group: address', () => {
    assert.equal(escalationTarget('person:head-of-payments'), 'person:head-of-payments');
    assert.equal(escalationTarget('group:payment-approvers'), 'group:payment-approvers');
  });

  test('another scheme is refused; a malformed address is an AddressError', () => {
    assert.throws(() => escalationTarget('queue:orders'), refused(/task 'escalateTo' must be a person: or group: address, got 'queue:orders'/));
    assert.throws(() => escalationTarget('person:'), AddressError);
    assert.throws(() => escalationTarget('nonsense'), AddressError);
  });
});

describe('who may act on a task', () => {
  const permissions = new Permissions([
    rule({ id: 'r1', group: 'approvers', address: 'group:payment-approvers', verbs: ['consume'] }),
    rule({ id: 'r2', user: 'deputy', address: 'person:alice', verbs: ['consume'] }),
    rule({ id: 'r3', group: 'auditors', address: 'group:**', verbs: ['browse'] }),
    rule({ id: 'r4', group: 'auditors', address: 'person:**', verbs: ['browse'] }),
  ]);
  const alicesTask = { assignee: 'alice' };
  const groupTask = { group: 'payment-approvers' };

  test('the assignee acts on their own task; a user with consume on person:<them> may too', () => {
    assert.equal(mayAct(permissions, user('alice'), alicesTask), true);
    assert.equal(mayAct(permissions, user('deputy'), alicesTask), true);
    assert.equal(mayAct(permissions, user('bob'), alicesTask), false);
  });

  test('a peer or system principal named like the assignee is not the assignee', () => {
    assert.equal(mayAct(permissions, { kind: 'peer', name: 'alice' } as Principal, alicesTask), false);
  });

  test('a group task: whoever may consume from group:<name>', () => {
    assert.equal(mayAct(permissions, user('bob', ['approvers']), groupTask), true);
    assert.equal(mayAct(permissions, user('carol', ['sales']), groupTask), false);
  });

  test('browse lets a user see a task but not act on it', () => {
    const auditor = user('erin', ['auditors']);
    assert.equal(mayAct(permissions, auditor, groupTask), false);
    assert.equal(maySee(permissions, auditor, groupTask), true);
    assert.equal(maySee(permissions, auditor, alicesTask), true);
    assert.equal(maySee(permissions, user('carol', ['sales']), groupTask), false);
  });

  test('a task sits at person:<user> or group:<group>', () => {
    assert.equal(taskAddress(alicesTask), 'person:alice');
    assert.equal(taskAddress(groupTask), 'group:payment-approvers');
    assert.deepEqual(placeOf({ assignee: 'alice', group: undefined }), { assignee: 'alice' });
    assert.deepEqual(placeOf({ group: 'payment-approvers' }), { group: 'payment-approvers' });
  });
});
