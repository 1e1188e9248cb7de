// A row's menu: read/unread, archive/unarchive, snooze/unsnooze, delete. role="menu",
// arrow keys move, Escape closes and gives focus back to the row's menu button.

import { h } from './base.js';

/** Snooze choices, on the user's clock: in an hour, tomorrow 9:00, next Monday 9:00. */
export function snoozeTimes(now = new Date()) {
  const tomorrow = new Date(now);
  tomorrow.setDate(now.getDate() + 1);
  tomorrow.setHours(9, 0, 0, 0);
  const monday = new Date(now);
  monday.setDate(now.getDate() + (((8 - now.getDay()) % 7) || 7));
  monday.setHours(9, 0, 0, 0);
  return { hour: new Date(now.getTime() + 3600_000), tomorrow, week: monday };
}

export function rowMenu(feed, button, item, onClose) {
  const client = feed.client;
  const t = (k, v) => feed.t(k, v);
  const run = (fn) => async () => {
    close();
    try {
      await fn();
    } catch (err) {
      feed.fail(err);
    }
  };
  const snoozed = item.snoozed_until && Date.parse(item.snoozed_until) > Date.now();
  const entries = [
    item.read_at
      ? ['unread', t('item.unread'), () => client.markRead(item.id, false)]
      : ['read', t('item.read'), () => client.markRead(item.id, true)],
    item.archived_at
      ? ['unarchive', t('item.unarchive'), () => client.archive(item.id, false)]
      : ['archive', t('item.archive'), () => client.archive(item.id, true)],
  ];
  if (snoozed) {
    entries.push(['unsnooze', t('item.unsnooze'), () => client.snooze(item.id, null)]);
  } else {
    const times = snoozeTimes();
    for (const key of ['hour', 'tomorrow', 'week']) {
      entries.push([`snooze-${key}`, t(`snooze.${key}`), () => client.snooze(item.id, times[key])]);
    }
  }
  entries.push(['delete', t('item.delete'), () => client.remove(item.id)]);
  const menu = h('div', {
    class: 'menu', role: 'menu', part: 'menu', 'aria-label': t('item.menu'),
    on: { keydown: (e) => keys(e) },
  }, entries.map(([key, label, fn]) => h('button', {
    role: 'menuitem', tabindex: '-1', 'data-action': key, text: label, on: { click: run(fn) },
  })));
  const items = () => [...menu.querySelectorAll('[role=menuitem]')];

  function close(refocus = false) {
    document.removeEventListener('pointerdown', outside, true);
    menu.remove();
    button.setAttribute('aria-expanded', 'false');
    onClose();
    if (refocus) button.focus();
  }

  function outside(e) {
    if (!e.composedPath().includes(menu)) close();
  }

  function keys(e) {
    const list = items();
    const i = list.indexOf(feed.shadowRoot.activeElement);
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: list.length - 1 }[e.key];
    if (to !== undefined) {
      e.preventDefault();
      list[(to + list.length) % list.length].focus();
    } else if (e.key === 'Escape' || e.key === 'Tab') {
      e.preventDefault();
      e.stopPropagation();
      close(true);
    }
  }

  button.setAttribute('aria-expanded', 'true');
  // In the scroller, not the row: a live update may rebuild the row while the menu is open.
  const row = button.closest('[data-id]');
  menu.style.top = `${row.offsetTop + button.offsetTop + button.offsetHeight + 2}px`;
  feed.scroller.append(menu);
  document.addEventListener('pointerdown', outside, true);
  items()[0].focus();
  menu.close = close;
  return menu;
}
