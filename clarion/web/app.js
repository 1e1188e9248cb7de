// The page at /ui/: the bell in a header, the inbox and the preferences, for deployments
// with no frontend of their own and for `clarion dev`. It signs in with the token of a
// sign-in link (#login=...), which it removes from the address bar at once and trades for a
// session cookie (HttpOnly) and short user tokens kept in memory only (ui.py says how).

import { firstCounts, getToken, signedIn } from './boot.js';
import { configure } from './elements/base.js';
import './elements/bell.js';
import './elements/inbox.js';
import './elements/toasts.js';
import { translator } from './i18n.js';

const $ = (id) => document.getElementById(id);

function chooseLocale() {
  const asked = new URLSearchParams(location.search).get('lang');
  const locale = asked || navigator.language || 'en';
  document.documentElement.lang = locale;
  $('lang').value = locale.startsWith('ru') ? 'ru' : 'en';
  return locale;
}

async function translatePage(locale) {
  const i18n = await translator(locale);
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = i18n.t(el.dataset.i18n);
  document.title = i18n.t('app.title');
  $('lang').setAttribute('aria-label', i18n.t('app.language'));
  return i18n;
}

function show(view) {
  const name = view === 'preferences' ? 'preferences' : 'inbox';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  // Its module loads the first time the page is opened (the element upgrades then).
  if (name === 'preferences') import('./elements/preferences.js');
  const tag = `clarion-${name}`;
  const main = $('main');
  if (main.firstElementChild?.localName !== tag) {
    main.replaceChildren(document.createElement(tag));
  }
}

function route() {
  show(location.hash.replace(/^#\/?/, '').split(/[/?]/)[0]);
}

async function start() {
  let locale = chooseLocale();
  // The sign-in (boot.js) started before this module loaded; the catalogue comes meanwhile.
  let i18n = await translatePage(locale);
  let first;
  try {
    first = await signedIn;
  } catch (err) {
    $('message').textContent = i18n.t(err.kind === 'link-expired' ? 'app.expired' : 'app.signin');
    return;
  }
  const client = configure({ apiUrl: location.origin, token: first.token, getToken });
  // The count boot.js fetched shows until the stream's own first count replaces it.
  firstCounts.then((counts) => client.offerCounts(counts));
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js').then(() => client.useServiceWorker(), () => {});
  }
  $('slot-bell').replaceWith(document.createElement('clarion-bell'));
  $('slot-toasts').replaceWith(document.createElement('clarion-toasts'));
  $('signout').hidden = false;
  $('signout').addEventListener('click', async () => {
    await fetch('session', { method: 'DELETE', credentials: 'same-origin' });
    location.replace(location.pathname);
  });
  $('lang').addEventListener('change', async (e) => {
    locale = e.target.value;
    document.documentElement.lang = locale;
    i18n = await translatePage(locale);
    for (const el of document.querySelectorAll('clarion-bell, clarion-inbox, clarion-preferences, clarion-toasts')) {
      el.setAttribute('locale', locale);
    }
  });
  window.addEventListener('hashchange', route);
  route();
}

start();
