/* Clarion's service worker: shows web pushes, routes their clicks, marks them read.
 *
 * A classic script (not a module), so a site on another origin can use it from its own
 * worker with one line:  self.CLARION_API_URL = 'https://clarion.example';
 *                        importScripts('https://clarion.example/ui/sw.js');
 * (a service worker must be served by the site whose pages it controls).
 *
 * Marking read needs a user token, and a click often comes when no tab is open. The worker
 * uses, in order: the per-notification token in the push payload (`token`, valid for that
 * notification only), the token an open page posted to it (ClarionClient.useServiceWorker),
 * else it asks an open tab of the site to do it; the tab's client then marks it read.
 */
'use strict';

const clarion = { token: null, apiUrl: null };

function apiUrl() {
  if (clarion.apiUrl || self.CLARION_API_URL) return (clarion.apiUrl || self.CLARION_API_URL).replace(/\/$/, '');
  return new URL('/', self.location.href).href.replace(/\/$/, '');
}

function safeUrl(url) {
  if (typeof url !== 'string' || !url) return null;
  try {
    const parsed = new URL(url, self.location.href);
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? parsed.href : null;
  } catch (e) {
    return null;
  }
}

function payloadOf(event) {
  if (!event.data) return {};
  try {
    return event.data.json();
  } catch (e) {
    return { title: event.data.text() };
  }
}

/** The notification a push payload asks for (actions as buttons, tag = collapse key). */
function notificationOf(data) {
  // The worker sends the Notification API's names (action, title); the inbox's are id, label.
  const actions = (Array.isArray(data.actions) ? data.actions.slice(0, 3) : []).map((a) => ({
    id: String(a.action ?? a.id), label: String(a.title ?? a.label), url: a.url ?? null,
  }));
  const max = (self.Notification && self.Notification.maxActions) || actions.length;
  const options = {
    body: data.body || '',
    icon: data.icon || new URL('icon.svg', self.location.href).href,
    data: { id: data.id, url: data.url, token: data.token, actions },
    actions: actions.slice(0, max).map((a) => ({ action: a.id, title: a.label })),
    requireInteraction: data.severity === 'critical',
    timestamp: data.created_at ? Date.parse(data.created_at) : Date.now(),
  };
  if (data.badge) options.badge = data.badge;
  const tag = data.collapse_key || data.tag || data.id;
  if (tag) {
    options.tag = String(tag);
    options.renotify = Boolean(data.collapse_key);
  }
  return { title: data.title || 'Notification', options };
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('message', (event) => {
  const m = event.data || {};
  if (m.type === 'clarion:token') {
    clarion.token = m.token || null;
    if (m.apiUrl) clarion.apiUrl = m.apiUrl;
  }
});

self.addEventListener('push', (event) => {
  const shown = notificationOf(payloadOf(event));
  event.waitUntil(self.registration.showNotification(shown.title, shown.options));
});

async function windows() {
  return self.clients.matchAll({ type: 'window', includeUncontrolled: true });
}

/** Focus a tab of the site and take it to `url`, or open a new one. */
async function openOrFocus(url) {
  const target = new URL(url);
  const tabs = await windows();
  const same = tabs.find((c) => new URL(c.url).href === target.href)
    || tabs.find((c) => new URL(c.url).origin === target.origin);
  if (!same) return self.clients.openWindow(url);
  const focused = await same.focus();
  if (focused.url !== target.href) {
    if (typeof focused.navigate === 'function' && focused.frameType !== 'nested') {
      try {
        return await focused.navigate(url);
      } catch (e) { /* not controlled by this worker: the page navigates itself */ }
    }
    focused.postMessage({ type: 'clarion:navigate', url });
  }
  return focused;
}

async function callApi(method, path, token, body) {
  const answer = await fetch(apiUrl() + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
  return answer.status === 204 ? null : answer.json();
}

/** Mark read (or record an action click): with a token if we have one, else via a tab. */
async function record(data, actionId) {
  const id = encodeURIComponent(data.id);
  const path = actionId ? `/v1/me/notifications/${id}/actions/${encodeURIComponent(actionId)}` : `/v1/me/notifications/${id}`;
  for (const token of [data.token, clarion.token]) {
    if (!token) continue;
    try {
      return await (actionId ? callApi('POST', path, token) : callApi('PATCH', path, token, { read: true }));
    } catch (e) { /* try the next way */ }
  }
  const tabs = await windows();
  tabs.forEach((c) => c.postMessage({ type: 'clarion:read', id: data.id, action: actionId || null }));
  return null;
}

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const action = event.action ? (data.actions || []).find((a) => String(a.id) === event.action) : null;
  const url = safeUrl(action ? action.url : data.url) || (action ? null : safeUrl(new URL('./', self.location.href).href));
  // Focus or open at once (the click's user activation does not last), record meanwhile.
  const steps = [record(data, action ? action.id : null)];
  if (url) steps.push(openOrFocus(url));
  event.waitUntil(Promise.allSettled(steps));
});

function keyBytes(b64url) {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** The browser replaced the subscription: subscribe again and tell the API (or a tab). */
self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil((async () => {
    let subscription = event.newSubscription;
    if (!subscription) {
      let key = event.oldSubscription && event.oldSubscription.options.applicationServerKey;
      if (!key) {
        const answer = await fetch(`${apiUrl()}/v1/push/vapid-public-key`);
        key = keyBytes((await answer.json()).public_key);
      }
      subscription = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    const json = subscription.toJSON();
    if (clarion.token) {
      try {
        await callApi('POST', '/v1/me/push-subscriptions', clarion.token, { endpoint: json.endpoint, keys: json.keys });
        return;
      } catch (e) { /* a tab does it */ }
    }
    (await windows()).forEach((c) => c.postMessage({ type: 'clarion:resubscribe', subscription: json }));
  })());
});
