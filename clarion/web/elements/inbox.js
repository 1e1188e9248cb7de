// <clarion-inbox>: the feed as a full page, with filters (category, severity; the tabs give
// all / unread / archived / snoozed) and bulk actions on the selected rows.

import { ClarionElement, h } from './base.js';
import { FEED_PARTS } from './bell.js';
import './feed.js';

const STYLE = `
:host { display: block; }
.toolbar { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 12px 14px;
  border-bottom: 1px solid var(--_border); }
label { display: inline-flex; gap: 6px; align-items: center; color: var(--_muted); }
select { font: inherit; color: var(--_fg); background: var(--_bg); border: 1px solid var(--_border);
  border-radius: 6px; padding: 3px 6px; }
.bulk { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; padding: 8px 14px;
  border-bottom: 1px solid var(--_border); }
.bulk .count { margin-right: auto; color: var(--_muted); }
clarion-feed { border-radius: 0 0 var(--_radius) var(--_radius); }
`;

const SEVERITIES = ['low', 'medium', 'high', 'critical'];

export class ClarionInbox extends ClarionElement {
  constructor() {
    super(STYLE);
    this.selection = [];
    this.categories = new Set();
  }

  setup() {
    this.listen(this.client, 'count', () => this.learnCategories());
    this.client.connect();
  }

  render() {
    const filters = this.feedEl?.filter || {};
    this.category = h('select', { part: 'filter-category', on: { change: () => this.applyFilters() } });
    this.severity = h('select', { part: 'filter-severity', on: { change: () => this.applyFilters() } },
      h('option', { value: '', text: this.t('filters.any') }),
      SEVERITIES.map((s) => h('option', { value: s, text: this.t(`severity.${s}`), selected: filters.severity === s })));
    const toolbar = h('div', { class: 'toolbar', part: 'filters', role: 'group', 'aria-label': this.t('filters.label') },
      h('label', {}, this.t('filters.category'), this.category),
      h('label', {}, this.t('filters.severity'), this.severity));
    this.selectAll = h('input', {
      type: 'checkbox', part: 'select-all', 'aria-label': this.t('bulk.select_all'),
      on: { change: (e) => this.feedEl.selectAll(e.target.checked) },
    });
    this.countText = h('span', { class: 'count', 'aria-live': 'polite' });
    const act = (key, fn) => h('button', {
      class: 'btn', part: `bulk-${key}`, 'data-bulk': key, text: this.t(`bulk.${key}`),
      on: { click: () => this.bulk(fn) },
    });
    this.bulkButtons = [
      act('read', (id) => this.client.markRead(id, true)),
      act('unread', (id) => this.client.markRead(id, false)),
      act('archive', (id) => this.client.archive(id, true)),
      act('delete', (id) => this.client.remove(id)),
    ];
    const bulk = h('div', { class: 'bulk', part: 'bulk', role: 'toolbar', 'aria-label': this.t('bulk.label') },
      this.selectAll, this.countText, this.bulkButtons,
      h('button', { class: 'btn', part: 'bulk-delete-read', text: this.t('bulk.delete_read'),
        on: { click: () => this.client.deleteRead(this.category.value || undefined).catch(() => {}) } }));
    if (!this.feedEl) {
      this.feedEl = h('clarion-feed', {
        selectable: true, exportparts: FEED_PARTS, heading: this.t('inbox.title'),
        'page-size': this.getAttribute('page-size') || '30',
      });
      this.feedEl.client = this.client;
      this.feedEl.addEventListener('clarion:selection', (e) => this.selected(e.detail.ids));
      this.feedEl.addEventListener('clarion:rendered', () => this.learnCategories());
    }
    this.feedEl.setAttribute('locale', this.i18n.locale);
    this.feedEl.setAttribute('heading', this.t('inbox.title'));
    this.shadowRoot.replaceChildren(toolbar, bulk, this.feedEl);
    this.learnCategories(filters.category);
    this.selected(this.selection);
  }

  /** Categories come from the data (counts and loaded rows): never a fixed list. */
  learnCategories(current = this.category?.value) {
    if (!this.category) return;
    const before = this.categories.size;
    Object.keys(this.client.counts?.by_category || {}).forEach((c) => this.categories.add(c));
    (this.feedEl?.items || []).forEach((i) => this.categories.add(i.category));
    if (before === this.categories.size && this.category.options.length) return;
    const value = current || '';
    this.category.replaceChildren(
      h('option', { value: '', text: this.t('filters.any') }),
      ...[...this.categories].sort().map((c) => h('option', { value: c, text: this.i18n.category(c), selected: c === value })),
    );
  }

  applyFilters() {
    this.feedEl.filter = {
      ...(this.category.value ? { category: this.category.value } : {}),
      ...(this.severity.value ? { severity: this.severity.value } : {}),
    };
  }

  selected(ids) {
    this.selection = ids;
    this.countText.textContent = this.t('bulk.selected', { count: ids.length });
    this.bulkButtons.forEach((b) => { b.disabled = !ids.length; });
    this.selectAll.checked = ids.length > 0 && ids.length === (this.feedEl.items || []).length;
  }

  async bulk(fn) {
    const ids = this.selection;
    await Promise.allSettled(ids.map((id) => fn(id)));
    this.feedEl.selectAll(false);
  }
}

customElements.get('clarion-inbox') || customElements.define('clarion-inbox', ClarionInbox);
