'use strict';
// The WebSocket transport (GET /ws) against the real binary, from Node. Needs a
// global WebSocket: Node >= 22, or Node 20/21 with --experimental-websocket
// (run-tests.sh passes it). Without one every test here is skipped, saying so.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const CometBox = require('../../cometbox.js');
const { Server, mintToken, waitFor, sleep } = require('../../../tests/support/server.cjs');
const { MemoryStorage } = require('../lib/fakes.js');
const { bufferingProxy } = require('../lib/proxy.js');

const skip = typeof WebSocket !== 'function' ? 'no global WebSocket in this Node (use --experimental-websocket or Node >= 22)' : false;

let server;
const live = new Set();
const cleanups = [];

before(async () => {
  if (skip) return;
  server = await new Server().start();
});

after(async () => {
  for (const cb of live) cb.stop();
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (server) { await server.stop(); server.cleanup(); }
});

let seq = 0;
const clientId = (name) => `${name}-${process.pid}-${++seq}`;

function make(url, opts = {}) {
  const rec = { messages: [], errors: [], states: [], resets: [] };
  const cb = new CometBox(url, {
    storage: new MemoryStorage(),
    onMessage: (m) => rec.messages.push(m),
    onError: (e) => rec.errors.push(e),
    onStateChange: (s, d) => rec.states.push([s, d && d.error ? d.error.code : null]),
    onReset: (i) => rec.resets.push(i),
    backoff: { base: 200, max: 1000 },
    ...opts,
  });
  live.add(cb);
  return { cb, rec };
}

async function presence(s, id) {
  const r = await fetch(`${s.ingestUrl}/clients/${encodeURIComponent(id)}`);
  return r.status === 404 ? { open_polls: 0 } : r.json();
}

test('auto opens a WebSocket: connected, every message dispatched, the socket is one open poll', { skip }, async () => {
  const id = clientId('ann');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id) });
  const named = [];
  cb.on('notice', (d) => named.push(d.text));
  cb.start();
  await waitFor(() => cb.state === 'connected', { what: 'connected' });
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.fallbackReason, null);
  await waitFor(async () => (await presence(server, id)).open_polls === 1, { what: 'the socket counted as an open poll' });
  await server.send(id, { text: 'one' }, 'notice');
  await server.send(id, 'two');
  await server.send(id, { text: 'three' }, 'notice');
  await waitFor(() => rec.messages.length === 3, { what: '3 messages' });
  assert.deepEqual(rec.messages.map((m) => m.data), [{ text: 'one' }, 'two', { text: 'three' }]);
  assert.deepEqual(named, ['one', 'three']);
  assert.equal(cb.cursor, rec.messages[2].id);
  assert.deepEqual(rec.states.map((s) => s[0]), ['connecting', 'connected']);
  cb.stop();
  await waitFor(async () => (await presence(server, id)).open_polls === 0, { what: 'the socket closed on stop()' });
  assert.deepEqual(rec.errors, []);
});

test('a short streamIdleTimeout: the class pings a quiet socket and it stays up', { skip }, async () => {
  const id = clientId('pip');
  const { cb, rec } = make(server.publicUrl, { token: mintToken(id), streamIdleTimeout: 600 });
  cb.start();
  await waitFor(() => cb.state === 'connected', { what: 'connected' });
  await sleep(2500); // several pings of 300 ms quiet, each answered
  assert.deepEqual(rec.states.map((s) => s[0]), ['connecting', 'connected'], 'no reconnect');
  await server.send(id, 'still here');
  await waitFor(() => rec.messages.length === 1, { what: 'message' });
  cb.stop();
});

test('close 4003 channel-forbidden stops with onError; 4001 for an expired token without getToken stops too', { skip }, async () => {
  const a = make(server.publicUrl, { token: mintToken(clientId('cat'), { channels: ['room:*'] }), channels: ['secret'] });
  a.cb.start();
  await waitFor(() => a.rec.errors.length === 1, { what: '4003' });
  assert.deepEqual([a.rec.errors[0].code, a.rec.errors[0].status, a.cb.state], ['channel-forbidden', 403, 'stopped']);
  assert.equal(a.cb.transport, 'ws', 'a refusal is not a reason to give up the WebSocket');
  const b = make(server.publicUrl, { token: mintToken(clientId('dee'), { exp: Math.floor(Date.now() / 1000) - 60 }) });
  b.cb.start();
  await waitFor(() => b.rec.errors.length === 1, { what: '4001' });
  assert.deepEqual([b.rec.errors[0].code, b.rec.errors[0].status], ['token-expired', 401]);
});

test('the server closes with 4001 when the token expires: getToken() gives a new one, nothing is lost', { skip }, async () => {
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
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.state, 'connected');
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('<disconnect>: its last frame and close 1000 stop the instance with "disconnected"', { skip }, async () => {
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

test('disk store restart on the same port (1001 shutting-down): the socket reconnects from its cursor, no reset, nothing lost or twice', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-js-ws-disk-'));
  const s = await new Server({ COMETBOX_STORE__KIND: 'disk', COMETBOX_STORE__PATH: dir }).start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); fs.rmSync(dir, { recursive: true, force: true }); });
  const id = clientId('gil');
  const { cb, rec } = make(s.publicUrl, { token: mintToken(id) });
  cb.start();
  await s.send(id, 1);
  await s.send(id, 2);
  await waitFor(() => rec.messages.length === 2, { what: 'before the restart' });
  await s.restart();
  await s.send(id, 3); // possibly before the socket is back: it comes from the cursor
  await waitFor(() => rec.messages.length === 3, { what: 'after the restart', timeout: 15000 });
  await s.send(id, 4);
  await waitFor(() => rec.messages.length === 4, { what: 'live after the restart' });
  await sleep(300);
  assert.deepEqual(rec.messages.map((m) => m.data), [1, 2, 3, 4]);
  assert.deepEqual(rec.resets, [], 'the disk store keeps cursors valid');
  assert.ok(rec.states.some(([st, code]) => st === 'waiting to reconnect' && code === 'shutting-down'),
    JSON.stringify(rec.states));
  assert.equal(cb.transport, 'ws');
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

/** A pass-through proxy (responses streamed as they come) that refuses every
 *  WebSocket upgrade with 404, as a proxy whose route has no /ws would. */
function proxyWithoutUpgrade(target) {
  const upstream = new URL(target);
  const seen = [];
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      seen.push(req.url.split('?')[0]);
      const up = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      req.pipe(up);
    });
    srv.on('upgrade', (req, socket) => {
      seen.push('upgrade ' + req.url.split('?')[0]);
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
    srv.listen(0, '127.0.0.1', () => resolve({
      url: 'http://127.0.0.1:' + srv.address().port,
      seen,
      close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
    }));
  });
}

test('through a proxy that refuses the upgrade, auto uses the stream and says why', { skip }, async () => {
  const proxy = await proxyWithoutUpgrade(server.publicUrl);
  cleanups.push(() => proxy.close());
  const id = clientId('hal');
  const { cb, rec } = make(proxy.url, { token: mintToken(id) });
  cb.start();
  await waitFor(() => cb.state === 'connected', { what: 'connected', timeout: 10000 });
  assert.equal(cb.transport, 'sse');
  assert.equal(cb.fallbackReason, 'ws-failed');
  await server.send(id, 'by the stream');
  await waitFor(() => rec.messages.length === 1, { what: 'message' });
  assert.deepEqual(proxy.seen.slice(0, 2), ['upgrade /ws', '/events']);
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('through a proxy that drops upgrades and buffers responses, auto ends on long-poll', { skip }, async () => {
  const proxy = await bufferingProxy(server.publicUrl);
  cleanups.push(() => proxy.close());
  const id = clientId('ida');
  const { cb, rec } = make(proxy.url, { token: mintToken(id), streamProbeTimeout: 1500 });
  cb.start();
  await waitFor(() => cb.transport === 'poll', { what: 'fallback', timeout: 10000 });
  assert.equal(cb.fallbackReason, 'buffered');
  await server.send(id, 'through the proxy');
  await waitFor(() => rec.messages.length === 1, { what: 'message by long-poll', timeout: 10000 });
  assert.deepEqual(rec.errors, []);
  cb.stop();
});

test('while the server is down at start, auto keeps the WebSocket and uses it once the server is up', { skip }, async () => {
  const s = await new Server().start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  const url = s.publicUrl;
  await s.stop();
  const id = clientId('jon');
  const { cb, rec } = make(url, { token: mintToken(id) });
  cb.start();
  await waitFor(() => rec.states.filter(([st]) => st === 'waiting to reconnect').length >= 2, { what: 'two failed rounds' });
  assert.equal(cb.transport, 'ws', 'neither the socket nor the stream got through: the server is down');
  await s.restart();
  await waitFor(() => cb.state === 'connected', { what: 'connected after the start', timeout: 15000 });
  assert.equal(cb.transport, 'ws');
  assert.equal(cb.fallbackReason, null);
  await s.send(id, 'up');
  await waitFor(() => rec.messages.length === 1, { what: 'message' });
  cb.stop();
});
