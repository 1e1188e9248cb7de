// The page's side of sw.js: the worker gets the current user token (to mark a clicked push
// read), and an open tab does what the worker could not (mark read, register a renewed
// push subscription, navigate).

/** @param {import('./client.js').ClarionClient} client */
export function bridgeServiceWorker(client) {
  const sw = client.env.navigator?.serviceWorker;
  if (!sw) return;
  const give = async () => {
    const token = await client.tokens.get().catch(() => null);
    (await sw.ready).active?.postMessage({ type: 'clarion:token', token, apiUrl: client.apiUrl });
  };
  const fetchToken = client.tokens.get.bind(client.tokens);
  client.tokens.get = async (force) => {
    const before = client.tokens.token;
    const token = await fetchToken(force);
    if (token !== before) give();
    return token;
  };
  give();
  sw.addEventListener('message', (e) => {
    const m = e.data || {};
    if (m.type === 'clarion:read' && m.id) {
      (m.action ? client.action(m.id, m.action) : client.markRead(m.id)).catch(() => {});
    } else if (m.type === 'clarion:resubscribe' && m.subscription) {
      client.addPushSubscription(m.subscription).catch(() => {});
    } else if (m.type === 'clarion:navigate' && typeof m.url === 'string') {
      const url = new URL(m.url, client.env.location.href);
      if (url.protocol === 'https:' || url.protocol === 'http:') client.env.location.assign(url.href);
    }
  });
}
