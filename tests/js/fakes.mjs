// Stand-ins for the browser APIs node does not have (WebSocket servers, EventSource, Web
// Locks, a clock we can move). The browser tests (tests/browser) run the same code against
// real Chromium and a real API; these pin down the pure logic.

export class Clock {
  constructor() {
    this.now = 1_700_000_000_000;
    this.timers = new Map();
    this.next = 1;
  }

  setTimeout = (fn, ms = 0) => {
    const id = this.next++;
    this.timers.set(id, { at: this.now + Math.max(0, ms), fn, ms });
    return id;
  };

  clearTimeout = (id) => {
    this.timers.delete(id);
  };

  /** The delays of the timers now pending. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now);
  }

  /** Move time forward, running what falls due (in order). */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = Math.max(this.now, due[1].at);
      due[1].fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

/** Let pending promise callbacks run. */
export async function flush() {
  for (let i = 0; i < 10; i += 1) await new Promise((r) => setImmediate(r));
}

export function makeSockets() {
  const made = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.readyState = 0;
      made.push(this);
    }

    send(text) { this.sent.push(JSON.parse(text)); }

    close() { this.readyState = 3; }

    // --- the server's side ---
    open() { this.readyState = 1; this.onopen?.({}); }

    deliver(event) { this.onmessage?.({ data: JSON.stringify(event) }); }

    drop(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
  }
  return { FakeWebSocket, made };
}

export function makeEventSources() {
  const made = [];
  class FakeEventSource {
    constructor(url) {
      this.url = new URL(url);
      this.handlers = {};
      this.closed = false;
      made.push(this);
    }

    addEventListener(type, fn) { (this.handlers[type] ||= []).push(fn); }

    close() { this.closed = true; }

    emit(type, event) {
      for (const fn of this.handlers[type] || []) fn({ data: JSON.stringify(event) });
    }
  }
  return { FakeEventSource, made };
}

/** Web Locks' exclusive request(), enough for leader election. */
export class LockManager {
  constructor() {
    this.queues = new Map();
  }

  request(name, options, callback) {
    const queue = this.queues.get(name) || [];
    this.queues.set(name, queue);
    return new Promise((resolve, reject) => {
      const entry = { callback, resolve, reject };
      options.signal?.addEventListener('abort', () => {
        const i = queue.indexOf(entry);
        if (i > 0) {
          queue.splice(i, 1);
          reject(new Error('AbortError'));
        }
      });
      queue.push(entry);
      if (queue.length === 1) this._grant(name);
    });
  }

  _grant(name) {
    const queue = this.queues.get(name);
    const entry = queue[0];
    if (!entry) return;
    Promise.resolve(entry.callback({ name })).then(entry.resolve, entry.reject).finally(() => {
      queue.shift();
      this._grant(name);
    });
  }
}

/** A JWT-shaped token (unsigned: the client only reads sub and exp). */
export function token(sub, expSeconds, n = 0) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256' })}.${b64({ sub, exp: expSeconds, n })}.sig`;
}
