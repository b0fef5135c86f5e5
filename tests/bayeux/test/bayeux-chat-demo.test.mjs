// The Bayeux chat demo (client-js/examples/bayeux-chat: CometD in the page,
// api.php and hook.php under `php -S`), clicked through in Chromium by two
// users; saves test-results/bayeux-chat-demo.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, stopAll, phpServer, waitFor, REPO, HOOK_SECRET } from '../lib/harness.mjs';
import { launch, RESULTS } from '../lib/browser.mjs';

const require = createRequire(import.meta.url);
const DEMO = path.join(REPO, 'client-js', 'examples', 'bayeux-chat');
// client-js's test router: puts the CHAT_* settings the test writes into a
// file (once cometbox is up) into each request's environment.
const ROUTER = path.join(REPO, 'client-js', 'test', 'browser', 'chat-env-router.php');

let browser, server, php, dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-bayeux-chat-'));
  const envFile = path.join(dir, 'chat-env.json');
  php = await phpServer(DEMO, { router: ROUTER, env: { CHAT_TEST_ENV_FILE: envFile, CHAT_HOOK_SECRET: HOOK_SECRET } });
  server = await startServer({
    hooks: { url: php.origin + '/hook.php' },
    corsOrigins: [php.origin],
    env: { COMETBOX_LIMITS__POLL_TIMEOUT: '20s' },
  });
  fs.writeFileSync(envFile + '.tmp', JSON.stringify({ CHAT_INGEST_URL: server.ingestUrl, CHAT_COMETBOX_URL: server.publicUrl }));
  fs.renameSync(envFile + '.tmp', envFile);
  await waitFor(async () => {
    try {
      const r = await fetch(php.origin + '/api.php?action=config');
      return r.status === 200 && (await r.json()).bayeux === server.bayeuxUrl;
    } catch (e) { return false; }
  }, { timeout: 10000, what: 'the demo backend to answer with the sidecar URL' });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  await stopAll(server, php);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("the demo's vendored CometD is the npm package's, unchanged", () => {
  const npm = path.dirname(require.resolve('cometd/package.json'));
  const vendored = path.join(DEMO, 'vendor', 'cometd');
  const files = fs.readdirSync(npm).filter((f) => f.endsWith('.js') || f === 'LICENSE');
  assert.ok(files.includes('cometd.js'));
  for (const f of files) {
    assert.ok(fs.readFileSync(path.join(vendored, f)).equals(fs.readFileSync(path.join(npm, f))), `vendor/cometd/${f} differs from node_modules/cometd/${f}`);
  }
});

async function join(name) {
  const ctx = await browser.newContext({ viewport: { width: 460, height: 620 }, deviceScaleFactor: 1 });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { page.errors = (page.errors || '') + `\n[${name} pageerror] ${e.message}`; });
  await page.goto(php.origin + '/');
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
  await page.fill('#name', name);
  await page.click('#join');
  await page.waitForSelector('#state.connected', { timeout: 15000 });
  return page;
}

const texts = (page) => page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent.replace(/\d\d?:\d\d( [AP]M)?/, '').trim()));

test('two users chat through Bayeux; a banned word is refused with its reason; joins and leaves are announced', async (t) => {
  let alice, bob;
  try {
    alice = await join('Alice');
    bob = await join('Bob');
    await alice.waitForFunction(() => document.body.textContent.includes('Bob joined'), null, { timeout: 15000 });

    await alice.fill('#text', 'Hi Bob! Did the CometD page just work?');
    await alice.press('#text', 'Enter');
    await bob.waitForSelector('.msg:has-text("CometD page")', { timeout: 10000 });

    await bob.fill('#text', 'Buy cheap spam now');
    await bob.click('#send');
    await bob.waitForSelector('.note.warn:has-text("Not sent")', { timeout: 10000 });
    assert.match(await bob.locator('.note.warn').first().textContent(), /the word "spam" is not allowed here/);

    await bob.fill('#text', 'It did, unchanged. Sorry about that last one.');
    await bob.press('#text', 'Enter');
    await alice.waitForSelector('.msg:has-text("unchanged")', { timeout: 10000 });
    await bob.waitForSelector('.msg:has-text("unchanged")', { timeout: 10000 });

    const a = await texts(alice);
    const b = await texts(bob);
    assert.deepEqual(a, [
      'You joined as Alice',
      'Bob joined',
      'AliceHi Bob! Did the CometD page just work?',
      'BobIt did, unchanged. Sorry about that last one.',
    ]);
    assert.deepEqual(b, [
      'You joined as Bob',
      'AliceHi Bob! Did the CometD page just work?',
      'Not sent: the word "spam" is not allowed here',
      'BobIt did, unchanged. Sorry about that last one.',
    ]);
    assert.equal(await alice.locator('.msg.me').count(), 1);
    assert.equal(await bob.locator('.msg.me').count(), 1);

    fs.mkdirSync(RESULTS, { recursive: true });
    const shotA = await alice.screenshot({ path: path.join(RESULTS, 'bayeux-chat-alice.png') });
    const shotB = await bob.screenshot({ path: path.join(RESULTS, 'bayeux-chat-bob.png') });
    const ctx = await browser.newContext({ viewport: { width: 980, height: 660 }, deviceScaleFactor: 1 });
    const board = await ctx.newPage();
    await board.setContent(`<body style="margin:0;background:#d1d5db;display:flex;gap:20px;padding:20px">
      <img src="data:image/png;base64,${shotA.toString('base64')}" style="box-shadow:0 4px 16px rgba(0,0,0,.2)">
      <img src="data:image/png;base64,${shotB.toString('base64')}" style="box-shadow:0 4px 16px rgba(0,0,0,.2)"></body>`);
    const file = path.join(RESULTS, 'bayeux-chat-demo.png');
    await board.screenshot({ path: file });
    assert.ok(fs.statSync(file).size > 10000);
    t.diagnostic('screenshot: ' + file);

    // Leave: CometD's /meta/disconnect; hook.php announces it from the offline event.
    await bob.click('#logout');
    await bob.waitForSelector('#login-form', { state: 'visible', timeout: 5000 });
    await alice.waitForFunction(() => document.body.textContent.includes('Bob left'), null, { timeout: 20000 });
  } catch (e) {
    e.message += `\n${(alice && alice.errors) || ''}${(bob && bob.errors) || ''}\n--- php -S log ---\n${php.log().slice(-3000)}\n--- server log ---\n${server.log.slice(-3000)}`;
    throw e;
  }
});
