// <clarion-preferences>: GET /v1/me/preferences as channel x category toggles (locked ones
// shown as such, with why), digest cadence, quiet hours and time zone; saved with PUT,
// 409/422 shown next to the fields they name. Then push and the test buttons.

import { ClarionElement, h, icon, ICONS } from './base.js';
import { pushSection, testSection } from './push.js';

const STYLE = `
:host { display: block; padding: 4px 0; }
.card { padding: 14px 16px; border-bottom: 1px solid var(--_border); }
h2 { font-size: 18px; margin: 0; padding: 14px 16px 0; }
h3 { font-size: 15px; margin: 0 0 8px; }
h4 { font-size: 13px; margin: 12px 0 4px; color: var(--_muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: start; padding: 6px 8px; border-bottom: 1px solid var(--_border); vertical-align: middle; }
th { font-weight: 600; color: var(--_muted); font-size: 12px; }
td.toggle, th.toggle { text-align: center; width: 84px; }
tr.global td { font-weight: 600; }
.lock { display: inline-flex; vertical-align: middle; color: var(--_muted); }
.lock svg { width: 14px; height: 14px; }
.why { display: block; font-size: 12px; color: var(--_muted); font-weight: 400; }
input[type=checkbox] { width: 18px; height: 18px; accent-color: var(--_accent); }
select, input[type=time] { font: inherit; color: var(--_fg); background: var(--_bg);
  border: 1px solid var(--_border); border-radius: 6px; padding: 3px 6px; }
.digest { display: flex; gap: 6px; flex-wrap: wrap; align-items: center; }
.invalid { outline: 2px solid var(--_critical); outline-offset: 1px; }
.error { color: var(--_critical); }
.actions { display: flex; gap: 10px; align-items: center; padding: 14px 16px; border-bottom: 1px solid var(--_border); }
.row-buttons { display: flex; gap: 8px; flex-wrap: wrap; }
.devices { padding-left: 18px; margin: 4px 0; }
label { display: inline-flex; gap: 6px; align-items: center; }
`;

const ORDER = ['in_app', 'email', 'push'];
const CADENCES = ['instant', 'hourly', 'daily', 'weekly'];

export class ClarionPreferences extends ClarionElement {
  constructor() {
    super(STYLE);
  }

  setup() {
    this.state = 'loading';
    this.load();
  }

  async load() {
    try {
      this.prefs = await this.client.preferences();
      this.state = 'ready';
    } catch (err) {
      this.state = 'error';
      this.error = err;
    }
    this.render();
  }

  render() {
    if (!this.i18n) return;
    const title = h('h2', { text: this.t('prefs.title') });
    if (this.state !== 'ready') {
      const text = this.state === 'loading' ? this.t('feed.loading') : this.t('prefs.load_error');
      this.shadowRoot.replaceChildren(title, h('p', { class: 'card muted', part: this.state, text }));
      return;
    }
    const p = this.prefs;
    this.channels = Object.keys(p.channels).sort((a, b) => ORDER.indexOf(a) - ORDER.indexOf(b));
    this.message = h('span', { part: 'save-status', role: 'status' });
    this.shadowRoot.replaceChildren(
      title,
      this.table(p),
      this.quietAndZone(p),
      h('div', { class: 'actions' },
        h('button', { class: 'btn primary', part: 'save', text: this.t('prefs.save'), on: { click: () => this.save() } }),
        this.message),
      pushSection(this),
      testSection(this, this.channels),
    );
  }

  table(p) {
    const head = h('tr', {}, h('th', { text: this.t('prefs.category') }),
      this.channels.map((c) => h('th', { class: 'toggle', scope: 'col', text: this.t(`channel.${c}`) })),
      h('th', { text: this.t('prefs.digest') }));
    const global = h('tr', { class: 'global' },
      h('td', {}, this.t('prefs.all_categories'), h('span', { class: 'why', text: this.t('prefs.all_categories_why') })),
      this.channels.map((c) => h('td', { class: 'toggle' },
        this.toggle(`channels.${c}`, p.channels[c], this.t('prefs.toggle_global', { channel: this.t(`channel.${c}`) })))),
      h('td'));
    const rows = Object.keys(p.categories).sort().map((cat) => {
      const c = p.categories[cat];
      const name = this.i18n.category(cat);
      return h('tr', { 'data-category': cat, part: 'category' },
        h('td', {}, name, c.required ? h('span', { class: 'why', part: 'locked-why', text: this.t('prefs.locked') }) : null),
        this.channels.map((ch) => h('td', { class: 'toggle' }, c.channels[ch]
          ? this.toggle(`categories.${cat}.channels.${ch}`, c.channels[ch],
            this.t('prefs.toggle', { channel: this.t(`channel.${ch}`), category: name }))
          : null)),
        h('td', {}, this.digest(cat, c)));
    });
    return h('section', { class: 'card', part: 'channels', 'aria-labelledby': 'channels-title' },
      h('h3', { id: 'channels-title', text: this.t('prefs.channels') }),
      h('table', {}, h('thead', {}, head), h('tbody', {}, global, rows)),
      this.prefs.critical_bypasses ? h('p', { class: 'muted', text: this.t('prefs.critical') }) : null);
  }

  toggle(field, value, label) {
    const input = h('input', {
      type: 'checkbox', part: value.locked ? 'toggle toggle-locked' : 'toggle', 'data-field': field,
      checked: value.enabled, disabled: value.locked, 'aria-label': label,
      title: value.locked ? this.t('prefs.locked') : null,
    });
    if (!value.locked) return input;
    return h('span', {}, input, h('span', { class: 'lock', 'aria-hidden': 'true' }, icon(ICONS.lock)));
  }

  digest(cat, c) {
    const field = `categories.${cat}.digest`;
    const cadence = h('select', {
      'data-field': field, part: 'digest', disabled: c.required,
      'aria-label': this.t('prefs.digest_for', { category: this.i18n.category(cat) }),
      on: { change: () => sync() },
    }, CADENCES.map((k) => h('option', { value: k, text: this.t(`cadence.${k}`), selected: c.digest.cadence === k })));
    const at = h('input', { type: 'time', 'data-field': `${field}.at`, value: c.digest.at || '09:00',
      'aria-label': this.t('prefs.digest_at'), disabled: c.required });
    const weekdays = new Intl.DateTimeFormat(this.i18n.locale, { weekday: 'long' });
    const weekday = h('select', { 'data-field': `${field}.weekday`, 'aria-label': this.t('prefs.digest_weekday'), disabled: c.required },
      [0, 1, 2, 3, 4, 5, 6].map((d) => h('option', {
        value: String(d), selected: (c.digest.weekday ?? 0) === d,
        text: weekdays.format(new Date(Date.UTC(2024, 0, 1 + d))), // 1 Jan 2024 was a Monday
      })));
    const sync = () => {
      at.hidden = !['daily', 'weekly'].includes(cadence.value);
      weekday.hidden = cadence.value !== 'weekly';
    };
    sync();
    return h('div', { class: 'digest' }, cadence, weekday, at);
  }

  quietAndZone(p) {
    const quiet = p.quiet_hours;
    const on = h('input', { type: 'checkbox', 'data-field': 'quiet_hours', part: 'quiet-toggle', checked: Boolean(quiet) });
    const start = h('input', { type: 'time', 'data-field': 'quiet_hours.start', value: quiet?.start || '22:00', 'aria-label': this.t('prefs.quiet_start') });
    const end = h('input', { type: 'time', 'data-field': 'quiet_hours.end', value: quiet?.end || '07:00', 'aria-label': this.t('prefs.quiet_end') });
    const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : [browserZone];
    const current = p.timezone || browserZone;
    const zone = h('select', { 'data-field': 'timezone', part: 'timezone', 'aria-label': this.t('prefs.timezone') },
      [...new Set(['UTC', current, ...zones])].map((z) => h('option', { value: z, text: z, selected: z === current })));
    return h('section', { class: 'card', part: 'quiet', 'aria-labelledby': 'quiet-title' },
      h('h3', { id: 'quiet-title', text: this.t('prefs.quiet') }),
      h('p', {}, h('label', {}, on, this.t('prefs.quiet_enable')), ' ', start, ` ${this.t('prefs.quiet_and')} `, end),
      h('p', {}, h('label', {}, this.t('prefs.timezone'), zone),
        p.timezone ? null : h('span', { class: 'muted', text: ` ${this.t('prefs.timezone_default')}` })));
  }

  field(name) {
    return this.shadowRoot.querySelector(`[data-field="${CSS.escape(name)}"]`);
  }

  /** The PUT body: what differs from what the server said (a locked toggle never moves). */
  changes() {
    const p = this.prefs;
    const body = {};
    const channels = {};
    for (const c of this.channels) {
      const el = this.field(`channels.${c}`);
      if (el && el.checked !== p.channels[c].enabled) channels[c] = el.checked;
    }
    if (Object.keys(channels).length) body.channels = channels;
    const categories = {};
    for (const [cat, c] of Object.entries(p.categories)) {
      const update = {};
      for (const ch of Object.keys(c.channels)) {
        const el = this.field(`categories.${cat}.channels.${ch}`);
        if (el && !el.disabled && el.checked !== c.channels[ch].enabled) (update.channels ||= {})[ch] = el.checked;
      }
      const digest = this.digestValue(cat);
      if (!this.field(`categories.${cat}.digest`).disabled && JSON.stringify(digest) !== JSON.stringify(this.digestOf(c.digest))) update.digest = digest;
      if (Object.keys(update).length) categories[cat] = update;
    }
    if (Object.keys(categories).length) body.categories = categories;
    const zone = this.field('timezone').value;
    if (zone !== p.timezone) body.timezone = zone;
    const quiet = this.field('quiet_hours').checked
      ? { start: this.field('quiet_hours.start').value, end: this.field('quiet_hours.end').value }
      : null;
    if (JSON.stringify(quiet) !== JSON.stringify(p.quiet_hours)) body.quiet_hours = quiet;
    return body;
  }

  digestOf(d) {
    if (d.cadence === 'daily') return { cadence: 'daily', at: d.at || '09:00' };
    if (d.cadence === 'weekly') return { cadence: 'weekly', at: d.at || '09:00', weekday: d.weekday ?? 0 };
    return { cadence: d.cadence };
  }

  digestValue(cat) {
    const f = `categories.${cat}.digest`;
    return this.digestOf({
      cadence: this.field(f).value, at: this.field(`${f}.at`).value, weekday: Number(this.field(`${f}.weekday`).value),
    });
  }

  async save() {
    for (const el of this.shadowRoot.querySelectorAll('.invalid')) el.classList.remove('invalid');
    this.message.className = '';
    this.message.textContent = this.t('prefs.saving');
    try {
      this.prefs = await this.client.savePreferences(this.changes());
      this.render();
      this.message.textContent = this.t('prefs.saved');
      this.dispatchEvent(new CustomEvent('clarion:saved', { bubbles: true, composed: true, detail: this.prefs }));
    } catch (err) {
      this.showProblem(err);
    }
  }

  /** 409: the locked fields it names; 422: the fields of errors[].loc. */
  showProblem(err) {
    const problem = err.problem || {};
    const fields = err.status === 409
      ? problem.fields || []
      : (problem.errors || []).map((e) => (e.loc || []).slice(1).join('.'));
    const marked = [];
    for (const name of fields) {
      const el = [...this.shadowRoot.querySelectorAll('[data-field]')]
        .filter((f) => name === f.dataset.field || name.startsWith(`${f.dataset.field}.`))
        .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
      if (el) {
        el.classList.add('invalid');
        el.setAttribute('aria-invalid', 'true');
        marked.push(el);
      }
    }
    marked[0]?.focus();
    this.message.className = 'error';
    this.message.setAttribute('part', 'save-error');
    const detail = problem.detail || err.message;
    this.message.textContent = err.status === 409
      ? this.t('prefs.error_locked', { detail })
      : err.status === 422 ? this.t('prefs.error_invalid', { detail }) : this.t('prefs.error', { detail });
  }
}

customElements.get('clarion-preferences') || customElements.define('clarion-preferences', ClarionPreferences);
