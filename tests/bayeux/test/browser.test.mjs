// The CometD JavaScript library (npm `cometd`, unchanged, as ES modules) in
// headless Chromium, on a page served from another origin than cometbox:
// long-polling with CORS (the library's default transports) and
// callback-polling (JSONP through <script> tags).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, stopAll, mintToken, PollClient } from '../lib/harness.mjs';
import { launch, staticServer } from '../lib/browser.mjs';

const PAGE = `<!doctype html><meta charset="utf-8"><title>CometD in Chromium</title>
<script type="module">
  import { CometD } from '/cometd/cometd.js';
  window.T = { received: [], metas: [] };
  window.start = (url, token, transports) => new Promise((resolve) => {
    const cometd = new CometD();
    if (transports) for (const t of cometd.getTransportTypes()) if (!transports.includes(t)) cometd.unregisterTransport(t);
    // Resolves with the server's first handshake reply (CometD also calls back
    // with failures it makes up, such as a websocket that cannot connect
    // before it falls back to long-polling; those never pass the tap).
    cometd.registerExtension('tap', { incoming(m) {
      if (m.channel.startsWith('/meta/')) T.metas.push(m); else if (!('successful' in m)) T.received.push(m);
      if (m.channel === '/meta/handshake') resolve(m);
      return m;
    } });
    cometd.configure({ url, logLevel: 'warn' });
    window.cometd = cometd;
    cometd.handshake({ ext: { cometbox: { token } } });
  });
  window.transport = () => cometd.getTransport() && cometd.getTransport().type;
  window.subscribe = (ch) => new Promise((resolve) => cometd.subscribe(ch, () => {}, resolve));
  window.publish = (ch, data) => new Promise((resolve) => cometd.publish(ch, data, resolve));
  window.ready = true;
</script>`;

describe('CometD in Chromium', () => {
  let server, site, browser;
  before(async () => {
    site = await staticServer({ '/page.html': PAGE });
    server = await startServer({ corsOrigins: [site.origin] });
    browser = await launch();
  });
  after(async () => { if (browser) await browser.close(); await stopAll(site, server); });

  /** One page: handshake, subscribe, receive from ingest, publish to a /poll client. */
  async function roundTrip(t, who, transports) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const requests = [];
    const errors = [];
    page.on('request', (r) => { if (r.url().startsWith(server.publicUrl)) requests.push({ method: r.method(), url: r.url() }); });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    try {
      await page.goto(site.origin + '/page.html');
      await page.waitForFunction(() => window.ready === true, null, { timeout: 10000 });
      const channel = '/chat/' + who;
      const token = await mintToken(server, who, { channels: ['/chat/*'], publish: [channel] });
      const poller = new PollClient(server, await mintToken(server, who + '-poll', { channels: ['/chat/*'] }), [channel]);
      await poller.next(0);

      const hs = await page.evaluate(([url, tok, tr]) => window.start(url, tok, tr), [server.bayeuxUrl, token, transports]);
      assert.equal(hs.successful, true, JSON.stringify(hs));
      const sub = await page.evaluate((ch) => window.subscribe(ch), channel);
      assert.equal(sub.successful, true, JSON.stringify(sub));

      await server.publish(channel, { text: 'from ingest' }, 'chat');
      await page.waitForFunction(() => T.received.some((m) => m.data.text === 'from ingest'), null, { timeout: 15000 });
      const got = await page.evaluate(() => T.received[0]);
      assert.equal(got.channel, channel);
      assert.equal(got.ext.cometbox.event, 'chat');

      const pub = await page.evaluate((ch) => window.publish(ch, { text: 'from the page' }), channel);
      assert.equal(pub.successful, true, JSON.stringify(pub));
      await page.waitForFunction(() => T.received.some((m) => m.data.text === 'from the page'), null, { timeout: 15000 });
      await poller.until((r) => r.some((m) => m.data && m.data.text === 'from the page'), { what: "the page's publish on /poll" });
      const transport = await page.evaluate(() => window.transport());
      t.diagnostic(`${who}: transport ${transport}, ${requests.length} requests to cometbox`);
      return { transport, requests, errors };
    } catch (e) {
      e.message += `\nrequests: ${JSON.stringify(requests.slice(-10))}\npage errors: ${JSON.stringify(errors)}\n--- server log ---\n${server.log.slice(-3000)}`;
      throw e;
    } finally {
      await ctx.close();
    }
  }

  test("the library's default transports: long-polling across origins (CORS)", async (t) => {
    const { transport, requests } = await roundTrip(t, 'lp-' + process.pid);
    assert.equal(transport, 'long-polling');
    assert.ok(requests.some((r) => r.method === 'POST'), JSON.stringify(requests));
  });

  test('callback-polling: every request is a GET of a script with jsonp=', async (t) => {
    const { transport, requests } = await roundTrip(t, 'cp-' + process.pid, ['callback-polling']);
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
