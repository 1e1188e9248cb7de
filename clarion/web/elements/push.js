// The preferences page's push section: explain, ask permission, subscribe with the
// server's VAPID key, register the subscription; the user's devices with "remove".

import { h } from './base.js';

/** base64url -> Uint8Array (what pushManager.subscribe wants as applicationServerKey). */
export function keyBytes(b64url) {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** The service worker's URL: the `sw` attribute, else /ui/sw.js of the API. */
function workerUrl(el) {
  return el.getAttribute('sw') || `${el.client.apiUrl}/ui/sw.js`;
}

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in globalThis && 'Notification' in globalThis;
}

/** Register the worker (same origin as the page only), subscribe, and tell the API. */
export async function enablePush(el) {
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') return permission;
  const key = await el.client.vapidKey();
  const registration = await navigator.serviceWorker.register(workerUrl(el));
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey: keyBytes(key),
    });
  }
  await el.client.addPushSubscription(subscription);
  return 'granted';
}

async function currentEndpoint() {
  if (!pushSupported()) return null;
  const registration = await navigator.serviceWorker.getRegistration();
  const subscription = await registration?.pushManager.getSubscription();
  return subscription?.endpoint || null;
}

/** The section, filled in as answers arrive. */
export function pushSection(el) {
  const t = (k, v) => el.t(k, v);
  const status = h('p', { class: 'muted', part: 'push-status', role: 'status' });
  const devices = h('ul', { class: 'devices', part: 'devices' });
  const enable = h('button', {
    class: 'btn primary', part: 'push-enable', text: t('push.enable'),
    on: {
      click: async () => {
        enable.disabled = true;
        try {
          const outcome = await enablePush(el);
          status.textContent = outcome === 'granted' ? t('push.enabled') : t('push.denied');
        } catch (err) {
          status.textContent = err.kind === 'push-not-configured' ? t('push.not_configured') : t('push.failed');
        }
        enable.disabled = false;
        listDevices();
      },
    },
  });

  async function listDevices() {
    let subs = [];
    try {
      subs = await el.client.pushSubscriptions();
    } catch {
      return;
    }
    const mine = await currentEndpoint().catch(() => null);
    devices.replaceChildren(...(subs.length ? subs.map((s) => h('li', { part: 'device', 'data-endpoint': s.endpoint },
      h('span', { text: s.user_agent || new URL(s.endpoint).host }),
      s.endpoint === mine ? h('span', { class: 'muted', text: ` (${t('push.this_device')})` }) : null,
      h('span', { class: 'muted', text: ` · ${el.i18n.date(s.created_at)}` }),
      h('button', {
        class: 'link', part: 'device-remove', text: t('push.remove'),
        on: {
          click: async () => {
            await el.client.removePushSubscription(s.endpoint).catch(() => {});
            listDevices();
          },
        },
      }))) : [h('li', { class: 'muted', text: t('push.none') })]));
  }

  if (!pushSupported()) {
    status.textContent = t('push.unsupported');
    enable.hidden = true;
  } else if (Notification.permission === 'denied') {
    status.textContent = t('push.denied');
    enable.hidden = true;
  }
  listDevices();
  return h('section', { part: 'push', class: 'card', 'aria-labelledby': 'push-title' },
    h('h3', { id: 'push-title', text: t('push.title') }),
    h('p', { text: t('push.explain') }),
    enable, status,
    h('h4', { text: t('push.devices') }), devices);
}

/** "Send me a test notification", per channel. */
export function testSection(el, channels) {
  const t = (k, v) => el.t(k, v);
  const result = h('p', { class: 'muted', part: 'test-result', role: 'status' });
  const send = async (channel) => {
    result.textContent = '';
    try {
      await el.client.sendTest(channel);
      result.textContent = t('test.sent');
    } catch (err) {
      if (err.status === 429) result.textContent = t('test.rate', { seconds: err.retryAfter || 60 });
      else if (err.kind === 'no-target') result.textContent = t('test.no_target', { channel: t(`channel.${channel}`) });
      else result.textContent = t('test.failed');
    }
  };
  return h('section', { part: 'test', class: 'card', 'aria-labelledby': 'test-title' },
    h('h3', { id: 'test-title', text: t('test.title') }),
    h('div', { class: 'row-buttons' }, [...channels, 'all'].map((channel) => h('button', {
      class: 'btn', part: 'test-send', 'data-channel': channel,
      text: channel === 'all' ? t('test.all') : t(`channel.${channel}`),
      on: { click: () => send(channel) },
    }))),
    result);
}
