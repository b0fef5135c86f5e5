// CometD's transports in headless Chromium, on a page served from another
// origin than cometbox: long-polling with CORS (the library's default
// transports, websocket first) and callback-polling (JSONP through <script>
// tags). Each: handshake with a token, subscribe, a message from ingest,
// a publish that reaches the page and a /poll client. And Faye's browser
// bundle: across origins (cross-origin-long-polling) and on cometbox's own
// origin (as behind a proxy on the site's origin: long-polling).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { startServer, stopAll, mintToken, PollClient, waitFor } from '../lib/harness.mjs';
import { launch, staticServer } from '../lib/browser.mjs';
import { chromiumClients, CLIENT_PAGE, FAYE_PAGE } from '../lib/chromium.mjs';

const require = createRequire(import.meta.url);

describe('transports in Chromium', () => {
  let server, site, browser;
  before(async () => {
    site = await staticServer({ '/client.html': CLIENT_PAGE, '/faye.html': FAYE_PAGE });
    server = await startServer({ corsOrigins: [site.origin] });
    browser = await launch();
  });
  after(async () => { if (browser) await browser.close(); await stopAll(site, server); });

  async function roundTrip(t, who, make, opts) {
    const c = make(server.bayeuxUrl, { name: who, ...opts });
    try {
      const channel = '/chat/' + who;
      const token = await mintToken(server, who, { channels: ['/chat/*'], publish: [channel] });
      const poller = new PollClient(server, await mintToken(server, who + '-poll', { channels: ['/chat/*'] }), [channel]);
      await poller.next(0);

      const hs = await c.handshake({ cometbox: { token } });
      assert.equal(hs.successful, true, JSON.stringify(hs));
      const sub = await c.subscribe(channel);
      assert.equal(sub.successful, true, JSON.stringify(sub));

      await server.publish(channel, { text: 'from ingest' }, 'chat');
      await waitFor(() => c.handed.some((m) => m.data.text === 'from ingest'), { what: 'the ingest message in the page' });
      const got = c.handed[0];
      assert.equal(got.channel, channel);
      assert.equal(got.ext.cometbox.event, 'chat');

      const pub = await c.publish(channel, { text: 'from the page' });
      assert.equal(pub.successful, true, JSON.stringify(pub));
      await waitFor(() => c.handed.some((m) => m.data.text === 'from the page'), { what: "the page's own publish" });
      await poller.until((r) => r.some((m) => m.data && m.data.text === 'from the page'), { what: "the page's publish on /poll" });
      const transport = await c.transport();
      const requests = c.requests.filter((r) => r.url.startsWith(server.publicUrl));
      t.diagnostic(`${who}: transport ${transport}, ${requests.length} requests to cometbox`);
      return { transport, requests, websockets: c.websockets };
    } catch (e) {
      e.message += `\nrequests: ${JSON.stringify((c.requests || []).slice(-10))}\npage errors: ${JSON.stringify(c.pageErrors)}\n--- server log ---\n${server.log.slice(-3000)}`;
      throw e;
    } finally {
      await c.disconnect();
    }
  }

  test("the library's default transports: websocket refused, then long-polling across origins (CORS)", async (t) => {
    const { transport, requests, websockets } = await roundTrip(t, 'lp-' + process.pid, chromiumClients(browser, site), { websocket: true });
    assert.ok(websockets.some((u) => u.startsWith('ws://') && u.includes('/bayeux')), 'CometD tried websocket first: ' + JSON.stringify(websockets));
    assert.equal(transport, 'long-polling');
    assert.ok(requests.some((r) => r.method === 'POST'), JSON.stringify(requests));
  });

  test('Faye across origins: websocket refused, then cross-origin-long-polling (CORS), a 30 KB publish included', async (t) => {
    const make = chromiumClients(browser, site, { path: '/faye.html' });
    const who = 'fx-' + process.pid;
    const c = make(server.bayeuxUrl, { name: who, websocket: true });
    try {
      const channel = '/chat/' + who;
      const hs = await c.handshake({ cometbox: { token: await mintToken(server, who, { channels: ['/chat/*'], publish: [channel] }) } });
      assert.equal(hs.successful, true, JSON.stringify(hs));
      assert.equal((await c.subscribe(channel)).successful, true);
      const big = 'x'.repeat(30000); // far past what fits in a JSONP URL
      const pub = await c.publish(channel, { big });
      assert.equal(pub.successful, true, JSON.stringify(pub));
      await server.publish(channel, { text: 'from ingest' });
      await waitFor(() => c.handed.some((m) => m.data.text === 'from ingest'), { what: 'the ingest message in the Faye page' });
      assert.ok(c.handed.some((m) => m.data.big === big), "the page's own large publish came back");
      assert.equal(await c.transport(), 'cross-origin-long-polling');
      assert.ok(c.websockets.some((u) => u.includes('/bayeux')), 'Faye tried websocket first');
      const posts = c.requests.filter((r) => r.url.startsWith(server.bayeuxUrl) && r.method === 'POST');
      t.diagnostic(`${who}: ${posts.length} cross-origin POSTs`);
      assert.ok(posts.length >= 2, JSON.stringify(c.requests));
    } catch (e) {
      e.message += `\nrequests: ${JSON.stringify((c.requests || []).slice(-10))}\npage errors: ${JSON.stringify(c.pageErrors)}`;
      throw e;
    } finally {
      await c.disconnect();
    }
  });

  test("Faye on the page's own origin: long-polling", async () => {
    const ctx = await browser.newContext();
    try {
      const page = await ctx.newPage();
      // The page is served "by cometbox's origin" through playwright's router.
      const bundle = fs.readFileSync(path.join(path.dirname(require.resolve('faye/package.json')), 'client', 'faye-browser.js'), 'utf8');
      await page.route(server.publicUrl + '/faye.html', (r) => r.fulfill({ status: 200, contentType: 'text/html', body: FAYE_PAGE }));
      await page.route(server.publicUrl + '/faye/faye-browser.js', (r) => r.fulfill({ status: 200, contentType: 'text/javascript', body: bundle }));
      const wire = [];
      await page.exposeFunction('tap', (m) => wire.push(m));
      await page.exposeFunction('hand', () => {});
      await page.goto(server.publicUrl + '/faye.html');
      await page.waitForFunction(() => window.ready === true, null, { timeout: 10000 });
      const token = await mintToken(server, 'same-' + process.pid, { channels: ['/chat/*'] });
      await page.evaluate(([u, e]) => window.start(u, e, false), [server.bayeuxUrl, { cometbox: { token } }]);
      assert.deepEqual(await page.evaluate(() => window.subscribe('/chat/same')), { successful: true });
      await server.publish('/chat/same', { text: 'same origin' });
      await waitFor(() => wire.some((m) => m.channel === '/chat/same'), { what: 'the message on the same origin' });
      assert.equal(await page.evaluate(() => window.transport()), 'long-polling');
    } finally {
      await ctx.close();
    }
  });

  test('callback-polling: every request is a GET of a script with jsonp= and message=', async (t) => {
    const make = chromiumClients(browser, site, { only: 'callback-polling' });
    const { transport, requests } = await roundTrip(t, 'cp-' + process.pid, make);
    assert.equal(transport, 'callback-polling');
    const bayeux = requests.filter((r) => new URL(r.url).pathname.startsWith('/bayeux'));
    assert.ok(bayeux.length >= 4, JSON.stringify(bayeux));
    for (const r of bayeux) {
      assert.equal(r.method, 'GET', JSON.stringify(r));
      const q = new URL(r.url).searchParams;
      assert.ok(q.get('jsonp') && q.get('message'), JSON.stringify(r));
    }
  });
});
