'use strict';
// Unit tests of the SSE transport (GET /events read with fetch streaming) and
// of its 'auto' fallback to long-poll, with an injected fetch and fake timers.
const test = require('node:test');
const assert = require('node:assert/strict');
const CometBox = require('../../cometbox.js');
const { setup, flush, fakeJwt } = require('../lib/fakes.js');

const URL_BASE = 'http://127.0.0.1:8480';
const KEY_ALICE = 'cometbox:cursor:' + URL_BASE + '#alice';

/** Answers an open fetch call with a text/event-stream body the test writes to. */
function stream(call) {
  let ctl;
  const body = new ReadableStream({ start(c) { ctl = c; } });
  call.settled = true;
  call.resolve(new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  const enc = new TextEncoder();
  return {
    write: (s) => ctl.enqueue(enc.encode(s)),
    close: () => ctl.close(),
    error: (e) => ctl.error(e || new TypeError('network error')),
  };
}
const ev = (id, m, event) => `id: ${id}\nevent: ${event || m.event || 'message'}\ndata: ${JSON.stringify(m)}\n\n`;

function sseEnv(opts = {}) {
  const env = setup({ transport: 'auto', ...opts });
  env.messages = [];
  env.opts.onMessage = (m) => env.messages.push(m);
  return env;
}

test('auto opens /events (since, channels, Authorization, no timeout) and dispatches each event', async () => {
  const env = sseEnv({ since: 'a-1', channels: ['news'], timeout: 20 });
  const cb = new CometBox(URL_BASE, env.opts);
  const named = [];
  cb.on('notice', (d) => named.push(d));
  cb.start();
  assert.equal(cb.transport, 'sse');
  const c = env.fetch.last;
  const u = new URL(c.url);
  assert.equal(u.origin + u.pathname, URL_BASE + '/events');
  assert.equal(u.searchParams.get('since'), 'a-1');
  assert.equal(u.searchParams.get('channels'), 'news');
  assert.equal(u.searchParams.get('timeout'), null);
  assert.equal(c.init.headers.Accept, 'text/event-stream');
  assert.equal(c.init.headers.Authorization, 'Bearer ' + cb.token);
  const s = stream(c);
  await flush();
  assert.equal(cb.state, 'connecting', 'headers alone do not prove the stream');
  s.write(': ok\n\n');
  await flush();
  assert.equal(cb.state, 'connected');
  // An event cut across chunks, CRLF line ends, a keep-alive between events.
  const e1 = ev('a-2', { id: 'a-2', event: 'notice', data: { text: 'one' }, ts: 1 }).replace(/\n/g, '\r\n');
  s.write(e1.slice(0, 7));
  await flush();
  assert.equal(env.messages.length, 0);
  s.write(e1.slice(7, e1.length - 1));
  await flush();
  assert.equal(env.messages.length, 0, 'no dispatch before the blank line');
  s.write(e1.slice(e1.length - 1) + ': keep-alive\n\n' + ev('a-3', { id: 'a-3', data: 'two', ts: 2 }));
  await flush();
  assert.deepEqual(env.messages.map((m) => m.id), ['a-2', 'a-3']);
  assert.deepEqual(named, [{ text: 'one' }]);
  assert.equal(cb.cursor, 'a-3');
  assert.equal(env.storage.getItem(KEY_ALICE), 'a-3');
  assert.equal(env.fetch.calls.length, 1, 'one request for the whole stream');
  cb.stop();
});

test('a reset event calls onReset; a disconnected event stops for good', async () => {
  const resets = [];
  const env = sseEnv({ since: 'old-9', onReset: (i) => resets.push(i) });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const s = stream(env.fetch.last);
  s.write(': ok\n\nid: new-0\nevent: reset\ndata: {"cursor":"new-0"}\n\n' + ev('new-1', { id: 'new-1', data: 1 }));
  await flush();
  assert.deepEqual(resets, [{ cursor: 'new-0', messages: [], previousCursor: 'old-9' }]);
  assert.deepEqual(env.messages.map((m) => m.id), ['new-1']);
  s.write('event: disconnected\ndata: {}\n\n');
  await flush();
  assert.equal(cb.state, 'stopped');
  assert.deepEqual(env.errors.map((e) => e.code), ['disconnected']);
  assert.equal(env.storage.getItem(KEY_ALICE), null, 'the mailbox is gone: the cursor is forgotten');
  env.clock.tick(60000);
  await flush();
  assert.equal(env.fetch.calls.length, 1, 'no reconnect');
});

test('auto falls back to long-poll for good when /events is 404 (an older server)', async () => {
  const env = sseEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(404, { error: 'not-found', message: 'no such endpoint' });
  await flush();
  assert.equal(cb.transport, 'poll');
  assert.equal(cb.fallbackReason, 'http-404');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  env.fetch.respond(200, { cursor: 'c-1', messages: [{ id: 'c-1', data: 'x' }] });
  await flush();
  assert.deepEqual(env.messages.map((m) => m.id), ['c-1']);
  cb.stop();
  cb.start();
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll', 'the fallback stays for this instance');
  cb.stop();
  assert.deepEqual(env.errors, []);
});

test('auto falls back when the stream\'s first bytes do not come in time (a buffering proxy)', async () => {
  const env = sseEnv({ streamProbeTimeout: 3000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  stream(env.fetch.last); // headers, then nothing: the proxy holds `: ok`
  await flush();
  env.clock.tick(2999);
  await flush();
  assert.equal(cb.transport, 'sse');
  env.clock.tick(1);
  await flush();
  assert.equal(cb.transport, 'poll');
  assert.equal(cb.fallbackReason, 'buffered');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  cb.stop();
});

test('auto falls back when /events answers 200 that is not an event stream', async () => {
  const env = sseEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(200, '<html>login page</html>');
  await flush();
  assert.equal(cb.fallbackReason, 'not-a-stream');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  cb.stop();
});

test('transport: "sse" does not fall back: a 404 is fatal as for /poll', async () => {
  const env = sseEnv({ transport: 'sse' });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(404, { error: 'not-found' });
  await flush();
  assert.equal(cb.state, 'stopped');
  assert.deepEqual(env.errors.map((e) => [e.code, e.status]), [['not-found', 404]]);
});

test('a 401 before the stream refreshes the token; a stream the server closes at exp is reopened with a fresh token', async () => {
  const now = 1_800_000_000_000;
  let n = 0;
  const env = sseEnv({
    token: fakeJwt({ sub: 'alice', exp: now / 1000 - 5 }),
    now: () => now + env.clock.now,
    getToken: () => fakeJwt({ sub: 'alice', exp: now / 1000 + 10 + n++ }),
  });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(401, { error: 'token-expired', message: 'expired' });
  await flush();
  assert.equal(n, 1);
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(env.fetch.last.init.headers.Authorization, 'Bearer ' + cb.token);
  const s = stream(env.fetch.last);
  s.write(': ok\n\n' + ev('b-1', { id: 'b-1', data: 1 }));
  await flush();
  env.clock.tick(11000); // the token's exp passed; the server ends the stream
  s.close();
  await flush();
  assert.equal(n, 2, 'getToken() asked again');
  assert.equal(env.fetch.calls.length, 3);
  assert.equal(new URL(env.fetch.last.url).searchParams.get('since'), 'b-1');
  assert.equal(env.fetch.last.init.headers.Authorization, 'Bearer ' + cb.token);
  cb.stop();
});

test('a stream closed by the server (shutdown) is reopened at once from the cursor; a network error backs off', async () => {
  const env = sseEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  let s = stream(env.fetch.last);
  s.write(': ok\n\n' + ev('d-1', { id: 'd-1', data: 1 }));
  await flush();
  s.close();
  await flush();
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(new URL(env.fetch.last.url).searchParams.get('since'), 'd-1');
  env.fetch.fail();
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(cb.transport, 'sse', 'a network error is not a reason to give up the stream');
  env.clock.runNext();
  assert.equal(env.fetch.calls.length, 3);
  s = stream(env.fetch.last);
  s.write(': ok\n\n');
  await flush();
  assert.equal(cb.state, 'connected');
  cb.stop();
});

test('a silent proven stream is reopened once; twice in a row falls back to long-poll', async () => {
  const env = sseEnv({ streamIdleTimeout: 10000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  stream(env.fetch.last).write(': ok\n\n');
  await flush();
  env.clock.tick(10000);
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  env.clock.runNext();
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  stream(env.fetch.last).write(': ok\n\n');
  await flush();
  env.clock.tick(10000);
  await flush();
  assert.equal(cb.fallbackReason, 'stream-stalled');
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  cb.stop();
});

test('without streams (an old browser) auto uses long-poll', () => {
  const saved = globalThis.ReadableStream;
  globalThis.ReadableStream = undefined;
  try {
    const env = sseEnv();
    const cb = new CometBox(URL_BASE, env.opts);
    cb.start();
    assert.equal(cb.transport, 'poll');
    assert.equal(cb.fallbackReason, 'no-streams');
    assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
    cb.stop();
  } finally {
    globalThis.ReadableStream = saved;
  }
});

test('when /events fails at the network level and /poll is answered, auto settles on long-poll', async () => {
  const env = sseEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.fail(); // e.g. a proxy route or CORS only for /poll
  await flush();
  env.clock.runNext();
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  env.fetch.fail();
  await flush();
  env.clock.runNext();
  // Every second failure: one long-poll to tell "server down" from "stream blocked".
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  env.fetch.fail(); // the server is down after all: back to trying the stream
  await flush();
  env.clock.runNext();
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  assert.equal(cb.transport, 'sse');
  env.fetch.fail();
  await flush();
  env.clock.runNext();
  assert.equal(new URL(env.fetch.last.url).pathname, '/events');
  env.fetch.fail();
  await flush();
  env.clock.runNext();
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  env.fetch.respond(200, { cursor: 'p-1', messages: [{ id: 'p-1', data: 1 }] });
  await flush();
  assert.equal(cb.transport, 'poll');
  assert.equal(cb.fallbackReason, 'stream-unreachable');
  assert.deepEqual(env.messages.map((m) => m.id), ['p-1']);
  assert.equal(new URL(env.fetch.last.url).pathname, '/poll');
  cb.stop();
});

test('once a stream has worked, network errors never switch the transport', async () => {
  const env = sseEnv();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const s = stream(env.fetch.last);
  s.write(': ok\n\n');
  await flush();
  s.error(); // the connection dropped
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  for (let i = 0; i < 4; i++) {
    env.clock.runNext();
    assert.equal(new URL(env.fetch.last.url).pathname, '/events');
    env.fetch.fail();
    await flush();
  }
  assert.equal(cb.transport, 'sse');
  cb.stop();
});
