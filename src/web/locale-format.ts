/**
 * Numbers and dates of a task's data as its reader writes them: `12500` reads "12,500" in en-GB
 * and "12.500" in de-DE; `2026-11-25T09:21:10Z` reads "25 Nov 2026, 09:21". The locale comes from
 * the browser's Accept-Language header. Only JSON numbers and ISO dates are formatted: a string of
 * digits (an IBAN, a reference, a postcode) is someone's identifier and stays as it was typed.
 */

/** The locale when the reader's header names none we can format for. */
export const FALLBACK_LOCALE = 'en-GB';

/** A cell of a task's data table: the text to show and, when it was formatted, the raw value. */
export interface FormattedValue {
  /** What the reader sees. */
  text: string;
  /** The value as the flow gave it, for a title attribute or `<data value>`; only when `text` differs in form. */
  raw?: string;
  /** `number` and `date`/`datetime` were formatted for the locale; `text` was shown as it is. */
  kind: 'text' | 'number' | 'date' | 'datetime';
}

export interface LocaleFormatOptions {
  /**
   * The time zone date-times are shown in. The server does not know the reader's zone, so one
   * zone for everyone; the raw value (with its offset) stays in the page.
   * @defaultValue 'UTC'
   */
  timeZone?: string;
}

/**
 * The reader's locale from an Accept-Language header (`de-CH,de;q=0.9,en;q=0.8`): the first, by
 * q-value, that Intl can format for; {@link FALLBACK_LOCALE} when there is none.
 *
 * @example readerLocale('de-DE,de;q=0.9') // 'de-DE'
 */
export function readerLocale(acceptLanguage: string | undefined): string {
  if (!acceptLanguage) return FALLBACK_LOCALE;
  const ranked = acceptLanguage
    .slice(0, 500)
    .split(',')
    .map((part, i) => {
      const [tag = '', ...params] = part.trim().split(';');
      const q = params.map((p) => /^\s*q=([0-9.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
      return { tag: tag.trim(), q: q === undefined ? 1 : Number(q), i };
    })
    .filter((l) => l.tag && l.tag !== '*' && /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/.test(l.tag) && l.q > 0)
    .sort((a, b) => b.q - a.q || a.i - b.i);
  for (const { tag } of ranked) {
    try {
      const [supported] = Intl.NumberFormat.supportedLocalesOf([tag]);
      if (supported) return supported;
    } catch {
      // A tag Intl refuses (structurally valid, semantically not): try the next one.
    }
  }
  return FALLBACK_LOCALE;
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}$/;
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;

const formats = new Map<string, Intl.NumberFormat | Intl.DateTimeFormat>();
function cached<T extends Intl.NumberFormat | Intl.DateTimeFormat>(key: string, make: () => T): T {
  let f = formats.get(key);
  if (!f) {
    // A handful of locales in practice; the cap only keeps a flood of odd headers from growing it.
    if (formats.size > 200) formats.clear();
    f = make();
    formats.set(key, f);
  }
  return f as T;
}

/** Formats a number for a locale (up to 10 decimals, grouped thousands). */
export function formatNumber(n: number, locale: string): string {
  return cached(`n|${locale}`, () => new Intl.NumberFormat(locale, { maximumFractionDigits: 10 })).format(n);
}

/**
 * One value of a task's data for its reader: finite numbers grouped, ISO dates and date-times
 * in the locale's medium style, objects as compact JSON, everything else as text.
 *
 * @example formatValue(12500, 'en-GB') // { text: '12,500', raw: '12500', kind: 'number' }
 */
export function formatValue(v: unknown, locale: string, options: LocaleFormatOptions = {}): FormattedValue {
  if (v === null || v === undefined) return { text: '', kind: 'text' };
  if (typeof v === 'number' && Number.isFinite(v)) {
    const text = formatNumber(v, locale);
    return text === String(v) ? { text, kind: 'number' } : { text, raw: String(v), kind: 'number' };
  }
  if (typeof v === 'string') {
    const timeZone = options.timeZone ?? 'UTC';
    if (ISO_DATE.test(v) && !Number.isNaN(Date.parse(v))) {
      // A calendar date has no zone: formatted in UTC so that it is the same day everywhere.
      const f = cached(`d|${locale}`, () => new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeZone: 'UTC' }));
      return { text: f.format(new Date(`${v}T00:00:00Z`)), raw: v, kind: 'date' };
    }
    if (ISO_DATE_TIME.test(v) && !Number.isNaN(Date.parse(v))) {
      const f = cached(`t|${locale}|${timeZone}`, () => new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short', timeZone }));
      return { text: f.format(new Date(v)), raw: v, kind: 'datetime' };
    }
    return { text: v, kind: 'text' };
  }
  if (typeof v === 'object') return { text: JSON.stringify(v), kind: 'text' };
  return { text: String(v), kind: 'text' };
}
