// What every element shares: its client, its translator, a DOM builder that only ever
// sets text with textContent, and the theme (CSS custom properties, light and dark).

import { ClarionClient } from '../client.js';
import { pickLocale, translator } from '../i18n.js';

const clients = new Map();
let defaultClient = null;

/**
 * Make `client` the one every element without a client of its own uses.
 * @param {ClarionClient|object} clientOrOptions a client, or options for a new one
 */
export function configure(clientOrOptions) {
  defaultClient = clientOrOptions instanceof ClarionClient
    ? clientOrOptions
    : new ClarionClient(clientOrOptions);
  return defaultClient;
}

/** The client of an element: its `client` property, the configured one, or one made from
 * its `api-url` and `token` / `token-url` attributes (shared by elements that agree). */
export function clientFor(element) {
  if (element._client) return element._client;
  const apiUrl = element.getAttribute('api-url') || undefined;
  const token = element.getAttribute('token') || undefined;
  const tokenUrl = element.getAttribute('token-url');
  if (!token && !tokenUrl && defaultClient) return defaultClient;
  const key = `${apiUrl}|${tokenUrl || token}`;
  if (!clients.has(key)) {
    const getToken = tokenUrl ? () => fetchToken(tokenUrl) : undefined;
    clients.set(key, new ClarionClient({ apiUrl, token, getToken }));
  }
  return clients.get(key);
}

/** A `token-url` answers a POST with {"token": "..."} (the site's own session decides who). */
async function fetchToken(url) {
  const answer = await fetch(url, { method: 'POST', credentials: 'include' });
  if (!answer.ok) throw new Error(`token-url answered ${answer.status}`);
  return (await answer.json()).token;
}

/**
 * Build an element. `props` may hold: text (set as textContent), part, class, on: {event: fn},
 * and any attribute (a value of false/null/undefined leaves it out).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key === 'on') for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

/** An SVG icon from a path (static markup, never notification content). */
export function icon(d, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '20');
  svg.setAttribute('height', '20');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', 'currentColor');
  svg.append(path);
  if (label) svg.setAttribute('aria-label', label);
  return svg;
}

export const ICONS = {
  bell: 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z',
  more: 'M6 10.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3Zm6 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3Zm6 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3Z',
  close: 'M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6L19 6.4 17.6 5 12 10.6Z',
  lock: 'M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5Zm-3 8V7a3 3 0 0 1 6 0v3Z',
};

/** Whether a notification's url may be followed: http(s), or relative to the page. */
export function safeUrl(url, base = globalThis.location?.href) {
  if (typeof url !== 'string' || !url.trim()) return null;
  try {
    const parsed = new URL(url, base);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * Go to a notification's url. A cancelable `clarion:navigate` event goes first, so a
 * single-page app can route it itself (event.preventDefault()).
 */
export function navigate(from, url, notification) {
  const href = safeUrl(url);
  if (!href) return false;
  const event = new CustomEvent('clarion:navigate', {
    bubbles: true, composed: true, cancelable: true, detail: { url: href, notification },
  });
  if (from.dispatchEvent(event)) globalThis.location.assign(href);
  return true;
}

const sheets = new Map();

/** A constructable stylesheet (no inline <style>: the page's CSP can forbid inline styles). */
export function sheet(css) {
  if (!sheets.has(css)) {
    const s = new CSSStyleSheet();
    s.replaceSync(css);
    sheets.set(css, s);
  }
  return sheets.get(css);
}

export const THEME = `
:host {
  --_bg: var(--clarion-bg, #ffffff);
  --_fg: var(--clarion-fg, #1b1f24);
  --_muted: var(--clarion-muted, #5b6470);
  --_border: var(--clarion-border, #d9dee4);
  --_hover: var(--clarion-hover, #f2f4f7);
  --_accent: var(--clarion-accent, #2f5bea);
  --_accent-fg: var(--clarion-accent-fg, #ffffff);
  --_unread: var(--clarion-unread-bg, #eef3ff);
  --_badge-bg: var(--clarion-badge-bg, #d92d20);
  --_badge-fg: var(--clarion-badge-fg, #ffffff);
  --_low: var(--clarion-severity-low, #8a94a3);
  --_medium: var(--clarion-severity-medium, #2f5bea);
  --_high: var(--clarion-severity-high, #d97706);
  --_critical: var(--clarion-severity-critical, #d92d20);
  --_radius: var(--clarion-radius, 10px);
  --_shadow: var(--clarion-shadow, 0 10px 30px rgba(16, 24, 40, .18));
  --_focus: var(--clarion-focus, #2f5bea);
  font-family: var(--clarion-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  color: var(--_fg);
  font-size: 14px;
  line-height: 1.4;
}
@media (prefers-color-scheme: dark) {
  :host(:not([theme="light"])) {
    --_bg: var(--clarion-bg, #16191d); --_fg: var(--clarion-fg, #e8eaed);
    --_muted: var(--clarion-muted, #9aa3ad); --_border: var(--clarion-border, #2e343b);
    --_hover: var(--clarion-hover, #20252b); --_unread: var(--clarion-unread-bg, #1b2540);
    --_accent: var(--clarion-accent, #7c9cff); --_accent-fg: var(--clarion-accent-fg, #0b1020);
    --_focus: var(--clarion-focus, #7c9cff);
    --_shadow: var(--clarion-shadow, 0 10px 30px rgba(0, 0, 0, .55));
  }
}
:host([theme="dark"]) {
  --_bg: var(--clarion-bg, #16191d); --_fg: var(--clarion-fg, #e8eaed);
  --_muted: var(--clarion-muted, #9aa3ad); --_border: var(--clarion-border, #2e343b);
  --_hover: var(--clarion-hover, #20252b); --_unread: var(--clarion-unread-bg, #1b2540);
  --_accent: var(--clarion-accent, #7c9cff); --_accent-fg: var(--clarion-accent-fg, #0b1020);
  --_focus: var(--clarion-focus, #7c9cff);
}
[hidden] { display: none !important; }
button { font: inherit; color: inherit; }
:focus-visible { outline: 2px solid var(--_focus); outline-offset: 2px; }
.btn { border: 1px solid var(--_border); background: var(--_bg); border-radius: 6px;
  padding: 4px 10px; cursor: pointer; }
.btn:hover { background: var(--_hover); }
.btn.primary { background: var(--_accent); color: var(--_accent-fg); border-color: var(--_accent); }
.link { border: 0; background: none; color: var(--_accent); cursor: pointer; padding: 2px 4px; }
.muted { color: var(--_muted); }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

/**
 * The base class: a shadow root with the theme, a client, a translator (re-made when the
 * `locale` attribute changes), and listeners removed when the element leaves the page.
 */
export class ClarionElement extends HTMLElement {
  static get observedAttributes() {
    return ['locale'];
  }

  constructor(css = '') {
    super();
    this.attachShadow({ mode: 'open' });
    this.shadowRoot.adoptedStyleSheets = [sheet(THEME), sheet(css)];
    this.offs = [];
  }

  /** The client this element uses (settable: element.client = new ClarionClient(...)). */
  get client() {
    return clientFor(this);
  }

  set client(value) {
    this._client = value;
  }

  async connectedCallback() {
    this.i18n = await translator(pickLocale(this));
    if (!this.isConnected) return;
    this.setup();
    this.render();
  }

  disconnectedCallback() {
    this.offs.forEach((off) => off());
    this.offs = [];
    this.teardown();
  }

  async attributeChangedCallback(name, before, after) {
    if (name === 'locale' && before !== after && this.i18n) {
      this.i18n = await translator(pickLocale(this));
      this.render();
    }
  }

  /** Listen to the client (or anything with on()) until the element leaves the page. */
  listen(source, type, fn) {
    this.offs.push(source.on(type, fn));
  }

  t(key, vars) {
    return this.i18n.t(key, vars);
  }

  setup() {}

  teardown() {}

  render() {}
}
