// <clarion-toasts>: new notifications as toasts while the page is open. The kind comes from
// the producer's metadata.toast, else from the severity; each kind has its own time on
// screen, paused while the pointer or focus is on the toast.

import { ClarionElement, h, icon, ICONS, navigate } from './base.js';
import { TOASTS_CSS } from './styles.js';

export const KINDS = ['success', 'info', 'warning', 'error'];
export const DURATION = { success: 5000, info: 5000, warning: 7000, error: 8000 };
const BY_SEVERITY = { low: 'info', medium: 'info', high: 'warning', critical: 'error' };
const MAX_AGE = 60_000; // an old notification replayed after a reconnect is not news
const MAX_SHOWN = 4;

/** A notification's toast kind. */
export function toastKind(n) {
  const asked = n?.metadata?.toast;
  if (KINDS.includes(asked)) return asked;
  return BY_SEVERITY[n?.severity] || 'info';
}

export class ClarionToasts extends ClarionElement {
  constructor() {
    super(TOASTS_CSS);
    this.timers = new Map();
  }

  setup() {
    this.listen(this.client, 'notification', (n) => this.maybeShow(n));
    this.client.connect();
  }

  teardown() {
    for (const t of this.timers.values()) clearTimeout(t.id);
    this.timers.clear();
  }

  render() {
    // Two live regions: errors interrupt (assertive), the rest wait their turn (polite).
    this.polite = h('div', { class: 'region', role: 'status', 'aria-live': 'polite', part: 'region' });
    this.assertive = h('div', { class: 'region', role: 'alert', 'aria-live': 'assertive', part: 'region' });
    this.shadowRoot.replaceChildren(this.polite, this.assertive);
  }

  maybeShow(n) {
    if (n.metadata?.toast === false || this.hasAttribute('disabled')) return;
    if (Date.now() - Date.parse(n.created_at) > MAX_AGE) return;
    this.show(n);
  }

  /** Show a toast for a notification (or anything with title/body/severity/url). */
  show(n) {
    const kind = toastKind(n);
    const action = Array.isArray(n.actions) && n.actions[0];
    const open = n.url && !action;
    const toast = h('div', {
      class: 'toast', part: `toast toast-${kind}`, 'data-kind': kind, 'data-id': n.id || '', tabindex: '-1',
    },
    h('div', { class: 'body' },
      h('div', { class: 'title', part: 'toast-title', text: n.title }),
      n.body ? h('div', { class: 'text', part: 'toast-body', text: n.body }) : null,
      action || open ? h('button', {
        class: 'btn', part: 'toast-action', text: action ? action.label : this.t('toast.open'),
        on: { click: () => this.act(toast, n, action) },
      }) : null),
    h('button', {
      class: 'close', part: 'toast-close', 'aria-label': this.t('toast.dismiss'),
      on: { click: () => this.dismiss(toast) },
    }, icon(ICONS.close)));
    for (const type of ['mouseenter', 'focusin']) toast.addEventListener(type, () => this.pause(toast));
    for (const type of ['mouseleave', 'focusout']) {
      toast.addEventListener(type, (e) => !toast.contains(e.relatedTarget) && this.resume(toast));
    }
    const region = kind === 'error' ? this.assertive : this.polite;
    region.append(toast);
    const shown = this.shadowRoot.querySelectorAll('.toast');
    if (shown.length > MAX_SHOWN) this.dismiss(shown[0]);
    this.timers.set(toast, { id: null, left: DURATION[kind], since: 0 });
    this.resume(toast);
    return toast;
  }

  pause(toast) {
    const t = this.timers.get(toast);
    if (!t || t.id === null) return;
    clearTimeout(t.id);
    t.id = null;
    t.left -= Date.now() - t.since;
    toast.setAttribute('paused', '');
  }

  resume(toast) {
    const t = this.timers.get(toast);
    if (!t || t.id !== null) return;
    toast.removeAttribute('paused');
    t.since = Date.now();
    t.id = setTimeout(() => this.dismiss(toast), Math.max(0, t.left));
  }

  dismiss(toast) {
    const t = this.timers.get(toast);
    if (t) clearTimeout(t.id);
    this.timers.delete(toast);
    toast.remove();
  }

  async act(toast, n, action) {
    this.dismiss(toast);
    if (action) {
      const answer = await this.client.action(n.id, action.id).catch(() => null);
      navigate(this, answer?.url || action.url, n);
      return;
    }
    if (!n.read_at) await this.client.markRead(n.id).catch(() => {});
    navigate(this, n.url, n);
  }
}

customElements.get('clarion-toasts') || customElements.define('clarion-toasts', ClarionToasts);
