// <clarion-bell>: the badge, and a popover with the feed. Opening it marks what it shows
// as seen; Escape or a click outside closes it and focus goes back to the bell.

import { ClarionElement, h, icon, ICONS } from './base.js';
import './feed.js';
import { BELL_CSS } from './styles.js';

export const FEED_PARTS = [
  'header', 'tabs', 'tab', 'status', 'scroller', 'list', 'group', 'group-header', 'item', 'item-unread',
  'item-title', 'item-body', 'time', 'severity', 'unread-dot', 'menu-button', 'menu', 'action',
  'read-all', 'read-all-category', 'empty', 'loading', 'error', 'select',
].join(', ');

/** The badge's text: the count, "99+" above 99, nothing at 0. */
export function badgeText(n) {
  return n > 99 ? '99+' : n > 0 ? String(n) : '';
}

export class ClarionBell extends ClarionElement {
  static get observedAttributes() {
    return ['locale', 'count'];
  }

  constructor() {
    super(BELL_CSS);
    this.open = false;
  }

  setup() {
    this.listen(this.client, 'count', () => this.renderCount());
    this.client.connect();
    // The stream's first event is the count; ask the API if it is slow to come.
    this.fallback = setTimeout(() => {
      if (!this.client.counts) this.client.unreadCount().catch(() => {});
    }, 1500);
    this.outside = (e) => this.open && !e.composedPath().includes(this) && this.close(false);
    this.escape = (e) => {
      if (this.open && e.key === 'Escape' && !e.defaultPrevented) {
        e.preventDefault();
        this.close(true);
      }
    };
    document.addEventListener('pointerdown', this.outside, true);
    document.addEventListener('keydown', this.escape);
  }

  teardown() {
    clearTimeout(this.fallback);
    document.removeEventListener('pointerdown', this.outside, true);
    document.removeEventListener('keydown', this.escape);
  }

  attributeChangedCallback(name, before, after) {
    if (name === 'count') this.renderCount();
    else super.attributeChangedCallback(name, before, after);
  }

  /** The number the badge shows: unread, or unseen with count="unseen". */
  get count() {
    const counts = this.client.counts;
    if (!counts) return 0;
    return this.getAttribute('count') === 'unseen' ? (counts.unseen ?? counts.total) : counts.total;
  }

  render() {
    this.badge = h('span', { class: 'badge', part: 'badge', 'aria-hidden': 'true' });
    this.button = h('button', {
      class: 'bell', part: 'button', type: 'button', 'aria-haspopup': 'dialog', 'aria-expanded': 'false',
      'aria-controls': 'popover',
      on: {
        click: () => (this.open ? this.close(false) : this.show(false)),
        keydown: (e) => {
          if (e.key === 'ArrowDown' && !this.open) {
            e.preventDefault();
            this.show(true);
          }
        },
      },
    }, icon(ICONS.bell), this.badge);
    this.panel = h('div', {
      class: 'popover', part: 'popover', id: 'popover', role: 'dialog', hidden: true,
      'aria-label': this.t('feed.title'),
    });
    if (this.feedEl) this.panel.append(this.feedEl);
    this.shadowRoot.replaceChildren(this.button, this.panel);
    if (this.feedEl) this.feedEl.setAttribute('locale', this.i18n.locale);
    this.renderCount();
    if (this.open) this.panel.hidden = false;
  }

  renderCount() {
    if (!this.badge || !this.i18n) return;
    const n = this.count;
    this.badge.textContent = badgeText(n);
    this.badge.hidden = n === 0;
    this.setAttribute('data-count', String(n));
    this.button.setAttribute('aria-label', n ? this.t('bell.label_count', { count: n }) : this.t('bell.label'));
  }

  /** Open the popover (focus to its first row when opened from the keyboard). */
  show(focus = true) {
    if (!this.feedEl) {
      this.feedEl = h('clarion-feed', {
        compact: true, exportparts: FEED_PARTS, locale: this.i18n.locale,
        tabs: this.getAttribute('tabs') || undefined,
      });
      this.feedEl.client = this.client;
      this.panel.append(this.feedEl);
    }
    this.open = true;
    this.panel.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    this.setAttribute('open', '');
    const seen = () => {
      this.feedEl.markShownSeen();
      if (focus) this.feedEl.focusFirst();
    };
    if (this.feedEl.feed?.state === 'ready') seen();
    else this.feedEl.addEventListener('clarion:rendered', seen, { once: true });
    this.dispatchEvent(new CustomEvent('clarion:open', { bubbles: true, composed: true }));
  }

  /** Close it; focus goes back to the bell when closed from inside. */
  close(refocus = true) {
    if (!this.open) return;
    this.open = false;
    this.panel.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    this.removeAttribute('open');
    if (refocus) this.button.focus();
    this.dispatchEvent(new CustomEvent('clarion:close', { bubbles: true, composed: true }));
  }
}

customElements.get('clarion-bell') || customElements.define('clarion-bell', ClarionBell);
