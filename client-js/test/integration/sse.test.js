'use strict';
// The SSE transport (GET /events read with fetch streaming) against the real
// binary, from Node (global fetch, a real ReadableStream). Needs a server with
// GET /events: without it every test here fails (it does not skip).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const CometBox = require('../../cometbox.js');
const { Server, mintToken, waitFor, sleep } = require('../../../tests/support/server.cjs');
const { MemoryStorage } = require('../lib/fakes.js');
const { bufferingProxy } = require('../lib/proxy.js');

let server;
const live = new Set();
const cleanups = [];

before(async () => {
  server = await new Server().start();
  // Fail loudly on a server without the stream (404 not-found) rather than
  // letting 'auto' fall back and every test here pass on long-poll.
  const ac = new AbortController();
  const r = await fetch(`${server.publicUrl}/events?token=${mintToken('probe')}`, { signal: ac.signal });
  const ct = r.headers.get('content-type') || '';
  ac.abort();
  if (r.status !== 200 || !ct.startsWith('text/event-stream')) {
    throw new Error(`the server at ${server.publicUrl} has no GET /events (status ${r.status}, ${ct}): these tests need it`);
  }
});

after(async () => {
  for (const cb of live) cb.stop();
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (server) { await server.stop(); server.cleanup(); }
});

let seq = 0;
const clientId = (name) => `${name}-${process.pid}-${++seq}`;

function make(url, opts = {}) {
  const rec = { messages: [], errors: [], states: [], resets: [], timeouts: 0 };
  const cb = new CometBox(url, {
    storage: new MemoryStorage(),
    onMessage: (m) => rec.messages.push(m),
    onError: (e) => rec.errors.push(e),
    onStateChange: (s, d) => rec.states.push([s, d]),
    onReset: (i) => rec.resets.push(i),
    onTimeout: () => rec.timeouts++,
    backoff: { base: 200, max: 1000 },
    // These tests are about the stream: no WebSocket (run-tests.sh gives Node
    // one), so 'auto' starts with the stream as where WebSockets are missing.
    // test/integration/ws.test.js has the WebSocket.
    WebSocket: null,
    ...opts,
  });
  live.add(cb);
  return { cb, rec };
}

async function presence(s, id) {
  const r = await fetch(`${s.ingestUrl}/clients/${encodeURIComponent(id)}`);
  return r.status === 404 ? { open_polls: 0 } : r.json();
}

test('auto streams: one request, every message dispatched by event, the stream is an open poll', async () => {
  const id = clientId('ann');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  const named = [];
  cb.on('notice', (d) => named.push(d.text));
  cb.start();
  await waitFor(() => cb.state === 'connected', { what: 'connected' });
  assert.equal(cb.transport, 'sse');
  assert.equal(cb.fallbackReason, null);
  await waitFor(async () => (await presence(server, id)).open_polls === 1, { what: 'the stream counted as an open poll' });
  await server.send(id, { text: 'one' }, 'notice');
  await server.send(id, 'two');
  await server.send(id, { text: 'three' }, 'notice');
  await waitFor(() => rec.messages.length === 3, { what: '3 messages' });
  assert.deepEqual(rec.messages.map((m) => m.data), [{ text: 'one' }, 'two', { text: 'three' }]);
  assert.deepEqual(named, ['one', 'three']);
  assert.equal(cb.cursor, rec.messages[2].id);
  // Idle past the server's poll_timeout (2 s): a stream is not a poll, nothing times out.
  await sleep(2500);
  assert.equal(rec.timeouts, 0);
  assert.deepEqual(rec.states.map((s) => s[0]), ['connecting', 'connected']);
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('resume from the cursor: a second instance sees only what came after', async () => {
  const id = clientId('bea');
  const a = make(server.publicUrl, { token: mintToken(id) });
  a.cb.start();
  await server.send(id, 1);
  await server.send(id, 2);
  await waitFor(() => a.rec.messages.length === 2, { what: '2 messages' });
  const cursor = a.cb.cursor;
  a.cb.stop();
  await server.send(id, 3);
  const b = make(server.publicUrl, { token: mintToken(id), since: cursor });
  b.cb.start();
  await waitFor(() => b.rec.messages.length === 1, { what: 'the one after the cursor' });
  await sleep(300);
  assert.deepEqual(b.rec.messages.map((m) => m.data), [3]);
  b.cb.stop();
});

test('refusals before the stream are handled as for /poll: 403 stops, 401 without getToken stops', async () => {
  const a = make(server.publicUrl, { token: mintToken(clientId('cat'), { channels: ['room:*'] }), channels: ['secret'] });
  a.cb.start();
  await waitFor(() => a.rec.errors.length === 1, { what: '403' });
  assert.deepEqual([a.rec.errors[0].code, a.rec.errors[0].status, a.cb.state], ['channel-forbidden', 403, 'stopped']);
  const b = make(server.publicUrl, { token: mintToken(clientId('dee'), { exp: Math.floor(Date.now() / 1000) - 60 }) });
  b.cb.start();
  await waitFor(() => b.rec.errors.length === 1, { what: '401' });
  assert.deepEqual([b.rec.errors[0].code, b.rec.errors[0].status], ['token-expired', 401]);
  assert.equal(a.cb.transport, 'sse', 'a refusal is not a reason to give up the stream');
});

test('the server ends the stream when the token expires: getToken() gives a new one, nothing is lost', async () => {
  const id = clientId('eve');
  let asked = 0;
  const { cb, rec } = make(server.publicUrl, {
    token: mintToken(id, { ttl: 2 }),
    getToken: () => { asked++; return mintToken(id, { ttl: 3600 }); },
  });
  cb.start();
  await server.send(id, 'before');
  await waitFor(() => rec.messages.length === 1, { what: 'first message' });
  await waitFor(() => asked === 1, { what: 'getToken() after exp', timeout: 10000 });
  await server.send(id, 'after');
  await waitFor(() => rec.messages.length === 2, { what: 'second message' });
  assert.deepEqual(rec.messages.map((m) => m.data), ['before', 'after']);
  assert.equal(cb.transport, 'sse');
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('<disconnect> ends the stream: stopped, "disconnected", no reconnect', async () => {
  const id = clientId('fay');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  cb.start();
  await server.send(id, 'hi');
  await waitFor(() => rec.messages.length === 1, { what: 'message' });
  await server.ingest(`<disconnect client="${id}"/>`);
  await waitFor(() => rec.errors.length === 1, { what: 'disconnected' });
  assert.deepEqual([cb.state, rec.errors[0].code], ['stopped', 'disconnected']);
  await sleep(500);
  assert.equal((await presence(server, id)).open_polls, 0);
});

test('server restart: the stream is reopened, reset reported, messages flow again', async () => {
  const s = await new Server().start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  const id = clientId('gil');
  const { cb, rec } = make(s.publicUrl, { token: mintToken(id) });
  cb.start();
  await s.send(id, 'before');
  await waitFor(() => rec.messages.length === 1, { what: 'first' });
  await s.restart();
  await waitFor(() => rec.resets.length === 1, { what: 'reset after restart', timeout: 15000 });
  assert.deepEqual(rec.resets[0].messages, []);
  await s.send(id, 'after');
  await waitFor(() => rec.messages.length === 2, { what: 'after restart' });
  assert.deepEqual(rec.messages.map((m) => m.data), ['before', 'after']);
  assert.equal(cb.transport, 'sse');
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('through a proxy that buffers responses, auto falls back to long-poll and delivers', async () => {
  const proxy = await bufferingProxy(server.publicUrl);
  cleanups.push(() => proxy.close());
  const id = clientId('hal');
  const { cb, rec } = make(proxy.url, { token: mintToken(id), streamProbeTimeout: 1500 });
  cb.start();
  await waitFor(() => cb.transport === 'poll', { what: 'fallback', timeout: 10000 });
  assert.equal(cb.fallbackReason, 'buffered');
  await server.send(id, 'through the proxy');
  await waitFor(() => rec.messages.length === 1, { what: 'message by long-poll', timeout: 10000 });
  assert.deepEqual(rec.messages.map((m) => m.data), ['through the proxy']);
  // The abandoned stream does not linger as an open poll.
  await waitFor(async () => (await presence(server, id)).open_polls <= 1, { what: 'one open poll', timeout: 10000 });
  assert.deepEqual(rec.errors, []);
  cb.stop();
});
