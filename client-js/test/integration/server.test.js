'use strict';
// cometbox.js against the real binary, from Node (global fetch). Loopback only.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const CometBox = require('../../cometbox.js');
const { Server, mintToken, waitFor } = require('../../../tests/support/server.cjs');
const { MemoryStorage } = require('../lib/fakes.js');

let server;
const live = new Set();

before(async () => {
  server = await new Server().start();
});

after(async () => {
  for (const cb of live) cb.stop();
  if (server) { await server.stop(); server.cleanup(); }
});

let seq = 0;
function clientId(name) { return `${name}-${process.pid}-${++seq}`; }

/** A CometBox wired to collect everything; stopped at the end of the file. */
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
    transport: 'poll', // the long-poll transport; test/integration/sse.test.js covers the stream
    ...opts,
  });
  live.add(cb);
  return { cb, rec };
}

test('GET /cometbox.js serves this library', async () => {
  const r = await fetch(server.publicUrl + '/cometbox.js');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /javascript/);
  const body = await r.text();
  const file = fs.readFileSync(path.join(__dirname, '..', '..', 'cometbox.js'), 'utf8');
  assert.equal(body, file, 'the binary embeds an outdated cometbox.js: rebuild it (cargo build)');
});

test('receives what a backend posts to the ingest port, dispatched by event', async () => {
  const id = clientId('alice');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  const notices = [];
  cb.on('notice', (data, m) => notices.push([data, m.event]));
  cb.start();
  await waitFor(() => cb.state === 'connected' || rec.states.length > 1, { what: 'first poll' }).catch(() => {});
  await server.ingest(`<batch>
    <message to="${id}" event="notice">{"text": "Your export is ready"}</message>
    <message to="${id}" type="text">plain &amp; simple</message>
  </batch>`);
  await waitFor(() => rec.messages.length >= 2, { what: 'two messages' });
  assert.deepEqual(notices, [[{ text: 'Your export is ready' }, 'notice']]);
  assert.equal(rec.messages[1].data, 'plain & simple');
  assert.equal(rec.messages[1].event, undefined);
  assert.equal(typeof rec.messages[0].ts, 'number');
  assert.equal(cb.cursor, rec.messages[1].id);
  assert.equal(cb.state, 'connected');
  assert.equal(rec.errors.length, 0);
  cb.stop();
});

/** A message's `n`, or its `marker`. */
function label(m) { return m.data.marker !== undefined ? m.data.marker : m.data.n; }

/** Sends `{ marker }` to `id` and waits until `rec` has it: everything sent
 * before it has then been delivered, so what `rec` holds is all of it. */
async function untilMarker(id, rec, marker) {
  await server.send(id, { marker });
  await waitFor(() => rec.messages.some((m) => m.data.marker === marker), { what: `the marker ${marker}` });
}

test('what was queued before the page connected is delivered; a resumed client sees nothing twice', async () => {
  const id = clientId('bob');
  const storage = new MemoryStorage();
  await server.send(id, { n: 1 });
  await server.send(id, { n: 2 });
  const a = make(server.publicUrl, { token: mintToken(id), storage });
  a.cb.start();
  await waitFor(() => a.rec.messages.length >= 2, { what: 'queued messages' });
  // Nothing else arrives (no repeat of 1 or 2): shown by state, not by a
  // wait. A marker sent now is delivered after everything before it, so
  // the message that follows 2 must be the marker.
  await untilMarker(id, a.rec, 'a-end');
  a.cb.stop();
  assert.deepEqual(a.rec.messages.map(label), [1, 2, 'a-end']);

  // While no one polls, more arrives; a new instance (a page reload: same storage) resumes.
  await server.send(id, { n: 3 });
  const b = make(server.publicUrl, { token: mintToken(id), storage });
  assert.equal(b.cb.cursor, a.cb.cursor);
  b.cb.start();
  await waitFor(() => b.rec.messages.length >= 1, { what: 'resumed message' });
  await server.send(id, { n: 4 });
  await waitFor(() => b.rec.messages.length >= 2, { what: 'live message' });
  await untilMarker(id, b.rec, 'b-end');
  b.cb.stop();
  assert.deepEqual(b.rec.messages.map(label), [3, 4, 'b-end']);
  assert.equal(b.rec.resets.length, 0);
});

test('an empty poll times out (server poll_timeout 2s) and the client polls again', async () => {
  const id = clientId('idle');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  cb.start();
  await waitFor(() => rec.timeouts >= 1, { timeout: 8000, what: 'a timeout reply' });
  assert.equal(cb.state, 'connected');
  await server.send(id, 'after-timeout');
  await waitFor(() => rec.messages.length === 1, { what: 'message after timeout' });
  cb.stop();
});

test('?timeout= and tokenIn: "query"', async () => {
  const id = clientId('q');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id), tokenIn: 'query', timeout: 1 });
  cb.start();
  await waitFor(() => rec.timeouts >= 1, { timeout: 4000, what: 'a 1 s timeout reply' });
  await server.send(id, 'q');
  await waitFor(() => rec.messages.length === 1, { what: 'message' });
  assert.equal(rec.errors.length, 0);
  cb.stop();
});

test('channels: subscribe through the poll, receive what is published; a forbidden channel stops with 403', async () => {
  const id = clientId('carol');
  const room = 'room:' + id;
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id, { channels: ['room:*'] }), channels: [room] });
  cb.start();
  // The subscription is made by the poll itself: publish once it is open.
  await server.untilOpen(id);
  await server.publish(room, { from: 'dave', text: 'hello' }, 'chat');
  await waitFor(() => rec.messages.length === 1, { what: 'channel message' });
  assert.equal(rec.messages[0].channel, room);
  assert.equal(rec.messages[0].event, 'chat');
  cb.stop();

  const f = make(server.publicUrl, { token: mintToken(clientId('eve'), { channels: ['room:*'] }), channels: ['admin'] });
  f.cb.start();
  await waitFor(() => f.rec.errors.length === 1, { what: '403' });
  assert.equal(f.rec.errors[0].code, 'channel-forbidden');
  assert.equal(f.rec.errors[0].status, 403);
  assert.equal(f.cb.state, 'stopped');
});

test('expired token: getToken() gives a fresh one and nothing is lost', async () => {
  const id = clientId('frank');
  let calls = 0;
  const { cb, rec } = make(server.publicUrl, {
    token: mintToken(id, { exp: Math.floor(Date.now() / 1000) - 60 }),
    getToken: async (ctx) => { calls++; assert.equal(ctx.clientId, id); assert.equal(ctx.reason, 'token-expired'); return mintToken(id); },
  });
  await server.send(id, 'waiting');
  cb.start();
  await waitFor(() => rec.messages.length === 1, { what: 'message after refresh' });
  assert.equal(calls, 1);
  assert.equal(rec.errors.length, 0);
  cb.stop();

  const bad = make(server.publicUrl, { token: 'x.y.z' });
  bad.cb.start();
  await waitFor(() => bad.rec.errors.length === 1, { what: '401 reported' });
  assert.equal(bad.rec.errors[0].code, 'invalid-token');
  assert.equal(bad.rec.errors[0].status, 401);
});

test('a token minted through POST /token works', async () => {
  const id = clientId('grace');
  const r = await fetch(server.ingestUrl + '/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams([['client', id], ['ttl', '60'], ['channel', 'lobby']]).toString(),
  });
  const xml = await r.text();
  assert.equal(r.status, 200, xml);
  const m = /<token expires="(\d+)">([^<]+)<\/token>/.exec(xml);
  assert.ok(m, xml);
  const claims = CometBox.decodeToken(m[2]);
  assert.equal(claims.sub, id);
  assert.deepEqual(claims.channels, ['lobby']);
  const { cb, rec } = make(server.publicUrl, { token: m[2], channels: ['lobby'] });
  assert.equal(cb.clientId, id);
  cb.start();
  await server.untilOpen(id);
  await server.publish('lobby', 'hi lobby');
  await waitFor(() => rec.messages.length === 1, { what: 'lobby message' });
  cb.stop();
});

test('<disconnect> ends the poll: state stopped, onError code "disconnected"', async () => {
  const id = clientId('mallory');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  cb.start();
  await server.send(id, 'first');
  await waitFor(() => rec.messages.length === 1, { what: 'first message' });
  await server.untilOpen(id); // the next poll is open and held
  await server.ingest(`<disconnect client="${id}"/>`);
  await waitFor(() => rec.errors.length === 1, { what: 'disconnected', timeout: 5000 });
  assert.equal(rec.errors[0].code, 'disconnected');
  assert.equal(cb.state, 'stopped');
});

test('CORS: preflight for an allowed origin permits Authorization; others get no allow-origin', async () => {
  const origin = 'http://127.0.0.1:9';
  const s = await new Server({ COMETBOX_PUBLIC__CORS_ORIGINS: origin }).start();
  try {
    const pre = await fetch(s.publicUrl + '/poll', {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization' },
    });
    assert.ok(pre.status === 200 || pre.status === 204, 'preflight status ' + pre.status);
    assert.equal(pre.headers.get('access-control-allow-origin'), origin);
    assert.match((pre.headers.get('access-control-allow-headers') || '').toLowerCase(), /authorization|\*/);
    const r = await fetch(s.publicUrl + '/poll?timeout=1', { headers: { Origin: origin, Authorization: 'Bearer ' + mintToken('cors-1') } });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), origin);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const other = await fetch(s.publicUrl + '/poll?timeout=1', { headers: { Origin: 'http://evil.invalid', Authorization: 'Bearer ' + mintToken('cors-2') } });
    await other.text();
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  } finally {
    await s.stop();
    s.cleanup();
  }
});

test('429 too-many-polls: the second poller backs off and keeps trying', async () => {
  const s = await new Server({ COMETBOX_LIMITS__MAX_POLLS_PER_CLIENT: '1' }).start();
  try {
    const id = clientId('tabs');
    const a = make(s.publicUrl, { token: mintToken(id) });
    a.cb.start();
    await s.untilOpen(id);
    const b = make(s.publicUrl, { token: mintToken(id) });
    b.cb.start();
    await waitFor(() => b.rec.states.some(([st, d]) => st === 'waiting to reconnect' && d.error && d.error.code === 'too-many-polls'),
      { what: '429 backoff' });
    assert.equal(b.rec.errors.length, 0);
    a.cb.stop();
    b.cb.stop();
  } finally {
    await s.stop();
    s.cleanup();
  }
});

test('server restart: reconnect with backoff, reset reported, then messages flow again', async () => {
  const s = await new Server().start();
  try {
    const id = clientId('henry');
    const { cb, rec } = make(s.publicUrl, { token: mintToken(id) });
    cb.start();
    await s.send(id, 'before');
    await waitFor(() => rec.messages.length === 1, { what: 'before' });
    const r = await s.restart();
    assert.ok(r);
    await waitFor(() => rec.resets.length === 1, { what: 'reset after restart', timeout: 15000 });
    assert.ok(rec.states.some(([st]) => st === 'waiting to reconnect'), 'went through waiting to reconnect');
    await s.send(id, 'after');
    await waitFor(() => rec.messages.length === 2, { what: 'after' });
    assert.deepEqual(rec.messages.map((m) => m.data), ['before', 'after']);
    assert.equal(cb.state, 'connected');
    cb.stop();
  } finally {
    await s.stop();
    s.cleanup();
  }
});
