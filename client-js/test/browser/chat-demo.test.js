'use strict';
// The chat demo (examples/chat) with its PHP backend under `php -S`, two users in
// two browser contexts; saves screenshots to test-results/. Loopback only.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Server, waitFor, REPO } = require('../../../tests/support/server.cjs');
const { launch, RESULTS } = require('../lib/browser.js');

const CHAT_DIR = path.resolve(__dirname, '..', '..', 'examples', 'chat');
const PHP_CLIENT = path.join(REPO, 'php-client', 'autoload.php');
const ROUTER = path.join(__dirname, 'chat-env-router.php');

let browser, server, php, phpLog = '';

before(async () => {
  if (!fs.existsSync(PHP_CLIENT)) throw new Error('php-client is missing: ' + PHP_CLIENT);
  // No port is chosen up front (that races): `php -S` binds port 0 and prints the
  // port it got; cometbox binds port 0 and reports its addresses in --ready-file.
  // cometbox needs the demo's origin for CORS and the demo needs cometbox's URLs,
  // so php starts first and gets its settings through a file that its router
  // (chat-env-router.php) reads on each request, written once cometbox is up.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-chat-test-'));
  const envFile = path.join(dir, 'chat-env.json');
  // A process group of its own, ended whole: php's worker processes
  // (PHP_CLI_SERVER_WORKERS) outlive a signal to its pid alone.
  php = spawn('php', ['-S', '127.0.0.1:0', '-t', CHAT_DIR, ROUTER], {
    env: { ...process.env, CHAT_TEST_ENV_FILE: envFile },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  php.dir = dir;
  php.stdout.on('data', (d) => { phpLog += d; });
  php.stderr.on('data', (d) => { phpLog += d; });
  // "PHP 8.2.x Development Server (http://127.0.0.1:40123) started"
  const port = await waitFor(() => {
    if (php.exitCode !== null) throw new Error('php -S exited (' + php.exitCode + '):\n' + phpLog);
    const m = /Development Server \(http:\/\/127\.0\.0\.1:(\d+)\) started/.exec(phpLog);
    return m && Number(m[1]);
  }, { timeout: 10000, what: 'php -S to report its port' });
  const origin = 'http://127.0.0.1:' + port;
  php.origin = origin;
  server = await new Server({ COMETBOX_PUBLIC__CORS_ORIGINS: origin, COMETBOX_LIMITS__POLL_TIMEOUT: '20s' }).start();
  fs.writeFileSync(envFile + '.tmp', JSON.stringify({ CHAT_INGEST_URL: server.ingestUrl, CHAT_COMETBOX_URL: server.publicUrl }));
  fs.renameSync(envFile + '.tmp', envFile);
  await waitFor(async () => {
    try {
      const r = await fetch(origin + '/api.php?action=config');
      return r.status === 200 && (await r.json()).cometbox === server.publicUrl;
    } catch (e) { return false; }
  }, { timeout: 10000, what: 'php -S to answer with the sidecar URL' });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (php && php.exitCode === null) {
    const gone = new Promise((r) => php.on('exit', r));
    try { process.kill(-php.pid, 'SIGTERM'); } catch (e) { /* gone */ }
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
    try { process.kill(-php.pid, 'SIGKILL'); } catch (e) { /* all gone */ }
  }
  if (php && php.dir) fs.rmSync(php.dir, { recursive: true, force: true });
  if (server) { await server.stop(); server.cleanup(); }
});

async function join(name) {
  const ctx = await browser.newContext({ viewport: { width: 460, height: 620 }, deviceScaleFactor: 1 });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { phpLog += `\n[${name} pageerror] ${e.message}`; });
  await page.goto(php.origin + '/');
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
  await page.fill('#name', name);
  await page.click('#join');
  await page.waitForSelector('#state.connected', { timeout: 10000 });
  return page;
}

const texts = (page) => page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent.replace(/\d\d?:\d\d( [AP]M)?/, '').trim()));

test('two users chat live through the sidecar; screenshot saved', async (t) => {
  try {
    const alice = await join('Alice');
    const bob = await join('Bob');
    await alice.waitForFunction(() => document.body.textContent.includes('Bob joined'), null, { timeout: 10000 });

    await alice.fill('#text', 'Hi Bob! Are the export numbers ready?');
    await alice.click('#send');
    await bob.waitForSelector('.msg:has-text("export numbers")', { timeout: 10000 });

    await bob.fill('#text', 'Hello Alice! Yes, I sent them to your inbox a minute ago.');
    await bob.press('#text', 'Enter');
    await alice.waitForSelector('.msg:has-text("inbox")', { timeout: 10000 });

    await alice.fill('#text', 'Got them, thanks! This arrived live, no refresh needed.');
    await alice.press('#text', 'Enter');
    await bob.waitForSelector('.msg:has-text("no refresh")', { timeout: 10000 });
    await alice.waitForSelector('.msg:has-text("no refresh")', { timeout: 10000 });

    const a = await texts(alice);
    const b = await texts(bob);
    assert.deepEqual(a, [
      'You joined as Alice',
      'Bob joined',
      'AliceHi Bob! Are the export numbers ready?',
      'BobHello Alice! Yes, I sent them to your inbox a minute ago.',
      'AliceGot them, thanks! This arrived live, no refresh needed.',
    ]);
    assert.deepEqual(b, ['You joined as Bob', ...a.slice(2)]);
    // Own messages on the right, others' on the left.
    assert.equal(await alice.locator('.msg.me').count(), 2);
    assert.equal(await bob.locator('.msg.me').count(), 1);

    fs.mkdirSync(RESULTS, { recursive: true });
    const shotA = await alice.screenshot({ path: path.join(RESULTS, 'chat-alice.png') });
    const shotB = await bob.screenshot({ path: path.join(RESULTS, 'chat-bob.png') });
    // Both windows side by side in one picture.
    const ctx = await browser.newContext({ viewport: { width: 980, height: 660 }, deviceScaleFactor: 1 });
    const board = await ctx.newPage();
    await board.setContent(`<body style="margin:0;background:#d1d5db;display:flex;gap:20px;padding:20px">
      <img src="data:image/png;base64,${shotA.toString('base64')}" style="box-shadow:0 4px 16px rgba(0,0,0,.2)">
      <img src="data:image/png;base64,${shotB.toString('base64')}" style="box-shadow:0 4px 16px rgba(0,0,0,.2)"></body>`);
    const file = path.join(RESULTS, 'chat-demo.png');
    await board.screenshot({ path: file });
    assert.ok(fs.statSync(file).size > 10000);
    t.diagnostic('screenshot: ' + file);

    // Leave: the backend publishes "left" and <disconnect>s Bob.
    await bob.click('#logout');
    await bob.waitForSelector('#login-form', { state: 'visible', timeout: 5000 });
    await alice.waitForFunction(() => document.body.textContent.includes('Bob left'), null, { timeout: 10000 });
  } catch (e) {
    e.message += '\n--- php -S log ---\n' + phpLog;
    throw e;
  }
});
