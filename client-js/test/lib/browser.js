'use strict';
// Headless Debian Chromium driven by playwright-core (which never downloads a browser).
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Local Network Access: a page that Playwright's router fulfils (openTestPage)
  // has no IP address space, and Chromium (>= 142) then refuses its WebSocket to
  // 127.0.0.1 (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS; fetch() to its own
  // origin is let through). A page really served from loopback is not refused.
  '--disable-features=LocalNetworkAccessChecks',
];
const RESULTS = path.resolve(__dirname, '..', '..', 'test-results');

async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  // playwright-core ships no browser and never downloads one.
  const { chromium } = require('playwright-core');
  // launch() gives every browser a fresh temporary user-data-dir, removed on close().
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
}

/** The test page: loads /cometbox.js from `scriptBase` and exposes helpers to the test. */
function testPage(scriptBase = '') {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>cometbox test page</title>
<script src="${scriptBase}/cometbox.js"></script></head>
<body><h1>cometbox test</h1><div id="state"></div><ul id="log"></ul>
<script>
  window.T = { messages: [], errors: [], states: [], resets: [], timeouts: 0, tokens: 0 };
  window.boot = function (url, opts) {
    opts = opts || {};
    var o = {
      token: opts.token,
      channels: opts.channels,
      tokenIn: opts.tokenIn,
      transport: opts.transport,
      shareTabs: opts.shareTabs,
      streamProbeTimeout: opts.streamProbeTimeout,
      backoff: opts.backoff || { base: 300, max: 2000 },
      onMessage: function (m) {
        T.messages.push(m);
        var li = document.createElement('li');
        li.textContent = (m.event ? m.event + ': ' : '') + JSON.stringify(m.data);
        document.getElementById('log').appendChild(li);
      },
      onError: function (e) { T.errors.push({ code: e.code, status: e.status, message: e.message }); },
      onStateChange: function (s, d) {
        T.states.push({ state: s, code: d.error ? d.error.code : null, delay: d.delay || null, at: Date.now() });
        document.getElementById('state').textContent = s;
      },
      onReset: function (i) { T.resets.push({ cursor: i.cursor, previous: i.previousCursor, n: i.messages.length }); },
      onTimeout: function () { T.timeouts++; }
    };
    if (opts.refresh) o.getToken = function (ctx) { T.tokens++; return window.mintToken(ctx.clientId); };
    window.cb = new CometBox(url, o);
    cb.start();
    return cb.state;
  };
</script></body></html>`;
}

/** A static HTTP server on a loopback port, serving `routes` ({path: html}). */
function staticServer(routes) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      const p = req.url.split('?')[0];
      if (routes[p] != null) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(typeof routes[p] === 'function' ? routes[p]() : routes[p]);
      } else {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found');
      }
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      resolve({ srv, port, origin: 'http://127.0.0.1:' + port, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }) });
    });
  });
}

/** Serve the test page at `<origin>/test.html` through playwright's router (no server needed). */
async function openTestPage(context, origin, scriptBase = '') {
  const page = await context.newPage();
  await page.route(origin + '/test.html', (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: testPage(scriptBase) }));
  const logs = [];
  page.on('console', (m) => logs.push(m.type() + ': ' + m.text()));
  page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
  page.logs = logs;
  await page.goto(origin + '/test.html');
  await page.waitForFunction(() => typeof window.CometBox === 'function', null, { timeout: 5000 });
  return page;
}

module.exports = { launch, testPage, staticServer, openTestPage, RESULTS, CHROMIUM, ARGS };
