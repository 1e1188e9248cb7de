// The service worker's click routing and marking read, run in a vm with a stand-in `self`
// (the browser test delivers a real push to it in Chromium; clicks cannot be made there).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import vm from 'node:vm';

const SOURCE = readFileSync(new URL('../../clarion/web/sw.js', import.meta.url), 'utf8');

function worker({ tabs = [], fetchStatus = 200 } = {}) {
  const handlers = {};
  const calls = { fetch: [], opened: [], shown: [], messages: [] };
  const makeTab = (url, controlled = true) => {
    const tab = {
      url, frameType: 'top-level',
      focus: async () => { calls.focused = tab.url; return tab; },
      postMessage: (m) => calls.messages.push([tab.url, m]),
    };
    if (controlled) tab.navigate = async (to) => { tab.url = to; calls.navigated = to; return tab; };
    return tab;
  };
  const windows = tabs.map(([url, controlled]) => makeTab(url, controlled));
  const self = {
    location: { href: 'https://clarion.example/ui/sw.js' },
    addEventListener: (type, fn) => { handlers[type] = fn; },
    skipWaiting: () => {},
    clients: {
      claim: async () => {},
      matchAll: async () => windows,
      openWindow: async (url) => { calls.opened.push(url); return makeTab(url); },
    },
    registration: { showNotification: async (title, options) => calls.shown.push({ title, options }) },
  };
  const context = vm.createContext({
    self, URL, atob, Promise, JSON, Date, Uint8Array,
    fetch: async (url, init) => {
      calls.fetch.push([String(url), init.method, init.headers.Authorization, init.body]);
      return { ok: fetchStatus < 400, status: fetchStatus, json: async () => ({}) };
    },
  });
  vm.runInContext(SOURCE, context);
  const fire = async (type, event) => {
    let done;
    handlers[type]({ ...event, waitUntil: (p) => { done = p; } });
    await done;
  };
  return { fire, calls, windows };
}

const click = (data, action = '') => ({
  action, notification: { data, close: () => {} },
});

test('a push shows its title, body, tag and action buttons', async () => {
  const w = worker();
  await w.fire('push', {
    data: {
      json: () => ({
        id: 'n1', title: '<b>x</b>', body: 'b', url: '/ui/', severity: 'critical',
        actions: [{ action: 'ok', title: 'OK', url: null }],
      }),
    },
  });
  const [{ title, options }] = w.calls.shown;
  assert.equal(title, '<b>x</b>');
  assert.equal(options.tag, 'n1');
  assert.equal(options.requireInteraction, true);
  assert.deepEqual(JSON.parse(JSON.stringify(options.actions)), [{ action: 'ok', title: 'OK' }]);
});

test('a click focuses the open tab of the site and takes it to the url, and marks it read', async () => {
  const w = worker({ tabs: [['https://other.example/', true], ['https://clarion.example/ui/#/inbox', true]] });
  await w.fire('message', { data: { type: 'clarion:token', token: 'T' } });
  await w.fire('notificationclick', click({ id: 'n1', url: 'https://clarion.example/ui/#/preferences' }));
  assert.equal(w.calls.focused, 'https://clarion.example/ui/#/inbox');
  assert.equal(w.calls.navigated, 'https://clarion.example/ui/#/preferences');
  assert.deepEqual(w.calls.opened, []);
  assert.deepEqual(w.calls.fetch, [[
    'https://clarion.example/v1/me/notifications/n1', 'PATCH', 'Bearer T', '{"read":true}',
  ]]);
});

test('with no tab of that origin a click opens a window; javascript: urls never open', async () => {
  const w = worker({ tabs: [['https://other.example/', true]] });
  await w.fire('notificationclick', click({ id: 'n2', url: 'https://app.example/x', token: 'P' }));
  assert.deepEqual(w.calls.opened, ['https://app.example/x']);
  assert.equal(w.calls.fetch[0][2], 'Bearer P', 'the payload token first');
  const evil = worker();
  await evil.fire('notificationclick', click({ id: 'n3', url: 'javascript:alert(1)' }));
  assert.deepEqual(evil.calls.opened, ['https://clarion.example/ui/'], 'the inbox instead');
});

test('without a token the worker asks an open tab to mark it read', async () => {
  const w = worker({ tabs: [['https://clarion.example/ui/', false]] });
  await w.fire('notificationclick', click({ id: 'n4', url: '/ui/#/inbox' }));
  assert.deepEqual(w.calls.fetch, []);
  assert.deepEqual(w.calls.messages.map(([, m]) => m.type), ['clarion:read', 'clarion:navigate']);
  assert.equal(w.calls.messages[0][1].id, 'n4');
});

test('an action button records the action and opens its url', async () => {
  const w = worker();
  await w.fire('message', { data: { type: 'clarion:token', token: 'T' } });
  const actions = [{ id: 'approve', label: 'Approve', url: 'https://app.example/ok' }];
  await w.fire('notificationclick', click({ id: 'n5', url: 'https://app.example/n5', actions }, 'approve'));
  assert.equal(w.calls.fetch[0][0], 'https://clarion.example/v1/me/notifications/n5/actions/approve');
  assert.equal(w.calls.fetch[0][1], 'POST');
  assert.deepEqual(w.calls.opened, ['https://app.example/ok']);
});
