'use strict';
// cometbox.js in a real headless Chromium against the real binary. Loopback only.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Server, mintToken, sleep } = require('../../../tests/support/server.cjs');
const { launch, staticServer, openTestPage, testPage } = require('../lib/browser.js');

let browser;
const cleanups = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

async function newServer(env) {
  const s = await new Server(env).start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  return s;
}

async function newContext() {
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  return ctx;
}

let seq = 0;
const cid = (n) => `${n}-${process.pid}-${++seq}`;

const count = (page) => page.evaluate(() => T.messages.length);
async function waitCount(page, n, timeout = 10000) {
  await page.waitForFunction((k) => T.messages.length >= k, n, { timeout, polling: 50 });
}
async function waitConnected(page, timeout = 10000) {
  await page.waitForFunction(() => window.cb && cb.state === 'connected' || T.timeouts > 0, null, { timeout, polling: 50 }).catch(() => {});
}

test('a page receives what a backend posts to the ingest port; a reload does not replay', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('alice');
  const token = mintToken(id);
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, token]);
  await s.send(id, { text: 'hello from the backend' }, 'notice');
  await s.send(id, { text: 'second' }, 'notice');
  await waitCount(page, 2);
  const msgs = await page.evaluate(() => T.messages.map((m) => [m.event, m.data.text]));
  assert.deepEqual(msgs, [['notice', 'hello from the backend'], ['notice', 'second']]);
  assert.equal(await page.locator('#log li').count(), 2);
  assert.equal(await page.evaluate(() => cb.state), 'connected');
  const cursor = await page.evaluate(() => cb.cursor);
  const stored = await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('cometbox:')).map((k) => [k, sessionStorage.getItem(k)]));
  assert.deepEqual(stored, [[`cometbox:cursor:${s.publicUrl}#${id}`, cursor]]);

  // Reload: the cursor comes from sessionStorage; the two old messages are not shown again.
  await page.reload();
  await page.waitForFunction(() => typeof window.boot === 'function');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, token]);
  assert.equal(await page.evaluate(() => cb.cursor), cursor);
  await s.send(id, { text: 'third' }, 'notice');
  await waitCount(page, 1);
  await sleep(500);
  assert.deepEqual(await page.evaluate(() => T.messages.map((m) => m.data.text)), ['third']);
  assert.deepEqual(await page.evaluate(() => T.errors), []);
  await page.close();
});

test('two pages of the same client both receive every message', async () => {
  const s = await newServer();
  const id = cid('bob');
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const ctx = await newContext();
    const p = await openTestPage(ctx, s.publicUrl);
    await p.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
    pages.push(p);
  }
  await Promise.all(pages.map((p) => waitConnected(p)));
  for (let n = 1; n <= 3; n++) await s.send(id, { n }, 'tick');
  for (const p of pages) {
    await waitCount(p, 3);
    assert.deepEqual(await p.evaluate(() => T.messages.map((m) => m.data.n)), [1, 2, 3]);
  }
  await sleep(300);
  for (const p of pages) assert.equal(await count(p), 3);
});

test('the page keeps working across a sidecar restart (SIGTERM, same port): reset, then new messages', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('carol');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
  await s.send(id, 'before restart');
  await waitCount(page, 1);
  const port = s.publicPort;
  const exit = await s.stop();
  assert.equal(exit.code, 0, 'SIGTERM exits 0');
  await page.waitForFunction(() => cb.state === 'waiting to reconnect', null, { timeout: 10000, polling: 50 });
  await s.start();
  assert.equal(s.publicPort, port);
  await page.waitForFunction(() => T.resets.length === 1, null, { timeout: 15000, polling: 50 });
  await s.send(id, 'after restart');
  await waitCount(page, 2);
  assert.deepEqual(await page.evaluate(() => T.messages.map((m) => m.data)), ['before restart', 'after restart']);
  assert.equal(await page.evaluate(() => cb.state), 'connected');
  assert.deepEqual(await page.evaluate(() => T.errors), []);
  const states = await page.evaluate(() => T.states.map((x) => x.state));
  assert.ok(states.includes('waiting to reconnect'), states.join(' > '));
});

test('an expired token is refreshed through getToken()', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('dave');
  await page.exposeFunction('mintToken', (sub) => mintToken(sub));
  const expired = mintToken(id, { exp: Math.floor(Date.now() / 1000) - 30 });
  await s.send(id, 'queued while the token was stale');
  await page.evaluate(([u, t]) => boot(u, { token: t, refresh: true }), [s.publicUrl, expired]);
  await waitCount(page, 1);
  assert.equal(await page.evaluate(() => T.tokens), 1);
  assert.notEqual(await page.evaluate(() => cb.token), expired);
  await s.send(id, 'live');
  await waitCount(page, 2);
  assert.deepEqual(await page.evaluate(() => T.errors), []);
});

test('a backend <disconnect> stops the page with code "disconnected"', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('mallory');
  await page.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
  await s.send(id, 'hello');
  await waitCount(page, 1);
  await sleep(200);
  await s.ingest(`<disconnect client="${id}"/>`);
  await page.waitForFunction(() => T.errors.length === 1, null, { timeout: 5000, polling: 50 });
  assert.deepEqual(await page.evaluate(() => [cb.state, T.errors[0].code, document.getElementById('state').textContent]),
    ['stopped', 'disconnected', 'stopped']);
});

test('the online event re-polls at once instead of waiting out the backoff', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const page = await openTestPage(ctx, s.publicUrl);
  const id = cid('erin');
  // Long backoff: the first retry would come 10-20 s later. Long-poll: Chromium's
  // emulated offline fails new requests but leaves an open stream (loopback) up.
  await page.evaluate(([u, t]) => boot(u, { token: t, transport: 'poll', backoff: { base: 20000, max: 20000 } }), [s.publicUrl, mintToken(id)]);
  await waitConnected(page);
  await ctx.setOffline(true);
  await page.waitForFunction(() => cb.state === 'waiting to reconnect', null, { timeout: 10000, polling: 50 });
  const t0 = Date.now();
  await ctx.setOffline(false);
  await s.send(id, 'back online');
  await waitCount(page, 1, 8000);
  assert.ok(Date.now() - t0 < 8000);
});

test('a page on another origin works through CORS (Authorization header, preflight)', async () => {
  let html = '';
  const allowed = await staticServer({ '/page.html': () => html });
  const denied = await staticServer({ '/page.html': () => html });
  cleanups.push(() => allowed.close(), () => denied.close());
  const s = await newServer({ COMETBOX_PUBLIC__CORS_ORIGINS: allowed.origin });
  // The page lives on the static server's origin and loads the library from the sidecar.
  html = testPage(s.publicUrl);

  const ctx = await newContext();
  const page = await ctx.newPage();
  await page.goto(allowed.origin + '/page.html');
  await page.waitForFunction(() => typeof window.CometBox === 'function');
  const id = cid('frank');
  // CORS is about fetch (/events, /poll): a WebSocket is not subject to it, and
  // the server's /ws does not check Origin against cors_origins.
  await page.evaluate(([u, t]) => boot(u, { token: t, transport: 'sse' }), [s.publicUrl, mintToken(id)]);
  await s.send(id, { text: 'across origins' }, 'notice');
  await waitCount(page, 1);
  assert.equal(await page.evaluate(() => location.origin), allowed.origin);
  assert.notEqual(allowed.origin, s.publicUrl);
  assert.deepEqual(await page.evaluate(() => T.messages.map((m) => m.data.text)), ['across origins']);
  assert.deepEqual(await page.evaluate(() => T.errors), []);

  // An origin the sidecar does not allow cannot read the replies: the client keeps retrying.
  const other = await ctx.newPage();
  await other.goto(denied.origin + '/page.html');
  await other.waitForFunction(() => typeof window.CometBox === 'function');
  const id2 = cid('gina');
  await other.evaluate(([u, t]) => boot(u, { token: t, transport: 'sse' }), [s.publicUrl, mintToken(id2)]);
  await other.waitForFunction(() => T.states.some((x) => x.state === 'waiting to reconnect'), null, { timeout: 10000, polling: 50 });
  await s.send(id2, 'must not arrive');
  await sleep(1000);
  assert.equal(await count(other), 0);
  await other.evaluate(() => cb.stop());
});

test('the library loads as an ES module in the browser (cometbox.mjs) with no classic script', async () => {
  const fs = require('node:fs');
  const path = require('node:path');
  const ctx = await newContext();
  const page = await ctx.newPage();
  const origin = 'http://127.0.0.1:9'; // never contacted: playwright answers every request below
  const file = (n) => fs.readFileSync(path.join(__dirname, '..', '..', n), 'utf8');
  await page.route(origin + '/cometbox.js', (r) => r.fulfill({ body: file('cometbox.js'), contentType: 'text/javascript' }));
  await page.route(origin + '/cometbox.mjs', (r) => r.fulfill({ body: file('cometbox.mjs'), contentType: 'text/javascript' }));
  await page.route(origin + '/esm.html', (r) => r.fulfill({
    contentType: 'text/html',
    body: `<script type="module">
      import CometBox, { STATES, decodeToken } from '/cometbox.mjs';
      const cb = new CometBox('/x', { token: 'a.' + btoa(JSON.stringify({ sub: 'esm' })).replace(/=+$/, '') + '.c' });
      window.result = { type: typeof CometBox, state: cb.state, sub: cb.clientId, waiting: STATES.WAITING, dec: typeof decodeToken };
    </script>`,
  }));
  await page.goto(origin + '/esm.html');
  await page.waitForFunction(() => window.result, null, { timeout: 5000 });
  assert.deepEqual(await page.evaluate(() => window.result),
    { type: 'function', state: 'stopped', sub: 'esm', waiting: 'waiting to reconnect', dec: 'function' });
});
