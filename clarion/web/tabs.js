// One live connection for all the tabs of an origin: the tab holding a Web Lock is the
// leader and owns the connection; it relays every event on a BroadcastChannel.
//
// Why not a SharedWorker: a worker's script must come from the page's own origin, and the
// elements are usually imported from Clarion's origin by another site; Web Locks and
// BroadcastChannel work from any module, and a lock is released by the browser when its
// tab closes or crashes, so the next tab takes over without a timeout.

/**
 * @typedef {object} TabMessage
 * @property {string} t 'event' | 'status' | 'hello' | 'state' | 'vis' | 'bye'
 */

let tabCounter = 0;

export class TabGroup {
  /**
   * @param {object} o
   * @param {string} o.name the lock and channel name (one per API and user)
   * @param {() => void} o.onLeader this tab now owns the connection
   * @param {(m: TabMessage) => void} o.onMessage a message from another tab
   * @param {object} [o.env] BroadcastChannel, navigator (with locks)
   */
  constructor({ name, onLeader, onMessage, env = globalThis }) {
    this.name = name;
    this.onLeader = onLeader;
    this.onMessage = onMessage;
    this.env = env;
    this.id = `${Date.now().toString(36)}-${(tabCounter += 1)}-${Math.random().toString(36).slice(2, 8)}`;
    this.leader = false;
    this.channel = null;
    this.release = null;
    this.abort = null;
  }

  /** True when tabs can share (otherwise every tab leads its own connection). */
  get shared() {
    return Boolean(this.env.BroadcastChannel && this.env.navigator?.locks);
  }

  start() {
    if (!this.shared) {
      this._lead();
      return;
    }
    this.channel = new this.env.BroadcastChannel(this.name);
    this.channel.onmessage = (m) => m.data && m.data.from !== this.id && this.onMessage(m.data);
    this.abort = new AbortController();
    this.env.navigator.locks
      .request(this.name, { signal: this.abort.signal }, () => new Promise((resolve) => {
        this.release = resolve;
        this._lead();
      }))
      .catch(() => { /* aborted: stop() before the lock was granted */ });
  }

  _lead() {
    this.leader = true;
    this.onLeader();
  }

  /** Send to every other tab of the group. */
  post(message) {
    if (this.channel) this.channel.postMessage({ ...message, from: this.id });
  }

  stop() {
    if (this.channel) this.post({ t: 'bye' });
    if (this.abort) this.abort.abort();
    if (this.release) this.release();
    if (this.channel) this.channel.close();
    this.channel = this.release = this.abort = null;
    this.leader = false;
  }
}
