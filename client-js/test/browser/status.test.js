'use strict';
// GET /status (the ingest listener's status page) in a real headless Chromium
// against the real binary: the page loads whole from the server (nothing from
// elsewhere), its figures appear and follow what happens, and with an ingest key
// the browser's Basic credentials carry the key. Screenshots go to test-results/.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { Server, mintToken, waitFor } = require('../../../tests/support/server.cjs');
const { launch, RESULTS } = require('../lib/browser.js');
const fs = require('node:fs');
const { REPO } = require('../../../tests/support/server.cjs');

/** The version the binary reports (Cargo.toml's). */
const CARGO_VERSION = fs.readFileSync(path.join(REPO, 'Cargo.toml'), 'utf8').match(/^version = "([^"]+)"/m)[1];

let browser;
const cleanups = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

async function newServer(env) {
  const s = await new Server(env).start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  return s;
}

async function newContext(options) {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 }, ...options });
  cleanups.push(() => ctx.close());
  return ctx;
}

/** A loopback port nothing listens on (bound, then released). */
function closedPort() {
  return new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Opens /status, recording every request the page makes. */
async function openStatus(ctx, s) {
  const page = await ctx.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const reply = await page.goto(s.ingestUrl + '/status');
  return { page, reply, requests, errors };
}

const shown = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
async function waitShown(page, id, value, timeout = 10000) {
  await page.waitForFunction(([i, v]) => document.getElementById(i).textContent === v, [id, value], { timeout, polling: 100 });
}

async function screenshot(page, name) {
  const file = path.join(RESULTS, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`status page screenshot: ${file}`);
}

test('GET /status: a page whole in itself whose figures follow the server', async () => {
  const s = await newServer();
  const ctx = await newContext();
  const { page, reply, requests, errors } = await openStatus(ctx, s);
  assert.equal(reply.status(), 200);
  assert.match(reply.headers()['content-type'], /^text\/html/);
  assert.match(reply.headers()['content-security-policy'], /default-src 'none'/);

  // The first refresh fills every figure.
  await waitShown(page, 'v-messages_in', '0');
  await waitShown(page, 'store', 'healthy');
  assert.equal(await shown(page, 'v-clients'), '0');
  assert.equal(await shown(page, 'v-open_polls'), '0');
  assert.equal(await shown(page, 'version'), CARGO_VERSION);
  assert.match(await shown(page, 'hooks'), /off/);
  assert.match(await shown(page, 'bridges'), /none/);

  // A message in, a poll held open: the page shows both without a reload.
  const id = 'status-' + process.pid;
  await s.send(id, { text: 'one' }, 'notice');
  await s.publish('room:1', { text: 'nobody listens' });
  const held = fetch(`${s.publicUrl}/poll?token=${mintToken(id)}&since=now&timeout=8`);
  await waitShown(page, 'v-messages_in', '2');
  await waitShown(page, 'v-open_polls', '1');
  assert.equal(await shown(page, 'v-clients'), '1');
  assert.match(await shown(page, 'r-messages_in'), /per second$/);
  await screenshot(page, 'status-page.png');

  // The poll is answered: one message out, nothing open any more.
  await s.send(id, { text: 'two' }, 'notice');
  assert.equal((await (await held).json()).messages.length, 1);
  await waitShown(page, 'v-messages_out', '1');
  await waitShown(page, 'v-open_polls', '0');

  // Everything the page loaded came from the ingest listener itself.
  const origins = new Set(requests.map((u) => new URL(u).origin));
  assert.deepEqual([...origins], [s.ingestUrl]);
  assert.deepEqual(errors, []);
  await page.close();
});

test('GET /status behind an ingest key: Basic credentials carry the key, for reading only', async () => {
  const key = 'status-key-' + process.pid;
  const [brokerPort, hookPort] = [await closedPort(), await closedPort()];
  const s = await newServer({
    COMETBOX_INGEST__KEY: key,
    // A bridge and hooks whose far ends are down: the page shows their state.
    COMETBOX_BRIDGE__0__URL: `nats://127.0.0.1:${brokerPort}`,
    COMETBOX_BRIDGE__0__SOURCE: 'orders',
    COMETBOX_BRIDGE__0__CHANNEL: 'orders',
    COMETBOX_HOOKS__URL: `http://127.0.0.1:${hookPort}/hook`,
    COMETBOX_HOOKS__SECRET: 'hook-secret',
  });
  const bearer = { Authorization: 'Bearer ' + key };
  const basic = (k) => ({ Authorization: 'Basic ' + Buffer.from('ops:' + k).toString('base64') });

  // Without credentials: 401, and the header that makes a browser ask.
  const bare = await fetch(s.ingestUrl + '/status');
  assert.equal(bare.status, 401);
  assert.match(bare.headers.get('www-authenticate'), /^Basic realm="cometbox ingest"/);
  assert.equal((await fetch(s.ingestUrl + '/status', { headers: basic('wrong') })).status, 401);
  // Basic credentials read; they never apply commands or mint tokens.
  assert.equal((await fetch(s.ingestUrl + '/stats', { headers: basic(key) })).status, 200);
  const post = await fetch(s.ingestUrl + '/', { method: 'POST', headers: { ...basic(key), 'Content-Type': 'application/xml' }, body: '<batch/>' });
  assert.equal(post.status, 401);
  assert.equal(post.headers.get('www-authenticate'), null);
  const token = await fetch(s.ingestUrl + '/token', { method: 'POST', headers: basic(key), body: new URLSearchParams({ client: 'a' }) });
  assert.equal(token.status, 401);

  // A browser that was given the key (what a person types at the prompt).
  const ctx = await newContext({ httpCredentials: { username: 'ops', password: key } });
  const { page, reply, errors } = await openStatus(ctx, s);
  assert.equal(reply.status(), 200);
  await waitShown(page, 'store', 'healthy');
  await waitFor(async () => (await shown(page, 'bridges')).includes('orders'), { what: 'the bridge row' });
  assert.match(await shown(page, 'bridges'), /connecting|disconnected/);
  await page.waitForSelector('#hooks-row', { timeout: 10000 });
  const before = Number((await shown(page, 'v-messages_in')).replace(/,/g, ''));
  const sent = await fetch(s.ingestUrl + '/', { method: 'POST', headers: { ...bearer, 'Content-Type': 'application/xml' }, body: '<message to="ops-check">{"n": 1}</message>' });
  assert.equal(sent.status, 200);
  await waitShown(page, 'v-messages_in', String(before + 1));
  await screenshot(page, 'status-page-key.png');
  assert.deepEqual(errors, []);

  // A browser without credentials is asked for them (headless, it cannot answer).
  const other = await newContext();
  const refused = await other.newPage();
  await assert.rejects(refused.goto(s.ingestUrl + '/status'), /ERR_INVALID_AUTH_CREDENTIALS/);
});
