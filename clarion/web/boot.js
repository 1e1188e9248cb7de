// The page's first module (no imports, loaded async ahead of the others): it signs in and
// asks for the unread count while the rest of the page's modules are still on their way,
// so the bell can show its count as soon as it exists instead of after the sign-in, the
// stream's connect and its first frame, one after the other (docs/benchmarks/ui.md).
// app.js takes both promises from here; the stream's own count replaces this one.

async function postSession(path, body) {
  const answer = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body || {}),
  });
  if (!answer.ok) {
    const problem = await answer.json().catch(() => ({}));
    const err = new Error(problem.detail || `HTTP ${answer.status}`);
    err.kind = String(problem.type || '').replace('urn:clarion:problem:', '');
    throw err;
  }
  return answer.json();
}

/** The first user token: from the sign-in link if there is one, else from the cookie. */
function signIn() {
  const match = /(?:^#|&)login=([^&]+)/.exec(location.hash);
  if (match) {
    history.replaceState(null, '', `${location.pathname}${location.search}#/inbox`);
    return postSession('session', { login: decodeURIComponent(match[1]) });
  }
  return postSession('session/token');
}

/** A fresh user token for the client (the session cookie's). */
export const getToken = async () => (await postSession('session/token')).token;

/** {token, expires_in, subscriber}; rejects when not signed in (err.kind says why). */
export const signedIn = signIn();

/** The unread counts ({total, by_category, unseen}), or null if they could not be had. */
export const firstCounts = signedIn.then(async ({ token }) => {
  const answer = await fetch(`${location.origin}/v1/me/notifications/unread-count`, {
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
  });
  return answer.ok ? answer.json() : null;
}).catch(() => null);

// Handled by app.js, possibly after it rejected: not an unhandled rejection meanwhile.
signedIn.catch(() => {});
