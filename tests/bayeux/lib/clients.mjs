// The two npm Bayeux clients, unchanged, behind one small interface so the
// same scenarios run against both (test/scenarios.mjs):
//
//   const c = cometdClient(url) / fayeClient(url)
//   await c.handshake(ext)         -> the server's first /meta/handshake reply (success or not)
//   await c.subscribe(channel)     -> the /meta/subscribe reply ({successful, error})
//   await c.publish(channel, data) -> the publish reply ({successful, error})
//   c.received                     -> every non-meta message off the wire, in order
//   c.handshakes                   -> successful handshakes so far (re-handshakes count)
//   await c.receiveDirect()        -> hands messages on /cometbox/direct to the page ({successful, error})
//   c.handed                       -> messages the library passed to the page's callbacks
//   await c.disconnect()
//
// The libraries are only configured, as a page would: the handshake's `ext`
// through the library's own extension mechanism, subscriptions renewed after a
// re-handshake the way each library's documentation says (CometD: in a
// /meta/handshake listener; Faye: by itself).
import { adapt } from 'cometd-nodejs-client';
import { CometD, AckExtension } from 'cometd';
import faye from 'faye';

adapt(); // XMLHttpRequest and WebSocket for CometD in Node

const META = /^\/meta\//;

/** A promise with its resolver, and a timeout that names what was awaited. */
export function deferred(what, ms = 15000) {
  let resolve;
  let timer;
  const promise = new Promise((res, rej) => {
    resolve = res;
    timer = setTimeout(() => rej(new Error('timed out waiting for ' + what)), ms);
  });
  return { promise: promise.finally(() => clearTimeout(timer)), resolve };
}

/** What every adapter records (the scenarios read it); lib/chromium.mjs builds on it too. */
export class Base {
  constructor(name) {
    this.name = name;
    this.received = [];
    this.metas = [];
    this.handshakes = 0;
    this.handshakeReplies = [];
    this.handed = [];
  }

  /** Wait until `pred(received)` holds. */
  async until(pred, { timeout = 15000, what = 'a message' } = {}) {
    const deadline = Date.now() + timeout;
    while (!pred(this.received)) {
      if (Date.now() > deadline) throw new Error(`${this.name}: timed out waiting for ${what}; received ${JSON.stringify(this.received)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.received;
  }

  tap(message) {
    if (META.test(message.channel)) {
      this.metas.push(message);
      if (message.channel === '/meta/handshake') {
        this.handshakeReplies.push(message);
        if (message.successful) this.handshakes++;
        if (this.onServerHandshake) { this.onServerHandshake(message); this.onServerHandshake = null; }
      }
    } else if (message.data !== undefined && !('successful' in message)) {
      this.received.push(message);
    }
  }
}

/**
 * CometD (npm `cometd` + `cometd-nodejs-client`). `websocket: false`
 * unregisters the websocket transport (cometbox has none); left on, CometD
 * finds that out by itself and falls back to long-polling. `ack: true`
 * registers CometD's AckExtension.
 */
export function cometdClient(url, { name = 'cometd', websocket = false, ack = false } = {}) {
  const c = new Base(name);
  const cometd = new CometD(name);
  if (!websocket) cometd.unregisterTransport('websocket');
  if (ack) cometd.registerExtension('ack', new AckExtension());
  cometd.registerExtension('tap', { incoming: (m) => { c.tap(m); return m; } });
  cometd.configure({ url, logLevel: 'warn', backoffIncrement: 200, maxBackoff: 1000, maxNetworkDelay: 8000 });
  const wanted = new Set();
  // CometD forgets subscriptions on a re-handshake; an application renews
  // them in a /meta/handshake listener (CometD's documented pattern).
  cometd.addListener('/meta/handshake', (m) => {
    if (m.successful && c.handshakes > 1) for (const ch of wanted) cometd.subscribe(ch, (x) => c.handed.push(x));
  });
  c.cometd = cometd;
  c.transport = () => cometd.getTransport() && cometd.getTransport().type;
  // The first reply from the server, or a failure CometD will not recover
  // from by itself. CometD also calls back with a websocket that could not
  // connect, before it falls back to long-polling: that one is not the answer.
  c.handshake = (ext) => {
    const d = deferred(name + ' handshake reply');
    c.onServerHandshake = d.resolve;
    cometd.handshake({ ext }, (reply) => {
      if (!(reply.failure && reply.failure.connectionType === 'websocket')) d.resolve(reply);
    });
    return d.promise;
  };
  c.subscribe = (channel) => {
    const d = deferred(name + ' subscribe reply for ' + channel);
    cometd.subscribe(channel, (m) => c.handed.push(m), (reply) => {
      if (reply.successful) wanted.add(channel);
      d.resolve(reply);
    });
    return d.promise;
  };
  // A listener gets a channel's messages without subscribing (no request):
  // what docs/bayeux.md says a CometD page does for /cometbox/direct.
  c.receiveDirect = () => {
    cometd.addListener('/cometbox/direct', (m) => c.handed.push(m));
    return Promise.resolve({ successful: true });
  };
  c.publish = (channel, data) => {
    const d = deferred(name + ' publish reply on ' + channel);
    cometd.publish(channel, data, (reply) => d.resolve(reply));
    return d.promise;
  };
  c.disconnect = () => new Promise((resolve) => {
    if (cometd.isDisconnected()) return resolve();
    const t = setTimeout(resolve, 3000);
    cometd.disconnect(() => { clearTimeout(t); resolve(); });
  });
  return c;
}

/** Faye parses "403::reason" into {code, params, message}: put it back together. */
function bayeuxError(err) {
  if (err && err.code != null) return `${err.code}:${(err.params || []).join(',')}:${err.message}`;
  return String(err && err.message ? err.message : err);
}

/**
 * Faye (npm `faye`). `websocket: false` disables its websocket transport;
 * left on, Faye tries it and falls back to long-polling by itself.
 */
export function fayeClient(url, { name = 'faye', websocket = false } = {}) {
  const c = new Base(name);
  const client = new faye.Client(url, { timeout: 30, retry: 0.5 });
  if (!websocket) client.disable('websocket');
  let ext = null;
  client.addExtension({
    outgoing(message, callback) {
      if (message.channel === '/meta/handshake' && ext) message.ext = { ...(message.ext || {}), ...ext };
      callback(message);
    },
    incoming(message, callback) {
      c.tap(message);
      callback(message);
    },
  });
  c.faye = client;
  // Faye handshakes on its first subscribe or publish; connect() starts it now.
  c.handshake = (e) => {
    ext = e;
    const d = deferred(name + ' handshake reply');
    c.onServerHandshake = d.resolve;
    client.connect();
    return d.promise;
  };
  // Faye's subscribe/publish promises resolve on success and reject with the
  // server's error; the adapter turns both into the reply's shape.
  const settle = (p) => p.then(() => ({ successful: true }), (err) => ({ successful: false, error: bayeuxError(err) }));
  c.subscribe = (channel) => settle(Promise.resolve(client.subscribe(channel, (data) => c.handed.push({ data }))));
  c.publish = (channel, data) => settle(Promise.resolve(client.publish(channel, data)));
  // Faye passes a page only messages of channels it subscribed to.
  c.receiveDirect = () => settle(Promise.resolve(client.subscribe('/cometbox/direct', (data) => c.handed.push({ data }))));
  c.disconnect = () => { client.disconnect(); return new Promise((r) => setTimeout(r, 50)); };
  return c;
}
