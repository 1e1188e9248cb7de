// One connection for all tabs: leader election with Web Locks, events over BroadcastChannel.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ClarionClient } from '../../clarion/web/client.js';
import { Clock, flush, LockManager, makeSockets, token } from './fakes.mjs';

/** Tabs of one browser: the same lock manager and (real) BroadcastChannel, one socket list. */
function browser() {
  const clock = new Clock();
  const locks = new LockManager();
  const { FakeWebSocket, made: sockets } = makeSockets();
  const tabs = [];
  const open = ({ pauseWhenHidden = false, hidden = false } = {}) => {
    const listeners = {};
    const document = {
      visibilityState: hidden ? 'hidden' : 'visible',
      addEventListener: (type, fn) => { listeners[type] = fn; },
      removeEventListener: () => {},
    };
    const env = {
      WebSocket: FakeWebSocket, BroadcastChannel, navigator: { locks, onLine: true },
      setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, random: () => 0.5,
      document, now: () => clock.now,
    };
    const client = new ClarionClient({
      apiUrl: 'http://api.test', token: token('ada', 9e9), env, pauseWhenHidden,
    });
    const seen = { counts: [], created: [] };
    client.on('count', (c) => seen.counts.push(c.total));
    client.on('notification', (n) => seen.created.push(n.id));
    client.connect();
    const tab = {
      client, seen,
      setHidden: (h) => { document.visibilityState = h ? 'hidden' : 'visible'; listeners.visibilitychange(); },
    };
    tabs.push(tab);
    return tab;
  };
  const settle = async () => { await clock.advance(0); await wait(); await clock.advance(0); };
  const close = () => tabs.forEach((t) => t.client.disconnect());
  return { clock, sockets, open, settle, close };
}

const wait = () => new Promise((r) => setTimeout(r, 20)).then(flush);

test('two tabs share one connection; events and counts reach both', async (t) => {
  const b = browser();
  t.after(b.close);
  const one = b.open();
  const two = b.open();
  await b.settle();
  assert.equal(b.sockets.length, 1, 'one WebSocket for both tabs');
  assert.ok(one.client.leader && !two.client.leader);
  const ws = b.sockets[0];
  ws.open();
  ws.deliver({ type: 'unread_count', cursor: 0, data: { total: 0, by_category: {} } });
  // The server sends no count after a new item: each tab counts it (then the next
  // unread_count, after any change, is the truth again).
  ws.deliver({ type: 'notification.created', cursor: 1, data: { id: 'a', category: 'x' } });
  ws.deliver({ type: 'unread_count', cursor: 2, data: { total: 0, by_category: {} } });
  await wait();
  assert.deepEqual(one.seen.counts, [0, 1, 0]);
  assert.deepEqual(two.seen.counts, [0, 1, 0]);
  assert.deepEqual(two.client.counts, { total: 0, by_category: {} });
  assert.deepEqual(two.seen.created, ['a']);
  assert.equal(two.client.status, 'live', 'the follower shows the leader status');
});

test('when the leading tab closes, another takes over from the exact cursor', async (t) => {
  const b = browser();
  t.after(b.close);
  const one = b.open();
  const two = b.open();
  await b.settle();
  b.sockets[0].open();
  b.sockets[0].deliver({ type: 'notification.created', cursor: 5, data: { id: 'e' } });
  b.sockets[0].deliver({ type: 'notification.created', cursor: 6, data: { id: 'f' } });
  await wait();
  one.client.disconnect();
  await b.settle();
  assert.ok(two.client.leader);
  assert.equal(b.sockets.length, 2);
  assert.equal(b.sockets[1].url.searchParams.get('since'), '6');
  b.sockets[1].open();
  b.sockets[1].deliver({ type: 'notification.created', cursor: 6, data: { id: 'f' } }); // replay overlap
  b.sockets[1].deliver({ type: 'notification.created', cursor: 7, data: { id: 'g' } });
  await wait();
  assert.deepEqual(two.seen.created, ['e', 'f', 'g']);
});

test('a late tab learns the count and cursor from the leader', async (t) => {
  const b = browser();
  t.after(b.close);
  b.open();
  await b.settle();
  b.sockets[0].open();
  b.sockets[0].deliver({ type: 'unread_count', cursor: 9, data: { total: 3, by_category: { x: 3 } } });
  await wait();
  const late = b.open();
  await b.settle();
  assert.deepEqual(late.seen.counts, [3]);
  assert.equal(late.client.live.cursor, 9);
});

test('pauseWhenHidden: the stream closes while no tab is visible and resumes from its cursor', async (t) => {
  const b = browser();
  t.after(b.close);
  const one = b.open({ pauseWhenHidden: 1000 });
  const two = b.open({ pauseWhenHidden: 1000 });
  await b.settle();
  b.sockets[0].open();
  b.sockets[0].deliver({ type: 'notification.created', cursor: 3, data: { id: 'c' } });
  one.setHidden(true);
  await wait();
  await b.clock.advance(5000);
  assert.equal(one.client.status, 'live', 'another tab is still visible');
  two.setHidden(true);
  await wait();
  await b.clock.advance(1000);
  assert.equal(one.client.status, 'paused');
  assert.equal(b.sockets[0].readyState, 3, 'closed');
  two.setHidden(false);
  await wait();
  await b.clock.advance(0);
  assert.equal(b.sockets.length, 2);
  assert.equal(b.sockets[1].url.searchParams.get('since'), '3');
});

test('counts offered while the stream connects show until the stream sends its own', async (t) => {
  const b = browser();
  t.after(b.close);
  const one = b.open();
  assert.equal(one.client.offerCounts({ total: 3, by_category: { x: 3 } }), true);
  assert.deepEqual(one.seen.counts, [3]);
  await b.settle();
  const ws = b.sockets[0];
  ws.open();
  // The stream's count is the truth (the offered one may be older); new items count on it.
  ws.deliver({ type: 'unread_count', cursor: 5, data: { total: 4, by_category: { x: 4 } } });
  ws.deliver({ type: 'notification.created', cursor: 6, data: { id: 'a', category: 'x' } });
  await b.settle();
  assert.deepEqual(one.seen.counts, [3, 4, 5]);
  // A late offer (a slow prefetch) never goes over what the stream said.
  assert.equal(one.client.offerCounts({ total: 3, by_category: { x: 3 } }), false);
  assert.equal(one.client.counts.total, 5);
});
