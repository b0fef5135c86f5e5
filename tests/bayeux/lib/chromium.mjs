// CometD's JavaScript library (npm `cometd`, unchanged, as ES modules) in a
// headless Chromium page, behind the same interface as lib/clients.mjs, so
// test/scenarios.mjs runs in the browser too. Each client is its own
// browser context (its own cookies and connections), on a page served from
// another origin than cometbox (CORS with credentials).
//
// The page reports what comes off the wire (CometD's extension mechanism)
// and what CometD hands to the page's callbacks through functions exposed
// by playwright, so the Node side sees it as it happens.
import { Base, deferred } from './clients.mjs';

/** The page: CometD imported from /cometd/ (lib/browser.mjs serves node_modules/cometd). */
export const CLIENT_PAGE = `<!doctype html><meta charset="utf-8"><title>CometD client</title>
<script type="module">
  import { CometD, AckExtension } from '/cometd/cometd.js';
  let cometd = null;
  const wanted = new Set();
  let handshakes = 0;
  window.start = (url, ext, websocket, ack, only) => {
    cometd = new CometD();
    if (!websocket) cometd.unregisterTransport('websocket');
    if (only) for (const t of cometd.getTransportTypes()) if (t !== only) cometd.unregisterTransport(t);
    if (ack) cometd.registerExtension('ack', new AckExtension());
    cometd.registerExtension('tap', { incoming(m) { window.tap(m); return m; } });
    cometd.configure({ url, logLevel: 'warn', backoffIncrement: 200, maxBackoff: 1000 });
    // CometD forgets subscriptions on a re-handshake: renew them here.
    cometd.addListener('/meta/handshake', (m) => {
      if (!m.successful) return;
      if (++handshakes > 1) for (const ch of wanted) cometd.subscribe(ch, (x) => window.hand(x));
    });
    cometd.handshake({ ext }, (reply) => {
      // A failure CometD made up (not a server reply) that it will not fall back from.
      if (reply.failure && reply.failure.connectionType !== 'websocket') window.failed(reply);
    });
  };
  window.subscribe = (ch) => new Promise((resolve) => cometd.subscribe(ch, (m) => window.hand(m), (r) => {
    if (r.successful) wanted.add(ch);
    resolve(r);
  }));
  window.publish = (ch, data) => new Promise((resolve) => cometd.publish(ch, data, resolve));
  window.listen = (ch) => { cometd.addListener(ch, (m) => window.hand(m)); };
  window.transport = () => cometd.getTransport() && cometd.getTransport().type;
  window.stop = () => new Promise((resolve) => {
    if (!cometd || cometd.isDisconnected()) return resolve();
    setTimeout(resolve, 2000);
    cometd.disconnect(() => resolve());
  });
  window.ready = true;
</script>`;

/**
 * Faye's browser bundle (npm `faye`, client/faye-browser.js, unchanged) with
 * the same window API as CLIENT_PAGE. Faye picks its own transports in a
 * browser (websocket, eventsource, long-polling, cross-origin-long-polling,
 * callback-polling); `websocket: false` disables websocket only.
 */
export const FAYE_PAGE = `<!doctype html><meta charset="utf-8"><title>Faye client</title>
<script src="/faye/faye-browser.js"></script>
<script>
  let client = null;
  const TRANSPORTS = ['websocket', 'eventsource', 'long-polling', 'cross-origin-long-polling', 'callback-polling'];
  window.start = (url, ext, websocket, ack, only) => {
    client = new Faye.Client(url, { timeout: 30, retry: 0.5 });
    if (!websocket) client.disable('websocket');
    if (only) for (const t of TRANSPORTS) if (t !== only) client.disable(t);
    client.addExtension({
      outgoing(m, cb) { if (m.channel === '/meta/handshake') m.ext = Object.assign({}, m.ext, ext); cb(m); },
      incoming(m, cb) { window.tap(m); cb(m); },
    });
    client.connect();
  };
  const settle = (p) => Promise.resolve(p).then(() => ({ successful: true }), (err) => ({ successful: false,
    error: err && err.code != null ? err.code + ':' + (err.params || []).join(',') + ':' + err.message : String(err && err.message || err) }));
  window.subscribe = (ch) => settle(client.subscribe(ch, (data) => window.hand({ channel: ch, data })));
  window.publish = (ch, data) => settle(client.publish(ch, data));
  window.listen = (ch) => window.subscribe(ch);   // Faye delivers only subscribed channels
  window.transport = () => client._dispatcher._transport && client._dispatcher._transport.connectionType;
  window.stop = () => { client.disconnect(); return new Promise((r) => setTimeout(r, 50)); };
  window.ready = true;
</script>`;

/**
 * `make(url, opts)` for test/scenarios.mjs: `browser` from lib/browser.mjs
 * launch(), `site` a staticServer serving CLIENT_PAGE at /client.html.
 * `only`: the one transport the library may use (say 'callback-polling').
 * `path`: the page (CLIENT_PAGE for CometD, FAYE_PAGE for Faye).
 */
export function chromiumClients(browser, site, { only = null, path = '/client.html' } = {}) {
  return (url, { name = 'chromium', websocket = false, ack = false } = {}) => {
    if (only) websocket = false;
    const c = new Base(name);
    let opening = null;
    const page = () => {
      opening = opening || (async () => {
        c.context = await browser.newContext();
        const p = await c.context.newPage();
        c.requests = []; // what the page sent, for tests of the transports
        p.on('request', (r) => c.requests.push({ method: r.method(), url: r.url() }));
        c.websockets = [];
        p.on('websocket', (ws) => c.websockets.push(ws.url()));
        c.pageErrors = [];
        p.on('pageerror', (e) => c.pageErrors.push(e.message));
        await p.exposeFunction('tap', (m) => c.tap(m));
        await p.exposeFunction('hand', (m) => c.handed.push(m));
        await p.exposeFunction('failed', (m) => { if (c.onServerHandshake) { c.onServerHandshake(m); c.onServerHandshake = null; } });
        await p.goto(site.origin + path);
        await p.waitForFunction(() => window.ready === true, null, { timeout: 10000 });
        return p;
      })();
      return opening;
    };
    c.handshake = async (ext) => {
      const p = await page();
      const d = deferred(name + ' handshake reply');
      c.onServerHandshake = d.resolve;
      await p.evaluate(([u, e, ws, a, o]) => window.start(u, e, ws, a, o), [url, ext, websocket, ack, only]);
      return d.promise;
    };
    c.subscribe = async (channel) => (await page()).evaluate((ch) => window.subscribe(ch), channel);
    c.publish = async (channel, data) => (await page()).evaluate(([ch, d]) => window.publish(ch, d), [channel, data]);
    c.transport = async () => (await page()).evaluate(() => window.transport());
    c.receiveDirect = async () => {
      const reply = await (await page()).evaluate(() => window.listen('/cometbox/direct'));
      return reply || { successful: true };
    };
    c.disconnect = async () => {
      if (!opening) return;
      const p = await opening;
      await p.evaluate(() => window.stop()).catch(() => {});
      await c.context.close();
    };
    return c;
  };
}
