'use strict';
// The chat demo (examples/chat) with its PHP backend under `php -S`, two users in
// two browser contexts; saves screenshots to test-results/. Loopback only.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { Server, freePort, waitFor, REPO } = require('../lib/server.js');
const { launch, RESULTS } = require('../lib/browser.js');

const CHAT_DIR = path.resolve(__dirname, '..', '..', 'examples', 'chat');
const PHP_CLIENT = path.join(REPO, 'php-client', 'autoload.php');

let browser, server, php, phpLog = '';

before(async () => {
  if (!fs.existsSync(PHP_CLIENT)) throw new Error('php-client is missing: ' + PHP_CLIENT);
  const phpPort = await freePort();
  const origin = 'http://127.0.0.1:' + phpPort;
  server = await new Server({ COMETBOX_PUBLIC__CORS_ORIGINS: origin, COMETBOX_LIMITS__POLL_TIMEOUT: '20s' }).start();
  php = spawn('php', ['-S', '127.0.0.1:' + phpPort, '-t', CHAT_DIR], {
    env: { ...process.env, CHAT_INGEST_URL: server.ingestUrl, CHAT_COMETBOX_URL: server.publicUrl },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  php.stdout.on('data', (d) => { phpLog += d; });
  php.stderr.on('data', (d) => { phpLog += d; });
  php.origin = origin;
  await waitFor(async () => {
    try { return (await fetch(origin + '/api.php?action=config')).status === 200; } catch (e) { return false; }
  }, { timeout: 10000, what: 'php -S to answer' });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (php && php.exitCode === null) {
    const gone = new Promise((r) => php.on('exit', r));
    php.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
  }
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
