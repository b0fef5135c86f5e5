'use strict';
// GET /status against Redis in a real headless Chromium: a real Debian
// redis-server (its own directory, a free loopback port, stopped by pid;
// client-js/run-tests.sh installs it when missing) and two real cometbox
// nodes with COMETBOX_STORE__KIND=redis. The page of one node shows the
// store as Redis (healthy), the nodes alive (2: the sweep that counts them
// runs every client_idle_timeout / 4, so a short timeout shows them soon)
// and which figures are the cluster's (the store's `scope`). Then the other
// node stops, and once its liveness lapses the page shows 1. Screenshot in
// test-results/status-page-redis.png.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Server, waitFor } = require('../../../tests/support/server.cjs');
const { launch, RESULTS } = require('../lib/browser.js');
const { Proc, freePort, listening, REDIS } = require('../lib/cluster.js');

let browser;
const cleanups = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

const shown = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
async function waitShown(page, id, value, timeout = 20000) {
  await page.waitForFunction(([i, v]) => document.getElementById(i).textContent === v, [id, value], { timeout, polling: 100 })
    .catch(async (e) => { throw new Error(`#${id} is "${await shown(page, id)}", not "${value}": ${e.message}`); });
}

test('GET /status on Redis: the store is Redis, two nodes alive, then one', async () => {
  if (!fs.existsSync(REDIS)) throw new Error(`${REDIS} not found (apt-get install -y redis-server)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-js-status-redis-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const redis = new Proc(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no', '--daemonize', 'no'], path.join(dir, 'redis.log'));
  cleanups.push(() => redis.stop());
  await waitFor(() => listening(port), { timeout: 20000, what: 'redis-server listening' });

  const nodes = [];
  for (let i = 0; i < 2; i++) {
    const s = new Server({
      COMETBOX_STORE__KIND: 'redis',
      COMETBOX_STORE__URL: `redis://127.0.0.1:${port}/0`,
      // The sweep that counts the nodes alive runs every client_idle_timeout / 4.
      COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT: '4s',
    });
    cleanups.push(async () => { await s.stop(); s.cleanup(); });
    await s.start();
    nodes.push(s);
  }
  // The figures the page reads: this node's /stats says Redis and two nodes.
  await waitFor(async () => {
    const st = await (await fetch(nodes[0].ingestUrl + '/stats')).json();
    return st.scope && st.scope.nodes === 2;
  }, { timeout: 20000, what: '/stats scope.nodes == 2' });

  const ctx = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  cleanups.push(() => ctx.close());
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const reply = await page.goto(nodes[0].ingestUrl + '/status');
  assert.equal(reply.status(), 200);

  await waitShown(page, 'store', 'healthy');
  await waitShown(page, 'nodes', '2');
  assert.equal(await page.evaluate(() => document.getElementById('nodes-box').hidden), false, 'the nodes box is shown on Redis');
  const scope = await shown(page, 'scope');
  assert.match(scope, /^On Redis, /, 'the page says the store is Redis');
  const st = await (await fetch(nodes[0].ingestUrl + '/stats')).json();
  // The page names the cluster-wide figures and this node exactly as /stats does.
  assert.ok(Array.isArray(st.scope.cluster) && st.scope.cluster.length > 0, JSON.stringify(st.scope));
  assert.ok(scope.includes(st.scope.cluster.join(', ')), scope);
  assert.ok(scope.includes(`(${st.scope.node})`), scope);

  // A message to a client through the other node: the cluster-wide count of
  // clients on this node's page follows (messages_in is this node's: 0).
  assert.ok(st.scope.cluster.includes('clients'), JSON.stringify(st.scope));
  await nodes[1].send('status-redis-' + process.pid, { n: 1 });
  await waitShown(page, 'v-clients', '1');
  assert.equal(await shown(page, 'v-messages_in'), '0');
  const file = path.join(RESULTS, 'status-page-redis.png');
  await page.screenshot({ path: file, fullPage: true });
  console.log(`status page screenshot: ${file}`);
  assert.ok(fs.statSync(file).size > 1000, 'a screenshot was written');

  // The other node stops: once its liveness lapses, one node is alive.
  await nodes[1].stop();
  await waitShown(page, 'nodes', '1', 30000);
  await waitShown(page, 'store', 'healthy');
  assert.deepEqual(errors, []);
});
