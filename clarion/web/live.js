// The live stream of one user: WebSocket with exact cursor resume, SSE when WebSocket
// cannot connect, exponential backoff with full jitter, re-authentication.
// No DOM here: every browser API comes in through `env`, so node --test drives it.

/** Close codes the server uses (docs/channels/in-app.md). */
export const CLOSE = Object.freeze({ RESTART: 1012, RESYNC: 4000, REPLACED: 4001, REAUTH: 4401 });

/** Event types that take a step of the user's sequence (their cursor is theirs alone). */
const SEQUENCED = new Set(['notification.created', 'notification.updated', 'notification.unsnoozed']);
const SSE_TYPES = [...SEQUENCED, 'unread_count', 'heartbeat', 'resync', 'reconnect', 'reauth'];

/**
 * Full-jitter backoff: a uniform delay in [0, min(cap, base * 2^attempt)] ms.
 * @param {number} attempt 0 for the first retry
 * @param {{base?: number, cap?: number, random?: () => number}} [o]
 */
export function backoff(attempt, { base = 500, cap = 30000, random = Math.random } = {}) {
  return Math.floor(random() * Math.min(cap, base * 2 ** Math.min(attempt, 30)));
}

/** The `exp` of a JWT in ms since the epoch, or null (the signature is the server's business). */
export function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * A token, or a getToken() callback, cached until shortly before it expires.
 */
export class TokenSource {
  /** @param {{token?: string, getToken?: () => Promise<string>|string, now?: () => number}} o */
  constructor({ token, getToken, now = Date.now }) {
    this.getToken = getToken;
    this.token = token || null;
    this.now = now;
    this.pending = null;
  }

  /** The current token; a fresh one from getToken() when forced, missing or expiring. */
  async get(force = false) {
    const exp = this.token && tokenExpiry(this.token);
    const stale = !this.token || force || (exp !== null && exp - this.now() < 10000);
    if (!stale || !this.getToken) return this.token;
    if (!this.pending) {
      this.pending = Promise.resolve(this.getToken()).finally(() => { this.pending = null; });
    }
    this.token = await this.pending;
    return this.token;
  }

  /** Forget the cached token (refused or expired); a fixed token is kept. */
  invalidate() {
    if (this.getToken) this.token = null;
  }
}

/**
 * One live connection. Events go to `onEvent(event)` in cursor order, without duplicates;
 * `onStatus(status)` hears 'connecting' | 'live' | 'waiting' | 'offline' | 'paused' | 'stopped'.
 */
export class LiveConnection {
  /**
   * @param {object} o
   * @param {string} o.apiUrl http(s) base of the API
   * @param {TokenSource} o.tokens
   * @param {(e: object) => void} o.onEvent
   * @param {(s: string) => void} [o.onStatus]
   * @param {'auto'|'websocket'|'sse'} [o.transport]
   * @param {object} [o.env] WebSocket, EventSource, setTimeout, clearTimeout, random, now
   */
  constructor({ apiUrl, tokens, onEvent, onStatus = () => {}, transport = 'auto', env = globalThis }) {
    this.apiUrl = apiUrl.replace(/\/$/, '');
    this.tokens = tokens;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.mode = transport === 'sse' ? 'sse' : 'websocket';
    this.allowFallback = transport === 'auto';
    this.env = env;
    this.cursor = null;
    this.attempt = 0;
    this.wsFailures = 0;
    this.socket = null;
    this.timer = null;
    this.refreshTimer = null;
    this.status = 'stopped';
    this.generation = 0; // a new one per socket: callbacks of an old socket are ignored
  }

  /** Connect, resuming after `cursor` when given. */
  start(cursor = this.cursor) {
    this.cursor = cursor ?? null;
    this.attempt = 0;
    this._connectSoon(0);
  }

  /** Close and stay closed; `status` tells why ('paused', 'offline' or 'stopped'). */
  stop(status = 'stopped') {
    this._teardown();
    this._setStatus(status);
  }

  _setStatus(status) {
    if (status !== this.status) {
      this.status = status;
      this.onStatus(status);
    }
  }

  _teardown() {
    this.generation += 1;
    this.env.clearTimeout(this.timer);
    this.env.clearTimeout(this.refreshTimer);
    this.timer = this.refreshTimer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      try { socket.close(); } catch { /* already closed */ }
    }
  }

  _connectSoon(delay) {
    this._teardown();
    this._setStatus(delay > 0 ? 'waiting' : 'connecting');
    const generation = this.generation;
    this.timer = this.env.setTimeout(() => {
      if (generation === this.generation) this._connect(generation, false);
    }, delay);
  }

  _retry(force = false) {
    const delay = backoff(this.attempt, { random: this.env.random || Math.random });
    this.attempt += 1;
    if (force) this.tokens.invalidate();
    this._connectSoon(delay);
  }

  async _connect(generation, forceToken) {
    this._setStatus('connecting');
    let token;
    try {
      token = await this.tokens.get(forceToken);
    } catch {
      if (generation === this.generation) this._retry();
      return;
    }
    if (generation !== this.generation) return;
    const query = new URLSearchParams({ token });
    if (this.cursor !== null) query.set('since', String(this.cursor));
    if (this.mode === 'websocket' && this.env.WebSocket) {
      this._openWebSocket(generation, query, token);
    } else if (this.env.EventSource) {
      this._openSse(generation, query);
    } else {
      this._retry();
    }
  }

  _openWebSocket(generation, query, token) {
    const url = `${this.apiUrl.replace(/^http/, 'ws')}/v1/me/stream?${query}`;
    const ws = new this.env.WebSocket(url);
    this.socket = ws;
    let opened = false;
    ws.onopen = () => {
      if (generation !== this.generation) return;
      opened = true;
      this.wsFailures = 0;
      this._setStatus('live');
      this._scheduleRefresh(generation, token);
    };
    ws.onmessage = (m) => generation === this.generation && this._receive(m.data);
    ws.onclose = (e) => {
      if (generation !== this.generation) return;
      this.socket = null;
      this._closed(e.code, opened);
    };
  }

  _closed(code, opened) {
    if (code === CLOSE.RESTART) return this._connectSoon(0);
    if (code === CLOSE.REAUTH) {
      this.tokens.invalidate();
      return this._connectSoon(0);
    }
    if (!opened) {
      this.wsFailures += 1;
      if (this.allowFallback && this.wsFailures >= 2 && this.env.EventSource) this.mode = 'sse';
      // A refused handshake looks the same as a dead server: a fresh token next time.
      return this._retry(this.wsFailures >= 2);
    }
    return this._retry();
  }

  _scheduleRefresh(generation, token) {
    const exp = tokenExpiry(token);
    if (exp === null || !this.tokens.getToken) return;
    const now = (this.env.now || Date.now)();
    const wait = Math.max(5000, exp - now - 60000);
    this.refreshTimer = this.env.setTimeout(async () => {
      try {
        const fresh = await this.tokens.get(true);
        if (generation !== this.generation || !this.socket) return;
        this.socket.send(JSON.stringify({ type: 'auth', token: fresh }));
        this._scheduleRefresh(generation, fresh);
      } catch { /* the server closes with 4401 and we reconnect */ }
    }, wait);
  }

  _openSse(generation, query) {
    const es = new this.env.EventSource(`${this.apiUrl}/v1/me/stream/sse?${query}`);
    this.socket = es;
    es.onopen = () => generation === this.generation && this._setStatus('live');
    for (const type of SSE_TYPES) {
      es.addEventListener(type, (m) => {
        if (generation !== this.generation) return;
        if (type === 'reconnect') return this._connectSoon(0);
        if (type === 'reauth') {
          this.tokens.invalidate();
          return this._connectSoon(0);
        }
        this._receive(m.data);
      });
    }
    es.onerror = () => {
      // EventSource would retry by itself with a stale token in its URL: we do it instead.
      if (generation === this.generation) this._retry();
    };
  }

  _receive(text) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    if (!event || typeof event.type !== 'string') return;
    this.attempt = 0;
    if (this.accept(event)) this.onEvent(event);
  }

  /**
   * Track the cursor: false for an event already seen (a replay overlapping live events),
   * true for one to apply. Tabs that follow a leader pass its events through here too, so
   * the tab that takes over resumes from exactly where it was.
   */
  accept(event) {
    const cursor = typeof event.cursor === 'number' ? event.cursor : null;
    if (SEQUENCED.has(event.type) && cursor !== null) {
      if (this.cursor !== null && cursor <= this.cursor) return false;
      this.cursor = cursor;
    } else if (event.type === 'resync' && cursor !== null) {
      this.cursor = cursor; // refetch, then carry on from here (it may be lower: a reset)
    } else if (this.cursor === null && cursor !== null) {
      this.cursor = cursor; // the first unread_count tells where a fresh stream stands
    }
    return true;
  }
}
