'use strict';
// The WebSocket transport (GET /ws) in a real headless Chromium against the real
// binary: 'auto' picks it; a restart of a disk-store server on the same port is
// resumed from the cursor; the token's expiry (close 4001) refreshes the token;
// through the shipped nginx snippet (which does not pass `Upgrade` on) the page
// uses the stream instead. Tab sharing over a socket: tabs.test.js.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Server, mintToken, sleep, waitFor } = require('../../../tests/support/server.cjs');
const { launch, openTestPage } = require('../lib/browser.js');
const { Cluster } = require('../lib/cluster.js');

let browser;
const cleanups = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

async function newContext() {
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  return ctx;
}

let seq = 0;
const cid = (n) => `${n}-${process.pid}-${++seq}`;
const data = (p) => p.evaluate(() => T.messages.map((m) => m.data));
async function waitCount(page, n, timeout = 15000) {
  await page.waitForFunction((k) => T.messages.length >= k, n, { timeout, polling: 50 });
}

async function presence(s, id) {
  const r = await fetch(`${s.ingestUrl}/clients/${encodeURIComponent(id)}`);
  return r.status === 404 ? { open_polls: 0 } : r.json();
}

test('auto picks the WebSocket; a disk-store server restarted on the same port: resumed from the cursor, no reset, nothing lost or twice', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-js-ws-disk-'));
  const s = await new Server({ COMETBOX_STORE__KIND: 'disk', COMETBOX_STORE__PATH: dir }).start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); fs.rmSync(dir, { recursive: true, force: true }); });
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('wanda');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
  await page.waitForFunction(() => cb.state === 'connected', null, { timeout: 10000, polling: 50 });
  assert.deepEqual(await page.evaluate(() => [cb.transport, cb.fallbackReason]), ['ws', null]);
  await waitFor(async () => (await presence(s, id)).open_polls === 1, { what: 'the socket is one open poll' });
  await s.send(id, 1, 'tick');
  await s.send(id, 2, 'tick');
  await waitCount(page, 2);

  const port = s.publicPort;
  await s.stop();
  await page.waitForFunction(() => cb.state === 'waiting to reconnect', null, { timeout: 10000, polling: 50 });
  await s.start();
  assert.equal(s.publicPort, port);
  await s.send(id, 3, 'tick'); // maybe before the page is back: it comes from the cursor
  await waitCount(page, 3);
  await s.send(id, 4, 'tick');
  await waitCount(page, 4);
  await sleep(300);
  assert.deepEqual(await data(page), [1, 2, 3, 4]);
  assert.deepEqual(await page.evaluate(() => T.resets), [], 'the disk store keeps the cursor valid');
  assert.deepEqual(await page.evaluate(() => T.errors), []);
  const states = await page.evaluate(() => T.states.map((x) => x.state + (x.code ? ':' + x.code : '')));
  assert.ok(states.includes('waiting to reconnect:shutting-down'), states.join(' > '));
  assert.deepEqual(await page.evaluate(() => [cb.state, cb.transport]), ['connected', 'ws']);

  // A reload resumes from the cursor in sessionStorage: nothing is shown again.
  await page.reload();
  await page.waitForFunction(() => typeof window.boot === 'function');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
  await s.send(id, 5, 'tick');
  await waitCount(page, 1);
  await sleep(300);
  assert.deepEqual(await data(page), [5]);
});

test('the token expires on an open socket (close 4001): getToken() is asked and the page goes on', async () => {
  const s = await new Server().start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  await page.exposeFunction('mintToken', (sub) => mintToken(sub));
  const id = cid('xena');
  await page.evaluate(([u, t]) => boot(u, { token: t, refresh: true }), [s.publicUrl, mintToken(id, { ttl: 3 })]);
  await page.waitForFunction(() => cb.state === 'connected', null, { timeout: 10000, polling: 50 });
  assert.equal(await page.evaluate(() => cb.transport), 'ws');
  await s.send(id, 'before');
  await waitCount(page, 1);
  await page.waitForFunction(() => T.tokens === 1, null, { timeout: 10000, polling: 50 });
  await s.send(id, 'after');
  await waitCount(page, 2);
  await sleep(300);
  assert.deepEqual(await data(page), ['before', 'after']);
  assert.deepEqual(await page.evaluate(() => [cb.state, cb.transport, T.tokens]), ['connected', 'ws', 1]);
  assert.deepEqual(await page.evaluate(() => T.errors), []);
  // The refresh happened without leaving `connected` (a 401 while connected keeps it).
  const states = await page.evaluate(() => T.states.map((x) => x.state));
  assert.deepEqual(states, ['connecting', 'connected'], states.join(' > '));
});

test('a refused socket is told by its close code: 4003 channel-forbidden stops the page with onError', async () => {
  const s = await new Server().start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('yuri');
  await page.evaluate(([u, t]) => boot(u, { token: t, channels: ['secret'] }), [s.publicUrl, mintToken(id, { channels: ['room:*'] })]);
  await page.waitForFunction(() => T.errors.length === 1, null, { timeout: 10000, polling: 50 });
  assert.deepEqual(await page.evaluate(() => [cb.state, cb.transport, T.errors[0].code, T.errors[0].status]),
    ['stopped', 'ws', 'channel-forbidden', 403]);
});

test('through a proxy that does not pass the upgrade on (/ws answers 400), auto uses the stream', async () => {
  const c = await new Cluster(1, { passUpgrade: false }).start();
  cleanups.push(() => c.stop());
  const ctx = await newContext();
  const page = await openTestPage(ctx, c.origin, '/cometbox');
  const id = cid('zack');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [c.url, mintToken(id)]);
  await page.waitForFunction(() => cb.state === 'connected', null, { timeout: 15000, polling: 50 });
  assert.deepEqual(await page.evaluate(() => [cb.transport, cb.fallbackReason]), ['sse', 'ws-failed']);
  await c.nodes[0].send(id, 'through nginx');
  await waitCount(page, 1);
  assert.deepEqual(await data(page), ['through nginx']);
  assert.deepEqual(await page.evaluate(() => T.errors), []);
  const log = c.accessLog().split('\n').filter((l) => l.startsWith('/cometbox/ws?'));
  assert.ok(log.length >= 1 && log.every((l) => l.split('|')[1] === '400'), log.join(' / '));
  // Kept for the page's life: no second try of /ws.
  await page.evaluate(() => { cb.stop(); cb.start(); });
  await page.waitForFunction(() => cb.state === 'connected', null, { timeout: 15000, polling: 50 });
  assert.equal(await page.evaluate(() => cb.transport), 'sse');
  assert.equal(c.accessLog().split('\n').filter((l) => l.startsWith('/cometbox/ws?')).length, log.length);
});
