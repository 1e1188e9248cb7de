// The headless client: REST calls (rest.js), the live stream (one per origin, shared by
// its tabs), and the state the elements render from. Usable alone:
//   import { ClarionClient } from 'https://clarion.example/ui/client.js';
//   const c = new ClarionClient({ apiUrl: 'https://clarion.example', getToken });
//   c.on('count', ({ total }) => ...); c.connect();

import { LiveConnection } from './live.js';
import { RestClient } from './rest.js';
import { bridgeServiceWorker } from './swbridge.js';
import { Feed } from './store.js';
import { TabGroup } from './tabs.js';

export { ClarionError } from './rest.js';
export { Feed } from './store.js';

/**
 * @typedef {object} FeedFilter
 * @property {string} [category]
 * @property {'low'|'medium'|'high'|'critical'} [severity]
 * @property {'unread'|'read'|'unseen'|'all'} [status]
 * @property {boolean} [archived]
 * @property {boolean} [snoozed]
 */

const DEFAULT_API = (() => {
  try {
    return new URL('../', import.meta.url).href.replace(/\/$/, '');
  } catch {
    return '';
  }
})();

export class ClarionClient extends RestClient {
  /**
   * @param {object} [o]
   * @param {string} [o.apiUrl] default: the origin this module was loaded from
   * @param {string} [o.token] a user token
   * @param {() => Promise<string>|string} [o.getToken] called for a (fresh) token
   * @param {'auto'|'websocket'|'sse'} [o.transport]
   * @param {boolean} [o.shareAcrossTabs] one connection for all tabs (default true)
   * @param {boolean|number} [o.pauseWhenHidden] close the stream when no tab is visible
   *   (after this many ms; true = 5000), resume with the cursor when one is
   * @param {object} [o.env] globals to use instead of the browser's (tests)
   */
  constructor({
    apiUrl = DEFAULT_API, token, getToken, transport = 'auto', shareAcrossTabs = true,
    pauseWhenHidden = false, env = globalThis,
  } = {}) {
    super({ apiUrl, token, getToken, env });
    this.status = 'idle';
    this.shareAcrossTabs = shareAcrossTabs;
    this.pauseAfter = pauseWhenHidden === true ? 5000 : Number(pauseWhenHidden) || 0;
    this.live = new LiveConnection({
      apiUrl: this.apiUrl, tokens: this.tokens, transport, env,
      onEvent: (e) => this._fromLeader(e),
      onStatus: (s) => this._status(s, true),
    });
    this.tabs = null;
    this.visible = new Map(); // tab id -> visible (leader only)
    this.pauseTimer = null;
    this.cleanup = [];
  }

  // --- the live stream ----------------------------------------------------------------

  /** Start the live stream (shared with the other tabs of this origin when possible). */
  connect() {
    this.wanted = true;
    if (this.tabs || this.connecting) return this;
    // The channel is per user: learn who from the token first.
    this.connecting = this.tokens.get().then(() => this._join(), () => this._join());
    return this;
  }

  _join() {
    this.connecting = null;
    if (!this.wanted) return;
    const name = `clarion:${this.apiUrl}:${this._subject()}`;
    const env = this.shareAcrossTabs ? this.env : {};
    this.tabs = new TabGroup({
      name, env, onLeader: () => this._lead(), onMessage: (m) => this._fromTab(m),
    });
    this._watchPage();
    this.tabs.start();
    this.tabs.post({ t: 'hello', visible: this._pageVisible() });
  }

  /** Stop the stream (and hand it to another tab if this one led). */
  disconnect() {
    this.wanted = false;
    this.live.stop();
    if (this.tabs) this.tabs.stop();
    this.tabs = null;
    this.cleanup.forEach((off) => off());
    this.cleanup = [];
    this.env.clearTimeout(this.pauseTimer);
  }

  /** Whether this tab holds the connection. */
  get leader() {
    return Boolean(this.tabs?.leader);
  }

  _subject() {
    try {
      const part = (this.tokens.token || '').split('.')[1];
      return JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/'))).sub || 'me';
    } catch {
      return 'me';
    }
  }

  _lead() {
    this.tabs.post({ t: 'lead' });
    this.visible.set(this.tabs.id, this._pageVisible());
    if (this.env.navigator && this.env.navigator.onLine === false) this.live.stop('offline');
    else if (!this._shouldPause()) this.live.start(this.live.cursor);
    else this.live.stop('paused');
  }

  _fromLeader(event) {
    this._apply(event);
    if (this.tabs) this.tabs.post({ t: 'event', event });
  }

  _fromTab(m) {
    const leader = this.leader;
    switch (m.t) {
      case 'event':
        if (this.live.accept(m.event)) this._apply(m.event);
        break;
      case 'status':
        this._status(m.status, false);
        break;
      case 'state': // the leader's answer to our hello
        if (leader) break;
        if (this.live.cursor === null) this.live.cursor = m.cursor;
        if (m.counts) this._counts(m.counts);
        this._status(m.status, false);
        break;
      case 'hello':
        if (!leader) break;
        this.tabs.post({ t: 'state', counts: this.counts, cursor: this.live.cursor, status: this.status });
        this._seen(m.from, m.visible);
        break;
      case 'lead': // a new leader asks who is visible
        this.tabs.post({ t: 'vis', visible: this._pageVisible() });
        break;
      case 'vis':
        if (leader) this._seen(m.from, m.visible);
        break;
      case 'bye':
        if (leader) this._seen(m.from, undefined);
        break;
      default:
    }
  }

  _seen(tab, visible) {
    if (visible === undefined) this.visible.delete(tab);
    else this.visible.set(tab, visible);
    this._visibilityChanged();
  }

  _apply(event) {
    if (event.type === 'unread_count') this._counts(event.data);
    else if (event.type === 'notification.created' || event.type === 'notification.unsnoozed') {
      this._arrived(event.data);
    }
    else if (event.type === 'resync') this.emit('resync', event);
    this.emit('event', event);
    if (event.type === 'notification.created') this.emit('notification', event.data);
  }

  /** The server sends counts after changes, not after each new item: count it here. */
  _arrived(item) {
    if (!this.counts || item.read_at || item.archived_at) return;
    const byCategory = { ...this.counts.by_category };
    byCategory[item.category] = (byCategory[item.category] || 0) + 1;
    const counts = { ...this.counts, total: this.counts.total + 1, by_category: byCategory };
    if (typeof counts.unseen === 'number' && !item.seen_at) counts.unseen += 1;
    this._counts(counts);
  }

  _status(status, mine) {
    if (mine && this.tabs) this.tabs.post({ t: 'status', status });
    if (status === this.status) return;
    this.status = status;
    this.emit('status', status);
  }

  // --- page visibility and connectivity ----------------------------------------------

  _pageVisible() {
    return this.env.document ? this.env.document.visibilityState !== 'hidden' : true;
  }

  _shouldPause() {
    if (!this.pauseAfter) return false;
    return ![...this.visible.values()].some(Boolean);
  }

  _visibilityChanged() {
    if (!this.leader || !this.pauseAfter) return;
    this.env.clearTimeout(this.pauseTimer);
    if (this._shouldPause()) {
      this.pauseTimer = this.env.setTimeout(() => this.live.stop('paused'), this.pauseAfter);
    } else if (this.live.status === 'paused') {
      this.live.start(this.live.cursor);
    }
  }

  _watchPage() {
    const listen = (target, type, fn) => {
      if (!target?.addEventListener) return;
      target.addEventListener(type, fn);
      this.cleanup.push(() => target.removeEventListener(type, fn));
    };
    listen(this.env.document, 'visibilitychange', () => {
      const visible = this._pageVisible();
      if (this.leader) {
        this.visible.set(this.tabs.id, visible);
        this._visibilityChanged();
      } else if (this.tabs) {
        this.tabs.post({ t: 'vis', visible });
      }
    });
    listen(this.env, 'offline', () => this.leader && this.live.stop('offline'));
    listen(this.env, 'online', () => this.leader && !this._shouldPause() && this.live.start(this.live.cursor));
    listen(this.env, 'pagehide', () => this.disconnect());
  }

  // --- the service worker (sw.js) ------------------------------------------------------

  /**
   * Work with the site's service worker: give it the current token (to mark a clicked push
   * read), and do what it asks of an open tab (mark read, register a renewed subscription,
   * navigate). See swbridge.js.
   */
  useServiceWorker() {
    bridgeServiceWorker(this);
    return this;
  }

  /** A Feed: one list kept up to date by the live events. */
  feed(filter = {}, pageSize = 20) {
    return new Feed(this, filter, pageSize);
  }
}
