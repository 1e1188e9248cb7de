// What the elements render from: a small event emitter, and a Feed (one filtered list of
// the inbox, paged by cursor, kept up to date by the live events). No DOM here.

export class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  /** Listen; returns the function that stops listening. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, value) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try {
        fn(value);
      } catch (err) {
        setTimeout(() => { throw err; }); // one bad listener must not stop the others
      }
    }
  }
}

const later = (value, now) => Boolean(value) && Date.parse(value) > now;

/**
 * Whether an item belongs in a list with these filters (the same rules as the API's).
 * @param {object} item a notification
 * @param {import('./client.js').FeedFilter} filter
 */
export function matches(item, filter = {}, now = Date.now()) {
  if (filter.category && item.category !== filter.category) return false;
  if (filter.severity && item.severity !== filter.severity) return false;
  if (Boolean(item.archived_at) !== Boolean(filter.archived)) return false;
  if (later(item.snoozed_until, now) !== Boolean(filter.snoozed)) return false;
  if (item.expires_at && !later(item.expires_at, now)) return false;
  if (filter.status === 'unread' && item.read_at) return false;
  if (filter.status === 'read' && !item.read_at) return false;
  if (filter.status === 'unseen' && item.seen_at) return false;
  return true;
}

const FIELDS = ['read_at', 'archived_at', 'seen_at', 'snoozed_until'];

/**
 * An item after a `notification.updated` event: the changed copy, null when deleted,
 * or the item itself when the event is not about it.
 */
export function applyUpdate(item, data) {
  if (!data) return item;
  const mine = Array.isArray(data.ids)
    ? data.ids.includes(item.id)
    : Boolean(data.all) && (!data.category || data.category === item.category);
  if (!mine) return item;
  if (data.deleted) {
    // delete-read removes the read ones only; a delete by ids removes those
    return data.all && !item.read_at ? item : null;
  }
  if (data.all) return item.read_at ? item : { ...item, read_at: data.read_at };
  const changed = { ...item };
  for (const field of FIELDS) if (field in data) changed[field] = data[field];
  return changed;
}

/** Newest first: by created_at, then by seq. */
function newer(a, b) {
  return b.created_at.localeCompare(a.created_at) || (b.seq || 0) - (a.seq || 0);
}

/**
 * One list of the inbox (a tab of the bell, the inbox page with its filters).
 * Emits 'change' whenever `items`, `state` or `nextCursor` change.
 */
export class Feed extends Emitter {
  /**
   * @param {import('./client.js').ClarionClient} client
   * @param {import('./client.js').FeedFilter} [filter]
   * @param {number} [pageSize]
   */
  constructor(client, filter = {}, pageSize = 20) {
    super();
    this.client = client;
    this.filter = filter;
    this.pageSize = pageSize;
    this.items = [];
    this.nextCursor = null;
    this.state = 'idle'; // idle | loading | ready | error
    this.error = null;
    this.loadingMore = false;
    this.request = 0;
    this.off = [
      client.on('event', (e) => this.handle(e)),
      client.on('resync', () => this.load()),
    ];
  }

  /** Load the first page (again). */
  async load() {
    const request = (this.request += 1);
    this.state = 'loading';
    this.emit('change');
    try {
      const page = await this.client.list({ ...this.filter, limit: this.pageSize });
      if (request !== this.request) return;
      this.items = page.items;
      this.nextCursor = page.next_cursor;
      this.state = 'ready';
      this.error = null;
    } catch (err) {
      if (request !== this.request) return;
      this.state = 'error';
      this.error = err;
    }
    this.emit('change');
  }

  /** The next page, if there is one and none is on its way. */
  async more() {
    if (!this.nextCursor || this.loadingMore || this.state !== 'ready') return;
    const request = this.request;
    this.loadingMore = true;
    try {
      const page = await this.client.list({
        ...this.filter, limit: this.pageSize, cursor: this.nextCursor,
      });
      if (request !== this.request) return;
      const known = new Set(this.items.map((i) => i.id));
      this.items = this.items.concat(page.items.filter((i) => !known.has(i.id)));
      this.nextCursor = page.next_cursor;
    } catch (err) {
      this.error = err;
    } finally {
      this.loadingMore = false;
    }
    this.emit('change');
  }

  setFilter(filter) {
    this.filter = filter;
    return this.load();
  }

  /** Apply a live event (or an optimistic local change shaped like one). */
  handle(event) {
    const before = this.items;
    if (event.type === 'notification.created' || event.type === 'notification.unsnoozed') {
      const item = event.data;
      const rest = this.items.filter((i) => i.id !== item.id);
      if (matches(item, this.filter)) {
        rest.push(item);
        rest.sort(newer);
      }
      this.items = rest;
    } else if (event.type === 'notification.updated') {
      this.items = this.items
        .map((i) => applyUpdate(i, event.data))
        .filter((i) => i !== null && matches(i, this.filter));
    }
    if (this.items !== before) this.emit('change');
  }

  destroy() {
    this.off.forEach((off) => off());
    this.listeners.clear();
  }
}
