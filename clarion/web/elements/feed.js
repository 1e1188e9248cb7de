// <clarion-feed>: the list the bell's popover and the inbox page share. Tabs, rows grouped
// by category, severity, relative times that update, infinite scroll by cursor, the row
// menu, keyboard navigation, and the empty / loading / error / offline states.

import { ClarionElement, h, icon, ICONS, navigate } from './base.js';
import { rowMenu } from './menu.js';
import { FEED_CSS } from './styles.js';

const TABS = {
  all: {},
  unread: { status: 'unread' },
  archived: { archived: true },
  snoozed: { snoozed: true },
};

export class ClarionFeed extends ClarionElement {
  constructor() {
    super(FEED_CSS);
    this.tab = 'all';
    this.extra = {}; // filters from the inbox page
    this.rows = new Map(); // id -> {sig, el}
    this.groups = new Map(); // category -> {section, list}
    this.selected = new Set();
    this.menu = null;
  }

  /** Filters on top of the tab's (category, severity, status), from <clarion-inbox>. */
  set filter(value) {
    this.extra = value || {};
    if (this.feed) this.feed.setFilter(this.currentFilter());
  }

  get filter() {
    return this.currentFilter();
  }

  currentFilter() {
    return { ...TABS[this.tab], ...this.extra };
  }

  get tabs() {
    return (this.getAttribute('tabs') || 'all unread archived snoozed').split(/\s+/).filter((t) => t in TABS);
  }

  setup() {
    const size = Number(this.getAttribute('page-size')) || 20;
    this.feed = this.client.feed(this.currentFilter(), size);
    this.listen(this.feed, 'change', () => this.renderList());
    this.listen(this.client, 'status', () => this.renderStatus());
    this.listen(this.client, 'count', () => this.renderGroupCounts());
    this.timer = setInterval(() => this.refreshTimes(), 30000);
    this.client.connect();
    this.feed.load();
  }

  teardown() {
    clearInterval(this.timer);
    this.observer?.disconnect();
    this.feed?.destroy();
    this.feed = null;
    this.rows.clear();
    this.groups.clear();
  }

  render() {
    const root = this.shadowRoot;
    root.replaceChildren();
    this.rows.clear();
    this.groups.clear();
    this.moreLine = null;
    this.readAll = h('button', {
      class: 'link', part: 'read-all', text: this.t('feed.read_all'),
      on: { click: () => this.client.readAll().catch((e) => this.fail(e)) },
    });
    const header = h('div', { class: 'header', part: 'header' },
      h('h2', { class: 'title', id: 'title', text: this.getAttribute('heading') || this.t('feed.title') }),
      this.readAll);
    const tablist = h('div', { class: 'tabs', role: 'tablist', part: 'tabs', 'aria-labelledby': 'title' },
      this.tabs.map((tab) => h('button', {
        role: 'tab', part: 'tab', 'data-tab': tab, id: `tab-${tab}`,
        'aria-selected': String(tab === this.tab), tabindex: tab === this.tab ? '0' : '-1',
        text: this.t(`tabs.${tab}`),
        on: { click: () => this.selectTab(tab), keydown: (e) => this.tabKeys(e) },
      })));
    this.statusLine = h('div', { class: 'status', part: 'status', role: 'status' });
    this.list = h('div', {
      class: 'list', part: 'list', role: 'tabpanel', 'aria-labelledby': `tab-${this.tab}`,
      on: { keydown: (e) => this.rowKeys(e) },
    });
    this.sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
    this.scroller = h('div', { class: 'scroller', part: 'scroller' }, this.list, this.sentinel);
    root.append(header, tablist, this.statusLine, this.scroller);
    this.observer?.disconnect();
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.feed?.more();
    }, { root: this.hasAttribute('compact') ? this.scroller : null, rootMargin: '200px' });
    this.observer.observe(this.sentinel);
    this.renderStatus();
    this.renderList();
  }

  selectTab(tab) {
    if (tab === this.tab) return;
    this.tab = tab;
    for (const b of this.shadowRoot.querySelectorAll('[role=tab]')) {
      const on = b.dataset.tab === tab;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
    }
    this.list.setAttribute('aria-labelledby', `tab-${tab}`);
    this.feed.setFilter(this.currentFilter());
  }

  tabKeys(e) {
    const tabs = [...this.shadowRoot.querySelectorAll('[role=tab]')];
    const i = tabs.indexOf(e.currentTarget);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const next = tabs[(to + tabs.length) % tabs.length];
    next.focus();
    this.selectTab(next.dataset.tab);
  }

  renderStatus() {
    if (!this.statusLine) return;
    const status = this.client.status;
    const offline = status === 'offline' || globalThis.navigator?.onLine === false;
    const text = offline ? this.t('feed.offline') : status === 'waiting' ? this.t('feed.reconnecting') : '';
    this.statusLine.textContent = text;
    this.statusLine.hidden = !text;
    this.toggleAttribute('offline', offline);
  }

  renderList() {
    if (!this.list || !this.feed) return;
    const { state, items } = this.feed;
    const focused = this.shadowRoot.activeElement?.closest?.('[data-id]')?.dataset.id;
    this.list.setAttribute('aria-busy', String(state === 'loading'));
    this.setAttribute('state', state === 'ready' && !items.length ? 'empty' : state);
    if (state === 'loading' && !items.length) {
      this.list.replaceChildren(h('p', { class: 'state', part: 'loading', text: this.t('feed.loading') }));
      return;
    }
    if (state === 'error') {
      this.list.replaceChildren(h('div', { class: 'state', part: 'error' },
        h('p', { text: this.t('feed.error') }),
        h('button', { class: 'btn', text: this.t('feed.retry'), on: { click: () => this.feed.load() } })));
      this.rendered();
      return;
    }
    if (!items.length) {
      this.list.replaceChildren(h('p', { class: 'state', part: 'empty', text: this.t(`feed.empty_${this.tab}`) }));
      this.readAll.disabled = true;
      this.rendered();
      return;
    }
    this.readAll.disabled = false;
    const groups = new Map();
    for (const item of items) {
      if (!groups.has(item.category)) groups.set(item.category, []);
      groups.get(item.category).push(item);
    }
    const live = new Set(items.map((i) => i.id));
    for (const id of this.rows.keys()) if (!live.has(id)) this.rows.delete(id);
    for (const category of this.groups.keys()) if (!groups.has(category)) this.groups.delete(category);
    const sections = [...groups].map(([category, rows]) => this.group(category, rows));
    if (this.feed.nextCursor) {
      this.moreLine ||= h('p', { class: 'more muted', text: this.t('feed.more') });
      sections.push(this.moreLine);
    }
    // Only what changed is touched: a live notification inserts one row, instead of every
    // row being taken out and put back (the whole list's style and layout, per event).
    reconcile(this.list, sections);
    // Rows added above the end keep the end in view (scroll anchoring), so the sentinel
    // may never stop intersecting: observed afresh, it reports whether it still does.
    if (this.feed.nextCursor && this.observer) {
      this.observer.unobserve(this.sentinel);
      this.observer.observe(this.sentinel);
    }
    this.rovingFocus(focused);
    this.renderGroupCounts();
    this.rendered();
  }

  rendered() {
    const count = this.feed.items.length;
    this.dispatchEvent(new CustomEvent('clarion:rendered', { detail: { count, state: this.feed.state } }));
  }

  /** A category's section (kept across renders), its rows in order. */
  group(category, items) {
    let group = this.groups.get(category);
    if (!group) {
      group = this.newGroup(category);
      this.groups.set(category, group);
    }
    reconcile(group.list, items.map((i) => this.row(i)));
    return group.section;
  }

  newGroup(category) {
    const name = this.i18n.category(category);
    const header = h('div', { class: 'group-header', part: 'group-header' },
      h('h3', { text: name }),
      h('span', { class: 'group-count muted', 'data-category': category }),
      h('button', {
        class: 'link', part: 'read-all-category', 'data-category': category,
        text: this.t('feed.read_all_category'), 'aria-label': this.t('feed.read_all_in', { category: name }),
        on: { click: () => this.client.readAll(category).catch((e) => this.fail(e)) },
      }));
    const list = h('div', { role: 'list' });
    const section = h('section', { class: 'group', part: 'group', 'data-category': category, 'aria-label': name },
      header, list);
    return { section, list };
  }

  renderGroupCounts() {
    const counts = this.client.counts?.by_category || {};
    for (const el of this.shadowRoot.querySelectorAll('.group-count')) {
      const n = counts[el.dataset.category] || 0;
      el.textContent = n ? this.t('feed.unread_n', { count: n }) : '';
      el.nextSibling.hidden = !n;
    }
  }

  /** One row, rebuilt only when the item changed. */
  row(item) {
    const sig = [item.read_at, item.archived_at, item.snoozed_until, this.i18n.locale,
      this.selected.has(item.id)].join('|');
    const cached = this.rows.get(item.id);
    if (cached && cached.sig === sig) return cached.el;
    const unread = !item.read_at;
    const severity = ['low', 'medium', 'high', 'critical'].includes(item.severity) ? item.severity : 'medium';
    const el = h('div', {
      part: unread ? 'item item-unread' : 'item', class: `row ${unread ? 'unread' : ''}`, role: 'listitem',
      'data-id': item.id, 'data-severity': severity, tabindex: '-1',
      'aria-label': `${item.title}${unread ? `, ${this.t('item.unread_marker')}` : ''}`,
      on: { click: (e) => this.activate(e, item) },
    },
    this.hasAttribute('selectable') ? h('input', {
      type: 'checkbox', class: 'select', part: 'select', 'aria-label': this.t('bulk.select_one'),
      checked: this.selected.has(item.id),
      on: { click: (e) => { e.stopPropagation(); this.toggleSelect(item.id, e.target.checked); } },
    }) : null,
    h('span', { class: 'severity', part: `severity severity-${severity}`, role: 'img',
      'aria-label': this.t(`severity.${severity}`), title: this.t(`severity.${severity}`) }),
    h('div', { class: 'content' },
      h('div', { class: 'item-title', part: 'item-title', text: item.title }),
      item.body ? h('div', { class: 'item-body', part: 'item-body', text: item.body }) : null,
      h('div', { class: 'meta muted' },
        h('time', { part: 'time', datetime: item.created_at, text: this.i18n.ago(item.created_at) }),
        item.snoozed_until && Date.parse(item.snoozed_until) > Date.now()
          ? h('span', { text: ` · ${this.t('item.snoozed_until', { time: this.i18n.date(item.snoozed_until) })}` })
          : null),
      this.actions(item)),
    unread ? h('span', { class: 'dot', part: 'unread-dot', 'aria-hidden': 'true' }) : null,
    h('button', {
      class: 'menu-button', part: 'menu-button', 'aria-haspopup': 'menu', 'aria-label': this.t('item.menu'),
      on: { click: (e) => { e.stopPropagation(); this.openMenu(e.currentTarget, item); } },
    }, icon(ICONS.more)));
    this.rows.set(item.id, { sig, el });
    return el;
  }

  actions(item) {
    const actions = Array.isArray(item.actions) ? item.actions.slice(0, 3) : [];
    if (!actions.length) return null;
    return h('div', { class: 'actions' }, actions.map((action) => h('button', {
      class: 'btn', part: 'action', 'data-action': action.id, text: action.label,
      on: {
        click: async (e) => {
          e.stopPropagation();
          try {
            const answer = await this.client.action(item.id, action.id);
            navigate(this, answer?.url || action.url, item);
          } catch (err) {
            this.fail(err);
          }
        },
      },
    })));
  }

  /** A click or Enter on a row: mark it read, then open its url (http(s) or relative only). */
  async activate(e, item) {
    if (e.target.closest('button, input, a')) return;
    if (!item.read_at) {
      // The read must be recorded before the page goes away; a slow API gets 1.5 s.
      const marked = this.client.markRead(item.id).catch((err) => this.fail(err));
      await Promise.race([marked, new Promise((r) => setTimeout(r, 1500))]);
    }
    navigate(this, item.url, item);
  }

  openMenu(button, item) {
    this.menu?.close();
    this.menu = rowMenu(this, button, item, () => { this.menu = null; });
  }

  toggleSelect(id, on) {
    if (on) this.selected.add(id);
    else this.selected.delete(id);
    this.dispatchEvent(new CustomEvent('clarion:selection', { detail: { ids: [...this.selected] } }));
  }

  /** Selection for bulk actions (the inbox page). */
  selectAll(on) {
    this.selected = new Set(on ? this.feed.items.map((i) => i.id) : []);
    this.renderList();
    this.dispatchEvent(new CustomEvent('clarion:selection', { detail: { ids: [...this.selected] } }));
  }

  get items() {
    return this.feed ? this.feed.items : [];
  }

  rows_() {
    return [...this.list.querySelectorAll('[data-id]')];
  }

  rovingFocus(focusedId) {
    const rows = this.rows_();
    rows.forEach((r, i) => {
      const tabIndex = (focusedId ? r.dataset.id === focusedId : i === 0) ? 0 : -1;
      if (r.tabIndex !== tabIndex) r.tabIndex = tabIndex;
    });
    if (focusedId) rows.find((r) => r.dataset.id === focusedId)?.focus();
  }

  /** Move focus to the first row (the bell does this when it opens by keyboard). */
  focusFirst() {
    const first = this.rows_()[0] || this.shadowRoot.querySelector('[role=tab][aria-selected=true]');
    first?.focus();
  }

  rowKeys(e) {
    const row = e.target.closest?.('[data-id]');
    if (!row || e.target !== row) return;
    const rows = this.rows_();
    const i = rows.indexOf(row);
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: rows.length - 1 }[e.key];
    if (to !== undefined) {
      e.preventDefault();
      const next = rows[Math.max(0, Math.min(rows.length - 1, to))];
      row.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
      if (to >= rows.length - 3) this.feed.more();
    } else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      const item = this.feed.items.find((it) => it.id === row.dataset.id);
      if (item) this.activate(e, item);
    }
  }

  /** Ids of the loaded items not yet seen, marked seen (the bell calls this on open). */
  markShownSeen() {
    const ids = this.items.filter((i) => !i.seen_at).map((i) => i.id);
    this.client.markSeen(ids).catch(() => {});
  }

  refreshTimes() {
    for (const time of this.shadowRoot.querySelectorAll('time[datetime]')) {
      time.textContent = this.i18n.ago(time.getAttribute('datetime'));
    }
  }

  fail(err) {
    this.dispatchEvent(new CustomEvent('clarion:error', { bubbles: true, composed: true, detail: err }));
  }
}

/** Make `parent`'s children `nodes`, in order, moving and removing only what differs. */
export function reconcile(parent, nodes) {
  let at = parent.firstChild;
  for (const node of nodes) {
    if (node === at) at = at.nextSibling;
    else parent.insertBefore(node, at);
  }
  while (at) {
    const next = at.nextSibling;
    at.remove();
    at = next;
  }
}

customElements.get('clarion-feed') || customElements.define('clarion-feed', ClarionFeed);
