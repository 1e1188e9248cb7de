// The live connection's logic: resume, backoff, fallback, re-authentication.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoff, LiveConnection, TokenSource } from '../../clarion/web/live.js';
import { Clock, flush, makeEventSources, makeSockets, token } from './fakes.mjs';

function setup({ getToken, transport = 'auto', fixed } = {}) {
  const clock = new Clock();
  const { FakeWebSocket, made: sockets } = makeSockets();
  const { FakeEventSource, made: sources } = makeEventSources();
  const events = [];
  const statuses = [];
  const env = {
    WebSocket: FakeWebSocket, EventSource: FakeEventSource,
    setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
    random: () => 0.5, now: () => clock.now,
  };
  const tokens = new TokenSource({ token: fixed, getToken, now: () => clock.now });
  const live = new LiveConnection({
    apiUrl: 'http://api.test/', tokens, transport, env,
    onEvent: (e) => events.push(e), onStatus: (s) => statuses.push(s),
  });
  return { clock, live, sockets, sources, events, statuses };
}

const created = (cursor) => ({ type: 'notification.created', cursor, data: { id: `n${cursor}` } });

test('backoff is full jitter: uniform up to base * 2^attempt, capped', () => {
  assert.equal(backoff(0, { random: () => 0 }), 0);
  assert.equal(backoff(0, { random: () => 0.999 }), 499);
  assert.equal(backoff(3, { random: () => 0.5 }), 2000);
  assert.equal(backoff(20, { random: () => 0.999 }), 29970);
  const seen = new Set(Array.from({ length: 50 }, (_, i) => backoff(4, { random: () => i / 50 })));
  assert.equal(seen.size, 50, 'delays spread over the whole range');
});

test('a dropped socket resumes after its last cursor, and a replayed event is not applied twice', async () => {
  const { clock, live, sockets, events } = setup({ fixed: token('ada', 9e9) });
  live.start(null);
  await clock.advance(0);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url.pathname, '/v1/me/stream');
  assert.equal(sockets[0].url.protocol, 'ws:');
  assert.equal(sockets[0].url.searchParams.get('since'), null, 'a fresh stream has no cursor');
  sockets[0].open();
  sockets[0].deliver({ type: 'unread_count', cursor: 4, data: { total: 0 } });
  sockets[0].deliver(created(5));
  sockets[0].deliver(created(6));
  sockets[0].drop(1006);
  // Reconnect after a jittered delay, from cursor 6.
  const [delay] = clock.pending();
  assert.ok(delay >= 0 && delay <= 500, `first retry within the first backoff step (${delay})`);
  await clock.advance(delay);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url.searchParams.get('since'), '6');
  sockets[1].open();
  sockets[1].deliver(created(6)); // the server's replay overlapping what we had
  sockets[1].deliver(created(7));
  assert.deepEqual(events.map((e) => e.cursor), [4, 5, 6, 7]);
});

test('repeated failures back off exponentially; an event resets the backoff', async () => {
  const { clock, live, sockets } = setup({ fixed: token('ada', 9e9), transport: 'websocket' });
  live.start(3);
  await clock.advance(0);
  const delays = [];
  for (let i = 0; i < 5; i += 1) {
    sockets.at(-1).drop(1006);
    delays.push(clock.pending()[0]);
    await clock.advance(delays.at(-1));
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000]); // random() = 0.5
  sockets.at(-1).open();
  sockets.at(-1).deliver({ type: 'heartbeat', cursor: 3 });
  sockets.at(-1).drop(1006);
  assert.deepEqual(clock.pending(), [250]);
  assert.equal(sockets.at(-1).url.searchParams.get('since'), '3', 'websocket only: no fallback');
});

test('close 1012 (server restart) reconnects at once with the cursor', async () => {
  const { clock, live, sockets } = setup({ fixed: token('ada', 9e9) });
  live.start(10);
  await clock.advance(0);
  sockets[0].open();
  sockets[0].deliver(created(11));
  sockets[0].drop(1012);
  assert.deepEqual(clock.pending(), [0]);
  await clock.advance(0);
  assert.equal(sockets[1].url.searchParams.get('since'), '11');
});

test('close 4401 gets a fresh token from getToken() and resumes', async () => {
  let n = 0;
  const getToken = () => token('ada', 9e9, (n += 1));
  const { clock, live, sockets } = setup({ getToken });
  live.start(2);
  await clock.advance(0);
  const first = sockets[0].url.searchParams.get('token');
  sockets[0].open();
  sockets[0].drop(4401);
  await clock.advance(0);
  assert.equal(n, 2);
  assert.notEqual(sockets[1].url.searchParams.get('token'), first);
  assert.equal(sockets[1].url.searchParams.get('since'), '2');
});

test('a token about to expire is extended on the open socket with an auth message', async () => {
  let n = 0;
  const { clock, live, sockets } = setup({
    getToken: () => token('ada', Math.floor(clock.now / 1000) + 180, (n += 1)),
  });
  live.start(0);
  await clock.advance(0);
  sockets[0].open();
  await clock.advance(119_000);
  assert.deepEqual(sockets[0].sent, []);
  await clock.advance(2000); // a minute before expiry
  assert.equal(sockets[0].sent.length, 1);
  assert.equal(sockets[0].sent[0].type, 'auth');
  const claims = JSON.parse(Buffer.from(sockets[0].sent[0].token.split('.')[1], 'base64url'));
  assert.equal(claims.n, 2, 'the fresh token from getToken()');
  assert.equal(n, 2);
});

test('falls back to SSE when the WebSocket cannot connect, resuming from the cursor', async () => {
  const { clock, live, sockets, sources, events } = setup({ fixed: token('ada', 9e9) });
  live.start(7);
  await clock.advance(0);
  sockets[0].drop(1006); // never opened
  await clock.advance(clock.pending()[0]);
  sockets[1].drop(1006);
  await clock.advance(clock.pending()[0]);
  assert.equal(sockets.length, 2);
  assert.equal(sources.length, 1);
  assert.equal(sources[0].url.pathname, '/v1/me/stream/sse');
  assert.equal(sources[0].url.searchParams.get('since'), '7');
  sources[0].onopen();
  sources[0].emit('notification.created', created(8));
  sources[0].emit('reconnect', { type: 'reconnect' }); // the API process is restarting
  assert.deepEqual(clock.pending(), [0]);
  await clock.advance(0);
  assert.ok(sources[0].closed);
  assert.equal(sources[1].url.searchParams.get('since'), '8');
  assert.deepEqual(events.map((e) => e.cursor), [8]);
});

test('an SSE reauth event reconnects with a fresh token', async () => {
  let n = 0;
  const { clock, live, sources } = setup({ transport: 'sse', getToken: () => token('ada', 9e9, (n += 1)) });
  live.start(1);
  await clock.advance(0);
  sources[0].emit('reauth', { type: 'reauth' });
  await clock.advance(0);
  assert.equal(n, 2);
  assert.equal(sources.length, 2);
});

test('resync moves the cursor to where the server says and passes the event on', async () => {
  const { clock, live, sockets, events } = setup({ fixed: token('ada', 9e9) });
  live.start(100);
  await clock.advance(0);
  sockets[0].open();
  sockets[0].deliver({ type: 'resync', cursor: 40, reason: 'gap' }); // a reset database
  sockets[0].deliver(created(41));
  assert.deepEqual(events.map((e) => [e.type, e.cursor]), [['resync', 40], ['notification.created', 41]]);
  assert.equal(live.cursor, 41);
});

test('stop() closes and keeps it closed', async () => {
  const { clock, live, sockets, statuses } = setup({ fixed: token('ada', 9e9) });
  live.start(0);
  await clock.advance(0);
  sockets[0].open();
  live.stop('paused');
  sockets[0].drop(1006); // a late close of the old socket is ignored
  await clock.advance(60_000);
  assert.equal(sockets.length, 1);
  assert.equal(statuses.at(-1), 'paused');
  await flush();
});
