// Strings from per-locale JSON catalogues (i18n/<locale>.json; adding a locale is adding a
// file), plurals with Intl.PluralRules, times with Intl.RelativeTimeFormat.

const loaded = new Map(); // locale -> Promise<messages|null>

function fetchCatalogue(locale) {
  if (!loaded.has(locale)) {
    const url = new URL(`./i18n/${locale}.json`, import.meta.url);
    loaded.set(locale, fetch(url).then((r) => (r.ok ? r.json() : null)).catch(() => null));
  }
  return loaded.get(locale);
}

/** The locale an element should speak: its `locale` attribute, the page's, the browser's. */
export function pickLocale(element) {
  const own = element?.closest?.('[locale]')?.getAttribute('locale');
  const page = globalThis.document?.documentElement?.lang;
  return own || page || globalThis.navigator?.language || 'en';
}

export class Translator {
  constructor(locale, messages, fallback) {
    this.locale = locale;
    this.messages = messages;
    this.fallback = fallback || {};
    this.plurals = new Intl.PluralRules(locale);
    this.relative = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' });
    this.dates = new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' });
  }

  /**
   * A string; `{name}` is replaced by vars.name. A message that is an object is a plural,
   * chosen by vars.count ({one, few, many, other}).
   */
  t(key, vars = {}) {
    let message = this.messages[key] ?? this.fallback[key] ?? key;
    if (message && typeof message === 'object') {
      const form = this.plurals.select(Number(vars.count) || 0);
      message = message[form] ?? message.other ?? key;
    }
    return String(message).replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  }

  /** A category's name: its catalogue entry if any, else the slug made readable. */
  category(slug) {
    const key = `category.${slug}`;
    if (key in this.messages || key in this.fallback) return this.t(key);
    const words = String(slug).replace(/[_.:-]+/g, ' ').trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  /** "5 minutes ago", "yesterday"; a date beyond four weeks. */
  ago(iso, now = Date.now()) {
    const seconds = Math.round((Date.parse(iso) - now) / 1000);
    const abs = Math.abs(seconds);
    if (abs < 45) return this.relative.format(0, 'second');
    if (abs < 2700) return this.relative.format(Math.round(seconds / 60), 'minute');
    if (abs < 79200) return this.relative.format(Math.round(seconds / 3600), 'hour');
    if (abs < 26 * 86400) return this.relative.format(Math.round(seconds / 86400), 'day');
    return this.dates.format(new Date(iso));
  }

  date(iso) {
    return this.dates.format(new Date(iso));
  }
}

/** The Translator for a locale: the catalogue of the locale, else of its language, else English. */
export async function translator(locale) {
  const english = (await fetchCatalogue('en')) || {};
  const language = locale.split(/[-_]/)[0].toLowerCase();
  const candidates = language === 'en' ? [] : [...new Set([locale, language])];
  for (const candidate of candidates) {
    const messages = await fetchCatalogue(candidate);
    if (messages) return new Translator(locale, messages, english);
  }
  return new Translator(locale.startsWith('en') ? locale : 'en', english, english);
}
