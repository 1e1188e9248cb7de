// The REST half of the client: the user's calls to /v1/me/... with a token that is renewed
// on a 401, the counts they bring, and the local echo of a change (an 'event' with
// local: true) so every view shows it before the answer. client.js adds the live stream.

import { TokenSource } from './live.js';
import { Emitter } from './store.js';

/** An error answer of the API (RFC 9457 problem+json). */
export class ClarionError extends Error {
  constructor(status, problem = {}, headers = null) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    /** The problem's slug: 'preference-locked', 'no-target', ... (or '' when none). */
    this.kind = String(problem.type || '').replace('urn:clarion:problem:', '');
    this.retryAfter = Number(headers?.get?.('Retry-After')) || null;
  }
}

export class RestClient extends Emitter {
  /**
   * @param {object} o
   * @param {string} o.apiUrl
   * @param {string} [o.token] a user token
   * @param {() => Promise<string>|string} [o.getToken] called for a (fresh) token
   * @param {object} o.env globals to use instead of the browser's (tests)
   */
  constructor({ apiUrl, token, getToken, env }) {
    super();
    this.apiUrl = apiUrl.replace(/\/$/, '');
    this.env = env;
    this.tokens = new TokenSource({ token, getToken });
    /** @type {{total: number, by_category: Object<string, number>, unseen?: number}|null} */
    this.counts = null;
  }

  _counts(counts) {
    this.counts = counts;
    this.emit('count', counts);
  }

  /**
   * One API call with the user token; a 401 gets one retry with a fresh token.
   * @returns {Promise<any>} the JSON answer (null for 204)
   */
  async request(method, path, { query, body } = {}) {
    const url = new URL(this.apiUrl + path, this.env.location?.href);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    }
    for (let attempt = 0; ; attempt += 1) {
      const token = await this.tokens.get(attempt > 0);
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const answer = await this.env.fetch(url, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (answer.status === 401 && attempt === 0 && this.tokens.getToken) {
        this.tokens.invalidate();
        continue;
      }
      if (answer.status === 204) return null;
      const data = await answer.json().catch(() => ({}));
      if (!answer.ok) throw new ClarionError(answer.status, data, answer.headers);
      return data;
    }
  }

  /** @param {import('./client.js').FeedFilter & {limit?: number, cursor?: string}} [filter] */
  list(filter = {}) {
    return this.request('GET', '/v1/me/notifications', { query: filter });
  }

  get(id) {
    return this.request('GET', `/v1/me/notifications/${encodeURIComponent(id)}`);
  }

  /** PATCH {read?, archived?, seen?, snoozed_until?}; the change shows at once locally. */
  async update(id, patch) {
    const now = new Date().toISOString();
    const local = { ids: [id] };
    if ('read' in patch) local.read_at = patch.read ? now : null;
    if ('archived' in patch) local.archived_at = patch.archived ? now : null;
    if ('seen' in patch) local.seen_at = patch.seen ? now : null;
    if ('snoozed_until' in patch) local.snoozed_until = patch.snoozed_until;
    this.emit('event', { type: 'notification.updated', data: local, local: true });
    return this.request('PATCH', `/v1/me/notifications/${encodeURIComponent(id)}`, { body: patch });
  }

  markRead(id, read = true) { return this.update(id, { read }); }

  archive(id, archived = true) { return this.update(id, { archived }); }

  /** @param {string|Date|null} until */
  snooze(id, until) {
    const value = until instanceof Date ? until.toISOString() : until;
    return this.update(id, { snoozed_until: value });
  }

  async remove(id) {
    this.emit('event', { type: 'notification.updated', data: { ids: [id], deleted: true }, local: true });
    return this.request('DELETE', `/v1/me/notifications/${encodeURIComponent(id)}`);
  }

  /** Mark these ids (at most 100) seen. */
  markSeen(ids) {
    if (!ids.length) return Promise.resolve({ updated: 0 });
    const local = { ids: ids.slice(0, 100), seen_at: new Date().toISOString() };
    this.emit('event', { type: 'notification.updated', data: local, local: true });
    return this.request('POST', '/v1/me/notifications/seen', { body: { ids: ids.slice(0, 100) } });
  }

  /** Mark everything up to this cursor seen. */
  markSeenUpTo(cursor) {
    return this.request('POST', '/v1/me/notifications/seen', { body: { up_to: cursor } });
  }

  readAll(category) {
    const at = new Date().toISOString();
    this.emit('event', {
      type: 'notification.updated', data: { all: true, category: category || null, read_at: at }, local: true,
    });
    return this.request('POST', '/v1/me/notifications/read-all', { body: category ? { category } : {} });
  }

  deleteRead(category) {
    return this.request('POST', '/v1/me/notifications/delete-read', { body: category ? { category } : {} });
  }

  /** Click an action button: recorded, the notification marked read; gives its url. */
  action(id, actionId) {
    return this.request(
      'POST', `/v1/me/notifications/${encodeURIComponent(id)}/actions/${encodeURIComponent(actionId)}`,
    );
  }

  /**
   * Counts had elsewhere while the stream connects (a page that fetched them during its
   * own boot): shown only if the stream (or the leader tab) has not sent any yet, and then
   * replaced by the stream's own, which comes with the cursor the events follow from.
   * @param {{total: number, by_category: Object<string, number>, unseen?: number}|null} counts
   * @returns {boolean} whether they were taken
   */
  offerCounts(counts) {
    if (this.counts || !counts || typeof counts.total !== 'number') return false;
    this._counts(counts);
    return true;
  }

  /** Counts from the API (the stream keeps `counts` current once connected). */
  async unreadCount() {
    this._counts(await this.request('GET', '/v1/me/notifications/unread-count'));
    return this.counts;
  }

  preferences() { return this.request('GET', '/v1/me/preferences'); }

  savePreferences(body) { return this.request('PUT', '/v1/me/preferences', { body }); }

  async vapidKey() {
    return (await this.request('GET', '/v1/push/vapid-public-key')).public_key;
  }

  pushSubscriptions() { return this.request('GET', '/v1/me/push-subscriptions'); }

  addPushSubscription(subscription) {
    const json = typeof subscription.toJSON === 'function' ? subscription.toJSON() : subscription;
    const ua = this.env.navigator?.userAgent;
    return this.request('POST', '/v1/me/push-subscriptions', {
      body: { endpoint: json.endpoint, keys: json.keys, user_agent: ua ? ua.slice(0, 512) : undefined },
    });
  }

  removePushSubscription(endpoint) {
    return this.request('DELETE', '/v1/me/push-subscriptions', { query: { endpoint } });
  }

  /** @param {'in_app'|'email'|'push'|'all'} channel */
  sendTest(channel) {
    return this.request('POST', '/v1/me/notifications/test', { body: { channel } });
  }
}
