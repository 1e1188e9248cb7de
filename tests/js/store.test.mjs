// How a list follows the live events.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyUpdate, Emitter, Feed, matches } from '../../clarion/web/store.js';

const item = (id, extra = {}) => ({
  id, seq: Number(id.slice(1)), category: 'links', severity: 'medium', created_at: `2025-01-01T00:00:0${id.slice(1)}Z`,
  read_at: null, seen_at: null, archived_at: null, snoozed_until: null, ...extra,
});

test('matches: unread, archived, snoozed and category filters', () => {
  const now = Date.parse('2025-01-02T00:00:00Z');
  assert.ok(matches(item('n1'), { status: 'unread' }, now));
  assert.ok(!matches(item('n1', { read_at: 'x' }), { status: 'unread' }, now));
  assert.ok(!matches(item('n1', { archived_at: 'x' }), {}, now));
  assert.ok(matches(item('n1', { archived_at: 'x' }), { archived: true }, now));
  assert.ok(!matches(item('n1', { snoozed_until: '2025-01-03T00:00:00Z' }), {}, now));
  assert.ok(matches(item('n1', { snoozed_until: '2025-01-03T00:00:00Z' }), { snoozed: true }, now));
  assert.ok(matches(item('n1', { snoozed_until: '2025-01-01T00:00:00Z' }), {}, now), 'a snooze that ended');
  assert.ok(!matches(item('n1'), { category: 'system' }, now));
  assert.ok(!matches(item('n1', { expires_at: '2025-01-01T00:00:00Z' }), {}, now));
});

test('applyUpdate: ids, read-all per category, delete, delete-read', () => {
  const unread = item('n1');
  const read = item('n2', { read_at: 'r' });
  assert.equal(applyUpdate(unread, { ids: ['n1'], read_at: 't' }).read_at, 't');
  assert.equal(applyUpdate(unread, { ids: ['n9'], read_at: 't' }), unread);
  assert.equal(applyUpdate(read, { ids: ['n2'], read_at: null }).read_at, null, 'mark unread');
  assert.equal(applyUpdate(unread, { ids: ['n1'], seen_at: 's' }).seen_at, 's');
  assert.equal(applyUpdate(unread, { all: true, category: 'links', read_at: 't' }).read_at, 't');
  assert.equal(applyUpdate(unread, { all: true, category: 'system', read_at: 't' }), unread);
  assert.equal(applyUpdate(read, { all: true, category: null, read_at: 't' }).read_at, 'r', 'keeps the first read time');
  assert.equal(applyUpdate(unread, { ids: ['n1'], deleted: true }), null);
  assert.equal(applyUpdate(unread, { all: true, category: null, deleted: true }), unread, 'delete-read keeps unread');
  assert.equal(applyUpdate(read, { all: true, category: 'links', deleted: true }), null);
});

test('a Feed inserts live items in order, drops what leaves its filter, and pages by cursor', async () => {
  const client = new Emitter();
  const pages = {
    '': { items: [item('n5'), item('n4')], next_cursor: 'n4' },
    n4: { items: [item('n4'), item('n3')], next_cursor: null },
  };
  client.list = async (f) => pages[f.cursor || ''];
  const feed = new Feed(client, { status: 'unread' }, 2);
  let changes = 0;
  feed.on('change', () => { changes += 1; });
  await feed.load();
  assert.deepEqual(feed.items.map((i) => i.id), ['n5', 'n4']);
  await feed.more();
  assert.deepEqual(feed.items.map((i) => i.id), ['n5', 'n4', 'n3'], 'no duplicate across pages');
  assert.equal(feed.nextCursor, null);
  client.emit('event', { type: 'notification.created', data: item('n6') });
  client.emit('event', { type: 'notification.created', data: item('n6') });
  assert.deepEqual(feed.items.map((i) => i.id), ['n6', 'n5', 'n4', 'n3']);
  client.emit('event', { type: 'notification.updated', data: { ids: ['n5'], read_at: 't' } });
  assert.deepEqual(feed.items.map((i) => i.id), ['n6', 'n4', 'n3'], 'read: out of the unread list');
  client.emit('event', { type: 'notification.created', data: item('n7', { read_at: 'x' }) });
  assert.equal(feed.items.length, 3, 'a read item does not enter the unread list');
  assert.ok(changes >= 5);
  feed.destroy();
});
