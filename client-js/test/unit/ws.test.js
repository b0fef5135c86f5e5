'use strict';
// Unit tests of the WebSocket transport (GET /ws) and of 'auto' going from it to
// the stream or long-poll, with a fake WebSocket, an injected fetch and fake timers.
const test = require('node:test');
const assert = require('node:assert/strict');
const CometBox = require('../../cometbox.js');
const { setup, flush, fakeJwt, fakeWebSocketClass } = require('../lib/fakes.js');

const URL_BASE = 'http://127.0.0.1:8480';
const KEY_ALICE = 'cometbox:cursor:' + URL_BASE + '#alice';

function wsEnv(opts = {}) {
  const WS = fakeWebSocketClass();
  const env = setup({ transport: 'auto', WebSocket: WS, ...opts });
  env.WS = WS;
  env.messages = [];
  env.opts.onMessage = (m) => env.messages.push(m);
  return env;
}

/** Answers an open fetch call with a text/event-stream body the test writes to. */
function stream(call) {
  let ctl;
  const body = new ReadableStream({ start(c) { ctl = c; } });
  call.settled = true;
  call.resolve(new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  const enc = new TextEncoder();
  return { write: (s) => ctl.enqueue(enc.encode(s)), close: () => ctl.close() };
}

/** The socket opened and its first ping answered: connected. */
function connect(ws) {
  ws.open();
  assert.equal(ws.sent.length, 1, 'a ping right after open');
  ws.pong();
}

test('auto opens a WebSocket on <url>/ws (token, since, channels in the query) and dispatches its frames', async () => {
  const env = wsEnv({ since: 'a-1', channels: ['news', 'room:1'], timeout: 20 });
  const cb = new CometBox(URL_BASE, env.opts);
  const named = [];
  cb.on('notice', (d) => named.push(d));
  cb.start();
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.wsUrl, 'ws://127.0.0.1:8480/ws');
  assert.equal(env.fetch.calls.length, 0, 'no HTTP request');
  const ws = env.WS.last;
  const u = new URL(ws.url);
  assert.equal(u.origin + u.pathname, 'ws://127.0.0.1:8480/ws');
  assert.equal(ws.query.get('since'), 'a-1');
  assert.equal(ws.query.get('channels'), 'news,room:1');
  assert.equal(ws.query.get('token'), cb.token, 'a WebSocket has no headers: the token is in the query');
  assert.equal(ws.query.get('timeout'), null);
  ws.open();
  assert.equal(cb.state, 'connecting', 'open alone does not prove the server admitted the socket');
  assert.deepEqual(ws.sent, [{ type: 'subscribe', channels: [], ref: 'cometbox-ping-1' }], 'a no-op frame the server answers');
  ws.pong();
  assert.equal(cb.state, 'connected');
  ws.frame({ cursor: 'a-3', messages: [{ id: 'a-2', event: 'notice', data: { text: 'one' }, ts: 1 }, { id: 'a-3', data: 'two', ts: 2 }] });
  assert.deepEqual(env.messages.map((m) => m.id), ['a-2', 'a-3']);
  assert.deepEqual(named, [{ text: 'one' }]);
  assert.equal(cb.cursor, 'a-3');
  assert.equal(env.storage.getItem(KEY_ALICE), 'a-3');
  assert.equal(env.WS.sockets.length, 1, 'one socket for it all');
  cb.stop();
  assert.equal(ws.closedByClient, 1000);
  assert.deepEqual(env.errors, []);
});

test('wss: for an https url; a relative url without a page location is not a WebSocket URL: auto tries the stream', async () => {
  const env = wsEnv();
  const cb = new CometBox('https://push.example.com/cometbox/', env.opts);
  assert.equal(cb.wsUrl, 'wss://push.example.com/cometbox/ws');
  const env2 = wsEnv();
  // The fake accepts any URL; a real WebSocket throws a SyntaxError for this one.
  env2.opts.WebSocket = function () { throw new SyntaxError('bad url'); };
  const cb2 = new CometBox('/cometbox', env2.opts);
  cb2.start();
  assert.equal(cb2.transport, 'sse');
  assert.equal(new URL(env2.fetch.last.url, 'http://x').pathname, '/cometbox/events');
  cb2.stop();
});

test('a reset frame calls onReset then dispatches; a disconnected frame (close 1000) stops for good', async () => {
  const resets = [];
  const env = wsEnv({ since: 'old-9', onReset: (i) => resets.push(i) });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const ws = env.WS.last;
  connect(ws);
  ws.frame({ cursor: 'new-1', reset: true, messages: [{ id: 'new-1', data: 1 }] });
  assert.deepEqual(resets.map((r) => [r.cursor, r.previousCursor]), [['new-1', 'old-9']]);
  assert.deepEqual(env.messages.map((m) => m.id), ['new-1']);
  ws.frame({ cursor: 'new-1', messages: [], disconnected: true });
  ws.close_(1000, 'disconnected');
  assert.equal(cb.state, 'stopped');
  assert.deepEqual(env.errors.map((e) => e.code), ['disconnected']);
  assert.equal(env.storage.getItem(KEY_ALICE), null, 'the mailbox is gone: the cursor is forgotten');
  env.clock.tick(60000);
  await flush();
  assert.equal(env.WS.sockets.length, 1, 'no reconnect');
});

test('close 1000 "disconnected" without its frame stops as disconnected too', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  connect(env.WS.last);
  env.WS.last.close_(1000, 'disconnected');
  assert.deepEqual(env.errors.map((e) => [e.code, e.fatal]), [['disconnected', true]]);
  assert.equal(cb.state, 'stopped');
});

test('a socket that does not open: auto tries the stream; an HTTP answer keeps the stream for good', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.WS.last.fail(); // error, close 1006 before open: no upgrade here, or the server is down
  assert.equal(cb.transport, 'sse');
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  const s = stream(env.fetch.last);
  await flush();
  assert.equal(cb.fallbackReason, 'ws-failed');
  s.write(': ok\n\n');
  await flush();
  assert.equal(cb.state, 'connected');
  cb.stop();
  cb.start();
  assert.equal(cb.transport, 'sse', 'kept for this instance');
  assert.equal(env.WS.sockets.length, 1);
  cb.stop();
  assert.deepEqual(env.errors, []);
});

test('a socket that does not open, then a proxy that buffers the stream: auto ends on long-poll', async () => {
  const env = wsEnv({ streamProbeTimeout: 2000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.WS.last.fail();
  assert.equal(cb.transport, 'sse');
  env.clock.tick(2000); // the stream's headers never come: buffered
  await flush();
  assert.equal(cb.transport, 'poll');
  assert.equal(cb.fallbackReason, 'buffered');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  env.fetch.respond(200, { cursor: 'c-1', messages: [{ id: 'c-1', data: 'x' }] });
  await flush();
  assert.deepEqual(env.messages.map((m) => m.id), ['c-1']);
  cb.stop();
});

test('a socket that does not open while the stream fails too: the server is down; the WebSocket is tried again after the backoff', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.WS.last.fail();
  assert.equal(cb.transport, 'sse');
  env.fetch.fail(); // no HTTP answer either
  await flush();
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.fallbackReason, null);
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.WS.sockets.length, 1);
  env.clock.runNext();
  assert.equal(env.WS.sockets.length, 2, 'the WebSocket again');
  connect(env.WS.last);
  assert.equal(cb.state, 'connected');
  assert.equal(cb.transport, 'ws');
  // Once a socket has opened here, one that does not open is the network or a
  // restart, not a reason to leave the WebSocket.
  env.WS.last.close_(1006);
  env.clock.runNext();
  env.WS.last.fail();
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.fetch.calls.length, 1, 'no more stream trials');
  cb.stop();
});

test('a socket that does not open in time (streamProbeTimeout) is a failure to open', async () => {
  const env = wsEnv({ streamProbeTimeout: 3000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const ws = env.WS.last;
  env.clock.tick(2999);
  assert.equal(cb.transport, 'ws');
  env.clock.tick(1);
  assert.equal(ws.closedByClient, 1000);
  assert.equal(cb.transport, 'sse');
  env.fetch.respond(404, { error: 'not-found', message: 'x' });
  await flush();
  // An HTTP answer: the WebSocket is left; /events is not there either.
  assert.equal(cb.transport, 'poll');
  assert.equal(cb.fallbackReason, 'http-404');
  cb.stop();
});

test('a socket that opens but whose first answer does not come in time (a proxy holds frames): auto goes to the stream', async () => {
  const env = wsEnv({ streamProbeTimeout: 3000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const ws = env.WS.last;
  ws.open();
  env.clock.tick(3000);
  assert.equal(ws.closedByClient, 1000);
  assert.equal(cb.transport, 'sse');
  assert.equal(cb.fallbackReason, 'ws-buffered');
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  cb.stop();
});

test('transport: "ws" never falls back: a socket that does not open is retried with backoff', async () => {
  const env = wsEnv({ transport: 'ws' });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  for (let i = 1; i <= 3; i++) {
    env.WS.last.fail();
    assert.equal(cb.state, 'waiting to reconnect');
    assert.equal(env.states[env.states.length - 1][1].attempt, i);
    env.clock.runNext();
  }
  assert.equal(env.WS.sockets.length, 4);
  assert.equal(env.fetch.calls.length, 0);
  assert.equal(cb.transport, 'ws');
  cb.stop();
  assert.throws(() => new CometBox(URL_BASE, { ...env.opts, WebSocket: null }).start(), /no WebSocket/);
});

test('without a WebSocket, auto starts with the stream', async () => {
  const env = wsEnv({ WebSocket: null });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  assert.equal(cb.transport, 'sse');
  assert.equal(cb.fallbackReason, null);
  cb.stop();
});

test('close 4001 (token-expired) refreshes the token and reconnects at once from the cursor', async () => {
  const tokens = [];
  const env = wsEnv({ getToken: (ctx) => { tokens.push(ctx); return fakeJwt({ sub: 'alice', exp: 2000000001 }); } });
  const cb = new CometBox(URL_BASE, env.opts);
  const first = cb.token;
  cb.start();
  connect(env.WS.last);
  env.WS.last.frame({ cursor: 'k-1', messages: [{ id: 'k-1', data: 1 }] });
  env.WS.last.close_(4001, 'token-expired');
  await flush();
  assert.deepEqual(tokens.map((t) => t.reason), ['token-expired']);
  assert.notEqual(cb.token, first);
  assert.equal(env.WS.sockets.length, 2);
  assert.equal(env.WS.last.query.get('token'), cb.token);
  assert.equal(env.WS.last.query.get('since'), 'k-1');
  assert.equal(cb.state, 'connected', 'a refresh while connected stays connected');
  connect(env.WS.last);
  env.WS.last.frame({ cursor: 'k-2', messages: [{ id: 'k-2', data: 2 }] });
  assert.deepEqual(env.messages.map((m) => m.data), [1, 2]);
  // A fresh token refused again at once (no frame between): the next refresh waits.
  env.WS.last.close_(4001, 'token-expired');
  await flush();
  env.WS.last.open();
  env.WS.last.close_(4001, 'token-expired');
  await flush();
  assert.equal(tokens.length, 2);
  assert.equal(cb.state, 'waiting to reconnect');
  cb.stop();
  assert.deepEqual(env.errors, []);
});

test('close 4003: channel-forbidden / denied stop with onError; invalid-token asks getToken() as a 401 does', async () => {
  for (const reason of ['channel-forbidden', 'denied']) {
    const env = wsEnv();
    const cb = new CometBox(URL_BASE, env.opts);
    cb.start();
    env.WS.last.open();
    env.WS.last.close_(4003, reason);
    assert.equal(cb.state, 'stopped');
    assert.deepEqual(env.errors.map((e) => [e.code, e.status, e.fatal]), [[reason, 403, true]]);
  }
  const env = wsEnv({ getToken: () => fakeJwt({ sub: 'alice', exp: 2000000002 }) });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.WS.last.open();
  env.WS.last.close_(4003, 'invalid-token');
  await flush();
  assert.equal(env.WS.sockets.length, 2);
  assert.deepEqual(env.errors, []);
  cb.stop();
  const env2 = wsEnv();
  const cb2 = new CometBox(URL_BASE, env2.opts);
  cb2.start();
  env2.WS.last.open();
  env2.WS.last.close_(4003, 'invalid-token');
  assert.deepEqual(env2.errors.map((e) => [e.code, e.status]), [['invalid-token', 401]], 'without getToken: stop');
});

test('close 4029, 1001, 1013 and a dropped connection reconnect with backoff from the cursor', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  connect(env.WS.last);
  env.WS.last.frame({ cursor: 'r-1', messages: [{ id: 'r-1', data: 1 }] });
  const cases = [[4029, 'too-many-polls'], [1001, 'shutting-down'], [1013, 'storage-unavailable'], [1006, '']];
  for (const [code, reason] of cases) {
    const n = env.WS.sockets.length;
    env.WS.last.close_(code, reason);
    const [state, detail] = env.states[env.states.length - 1];
    assert.equal(state, 'waiting to reconnect', String(code));
    assert.equal(detail.error.code, reason || 'network');
    assert.equal(env.WS.sockets.length, n, 'not at once');
    env.clock.runNext();
    assert.equal(env.WS.sockets.length, n + 1);
    assert.equal(env.WS.last.query.get('since'), 'r-1');
    if (code === 1006) break;
    env.WS.last.open();
  }
  const attempts = env.states.filter(([s]) => s === 'waiting to reconnect').map(([, d]) => d.attempt);
  assert.deepEqual(attempts, [1, 2, 3, 4], 'the backoff grows while nothing gets through');
  connect(env.WS.last);
  assert.equal(cb.state, 'connected');
  assert.equal(cb.transport, 'ws');
  cb.stop();
  assert.deepEqual(env.errors, []);
});

test('close 1008 invalid-request (a cursor the server refuses) stops and forgets the stored cursor', async () => {
  const env = wsEnv({ since: 'bad' });
  env.storage.setItem(KEY_ALICE, 'bad');
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.WS.last.open();
  env.WS.last.close_(1008, 'invalid-request');
  assert.deepEqual(env.errors.map((e) => [e.code, e.status, e.fatal]), [['invalid-request', 400, true]]);
  assert.equal(env.storage.getItem(KEY_ALICE), null);
  assert.equal(cb.state, 'stopped');
});

test('a quiet socket is pinged after streamIdleTimeout/2; no answer within the rest is a dead connection; twice: auto goes to the stream', async () => {
  const env = wsEnv({ streamIdleTimeout: 40000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  let ws = env.WS.last;
  connect(ws);
  env.clock.tick(19999);
  assert.equal(ws.sent.length, 1);
  env.clock.tick(1);
  assert.equal(ws.sent.length, 2, 'quiet for 20 s: a ping');
  ws.pong();
  env.clock.tick(20000);
  assert.equal(ws.sent.length, 3);
  env.clock.tick(20000); // unanswered
  assert.equal(ws.closedByClient, 1000);
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.states[env.states.length - 1][1].error.code, 'request-timeout');
  env.clock.runNext();
  ws = env.WS.last;
  assert.equal(env.WS.sockets.length, 2);
  ws.open();
  ws.pong();
  env.clock.tick(40000); // silent again, no frame between
  assert.equal(cb.transport, 'sse');
  assert.equal(cb.fallbackReason, 'ws-stalled');
  cb.stop();
});

test('a frame that is not cometbox JSON closes the socket and reconnects with backoff', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const ws = env.WS.last;
  connect(ws);
  ws.frame('<html>');
  assert.equal(ws.closedByClient, 1000);
  assert.equal(env.states[env.states.length - 1][1].error.code, 'bad-response');
  cb.stop();
});

test('stop() from a handler during a frame: the rest of the frame is not dispatched; start() resumes after the handled message', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.on('*', (d) => { if (d === 2) cb.stop(); });
  cb.start();
  connect(env.WS.last);
  env.WS.last.frame({ cursor: 'm-3', messages: [{ id: 'm-1', data: 1 }, { id: 'm-2', data: 2 }, { id: 'm-3', data: 3 }] });
  assert.deepEqual(env.messages.map((m) => m.data), [1, 2]);
  assert.equal(cb.state, 'stopped');
  assert.equal(env.storage.getItem(KEY_ALICE), 'm-2');
  cb.start();
  assert.equal(env.WS.last.query.get('since'), 'm-2');
  cb.stop();
});

test('the online event replaces the socket at once (one made before the network changed is probably dead)', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const first = env.WS.last;
  connect(first);
  first.frame({ cursor: 'o-1', messages: [{ id: 'o-1', data: 1 }] });
  env.target.dispatchEvent(new Event('online'));
  assert.equal(first.closedByClient, 1000);
  assert.equal(env.WS.sockets.length, 2);
  assert.equal(env.WS.last.query.get('since'), 'o-1');
  first.close_(1006); // the old socket's late close is ignored
  assert.equal(env.WS.sockets.length, 2);
  assert.equal(cb.state, 'connected');
  cb.stop();
});

/** Runs fn as in a browser without ReadableStream (the transport is chosen synchronously). */
function withoutStreams(fn) {
  const saved = globalThis.ReadableStream;
  globalThis.ReadableStream = undefined;
  try { fn(); } finally { globalThis.ReadableStream = saved; }
}

test('without streams, a socket that does not open is replaced by a long-poll trial: answered, long-poll it is', async () => {
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  withoutStreams(() => {
    cb.start();
    assert.equal(cb.transport, 'ws');
    env.WS.last.fail();
  });
  assert.equal(cb.transport, 'poll');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  env.fetch.respond(200, { cursor: 'p-1', messages: [{ id: 'p-1', data: 1 }] });
  await flush();
  assert.equal(cb.fallbackReason, 'ws-failed');
  assert.deepEqual(env.messages.map((m) => m.id), ['p-1']);
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll', 'kept');
  cb.stop();
  // The same, the poll failing too: the server is down, the WebSocket again after the backoff.
  const env2 = wsEnv();
  const cb2 = new CometBox(URL_BASE, env2.opts);
  withoutStreams(() => { cb2.start(); env2.WS.last.fail(); });
  assert.equal(cb2.transport, 'poll');
  env2.fetch.fail();
  await flush();
  assert.equal(cb2.transport, 'ws');
  assert.equal(cb2.state, 'waiting to reconnect');
  env2.clock.runNext();
  assert.equal(env2.WS.sockets.length, 2);
  cb2.stop();
});

test('a follower tab opens no socket; the leader does', async () => {
  // The election itself is tested in tabs.test.js; here: a follower catching up polls /poll.
  const env = wsEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb._role = 'follower';
  cb._catchingUp = true;
  cb.start();
  assert.equal(cb.transport, 'ws');
  assert.equal(env.WS.sockets.length, 0);
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  assert.equal(env.fetch.query().get('timeout'), '0');
  cb.stop();
});
