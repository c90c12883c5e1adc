import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FALLBACK_LOCALE, formatValue, readerLocale } from '../../src/web/locale-format.ts';

describe("the reader's locale from Accept-Language", () => {
  test('the first language Intl can format for, by q-value', () => {
    assert.equal(readerLocale('en-GB'), 'en-GB');
    assert.equal(readerLocale('de-DE,de;q=0.9,en;q=0.8'), 'de-DE');
    assert.equal(readerLocale('en;q=0.5, fr-CH;q=0.9'), 'fr-CH');
  });

  test('en-GB when the header is missing, empty, a wildcard or nonsense', () => {
    assert.equal(FALLBACK_LOCALE, 'en-GB');
    for (const h of [undefined, '', '*', ';;;,,,', 'not a language tag!', 'de;q=0', '<script>']) assert.equal(readerLocale(h), 'en-GB', JSON.stringify(h));
  });
});

describe('values of task data for the reader', () => {
  test('amounts are grouped the way the reader writes them, the raw value kept', () => {
    assert.deepEqual(formatValue(12500, 'en-GB'), { text: '12,500', raw: '12500', kind: 'number' });
    assert.equal(formatValue(1250.5, 'en-GB').text, '1,250.5');
    assert.equal(formatValue(12500, 'de-DE').text, '12.500');
    assert.equal(formatValue(0.125, 'en-GB').text, '0.125');
    assert.deepEqual(formatValue(-3, 'en-GB'), { text: '-3', kind: 'number' }, 'no raw value when the text is the value');
  });

  test('ISO date-times in the locale\'s medium style (UTC), dates without shifting the day', () => {
    assert.deepEqual(formatValue('2026-11-25T09:21:10Z', 'en-GB'), { text: '25 Nov 2026, 09:21', raw: '2026-11-25T09:21:10Z', kind: 'datetime' });
    assert.equal(formatValue('2026-11-25T10:21:10.123+01:00', 'en-GB').text, '25 Nov 2026, 09:21');
    assert.equal(formatValue('2026-11-25T09:21:10Z', 'de-DE').text, '25.11.2026, 09:21');
    assert.deepEqual(formatValue('2026-12-31', 'en-GB'), { text: '31 Dec 2026', raw: '2026-12-31', kind: 'date' });
  });

  test('identifiers that look like numbers or dates stay as typed', () => {
    for (const s of ['12500', 'DE89 3704 0044 0532 0130 00', '2026-13-45', '2026-11-25 09:21', '2026-11-25T09:21', 'P-2041']) assert.deepEqual(formatValue(s, 'en-GB'), { text: s, kind: 'text' }, s);
  });

  test('everything else as text: booleans, nothing, nested values as compact JSON, non-finite numbers', () => {
    assert.deepEqual(formatValue(true, 'en-GB'), { text: 'true', kind: 'text' });
    assert.deepEqual(formatValue(null, 'en-GB'), { text: '', kind: 'text' });
    assert.deepEqual(formatValue(undefined, 'en-GB'), { text: '', kind: 'text' });
    assert.deepEqual(formatValue({ a: [1, 2] }, 'en-GB'), { text: '{"a":[1,2]}', kind: 'text' });
    assert.deepEqual(formatValue(Number.NaN, 'en-GB'), { text: 'NaN', kind: 'text' });
  });
});
