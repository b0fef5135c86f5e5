/*!
 * cometbox.js - browser client for the cometbox server-push relay.
 * https://github.com/ (see client-js/README.md)  License: MIT
 *
 * One dependency-free file. Use it as:
 *   - a classic script:   <script src="/cometbox.js"></script>  -> global `CometBox`
 *   - CommonJS:           const CometBox = require('cometbox-client')
 *   - an ES module:       import CometBox from 'cometbox-client'  (cometbox.mjs beside this file)
 *
 * Wire protocol: cometbox PROTOCOL.md, version 1 (GET <url>/poll long-polls).
 */
(function (root, factory) {
  'use strict';
  var CometBox = factory(root);
  // CommonJS (Node, bundlers).
  if (typeof module === 'object' && module && typeof module.exports === 'object') {
    module.exports = CometBox;
  }
  if (root) {
    // Classic <script>: the global `CometBox`.
    root.CometBox = CometBox;
    // A well-known symbol that cometbox.mjs reads, so the ES module still finds
    // the class even if the page reused the name `CometBox` for something else.
    try { root[Symbol.for('cometbox.CometBox')] = CometBox; } catch (e) { /* frozen global */ }
  }
})(typeof globalThis !== 'undefined' ? globalThis : (typeof self !== 'undefined' ? self : this), function (root) {
  'use strict';

  var VERSION = '0.1.0';

  /** The four states of a CometBox instance (see README: state machine). */
  var STATES = Object.freeze({
    CONNECTING: 'connecting',
    CONNECTED: 'connected',
    WAITING: 'waiting to reconnect',
    STOPPED: 'stopped'
  });

  var DEFAULT_BACKOFF = Object.freeze({ base: 1000, max: 30000 });

  /** Error passed to onError and to onStateChange details. */
  class CometBoxError extends Error {
    constructor(code, message, status, fatal) {
      super(message || code);
      this.name = 'CometBoxError';
      /** The server's error code (`token-expired`, `channel-forbidden`, ...) or a client code
       *  (`network`, `bad-response`, `request-timeout`, `disconnected`, `http-404`, ...). */
      this.code = code;
      /** HTTP status, or 0 when no HTTP answer was received. */
      this.status = status || 0;
      /** true when the instance stopped because of this error. */
      this.fatal = !!fatal;
    }
  }

  // ---------------------------------------------------------------- helpers

  function base64UrlDecode(s) {
    var b64 = String(s).replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var bin = typeof atob === 'function' ? atob(b64) : Buffer.from(b64, 'base64').toString('binary');
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TextDecoder('utf-8').decode(bytes);
  }

  /** The claims of a JWT (its payload, base64url-decoded; the signature is NOT checked).
   *  Returns null when the token is not a readable JWT. */
  function decodeToken(token) {
    if (typeof token !== 'string') return null;
    var parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      var claims = JSON.parse(base64UrlDecode(parts[1]));
      return claims && typeof claims === 'object' ? claims : null;
    } catch (e) {
      return null;
    }
  }

  /** Delay before reconnect attempt number `attempt` (1, 2, 3, ...): exponential, capped,
   *  with "equal jitter" (between half and all of the exponential value). */
  function backoffDelay(attempt, backoff, random) {
    var base = (backoff && backoff.base) || DEFAULT_BACKOFF.base;
    var max = (backoff && backoff.max) || DEFAULT_BACKOFF.max;
    var n = Math.max(1, attempt | 0);
    var exp = Math.min(max, base * Math.pow(2, Math.min(n - 1, 30)));
    var r = (random || Math.random)();
    return Math.round(exp / 2 + r * (exp / 2));
  }

  function defaultStorage() {
    try {
      var s = root && root.sessionStorage;
      if (!s) return null;
      var probe = '__cometbox_probe__';
      s.setItem(probe, '1');
      s.removeItem(probe);
      return s;
    } catch (e) {
      return null; // disabled storage, sandboxed iframe, private mode quirks...
    }
  }

  function absoluteBase(url) {
    var u = String(url).replace(/\/+$/, '');
    try {
      if (root && root.location && root.location.href && typeof URL === 'function') {
        u = new URL(u, root.location.href).href.replace(/\/+$/, '');
      }
    } catch (e) { /* keep as given */ }
    return u;
  }

  function reportHandlerError(err) {
    if (root && typeof root.reportError === 'function') {
      try { root.reportError(err); return; } catch (e) { /* fall through */ }
    }
    if (typeof console !== 'undefined' && console.error) console.error('cometbox: a handler threw', err);
  }

  function isAbortError(err) {
    return !!err && (err.name === 'AbortError' || err.code === 20);
  }

  // ---------------------------------------------------------------- the class

  class CometBox {
    /**
     * @param {string} url  the poll endpoint base: `http://127.0.0.1:8480`, `/cometbox`...
     *                      The class requests `<url>/poll`.
     * @param {object} [options]  see cometbox.d.ts / README.md
     */
    constructor(url, options) {
      if (typeof url !== 'string' || !url) throw new TypeError('CometBox: url is required');
      var o = options || {};
      this._url = url.replace(/\/+$/, '');
      this._opts = o;
      this._onMessage = o.onMessage || null;
      this._onError = o.onError || null;
      this._onTimeout = o.onTimeout || null;
      this._onReset = o.onReset || null;
      this._onStateChange = o.onStateChange || null;
      this._getToken = typeof o.getToken === 'function' ? o.getToken : null;
      this._channels = Array.isArray(o.channels) ? o.channels.slice()
        : (typeof o.channels === 'string' && o.channels ? o.channels.split(',') : []);
      this._pollTimeout = o.timeout != null ? Number(o.timeout) : null; // seconds
      this._requestTimeout = o.requestTimeout != null ? Number(o.requestTimeout)
        : ((this._pollTimeout != null ? this._pollTimeout * 1000 : 60000) + 30000);
      this._tokenIn = o.tokenIn === 'query' ? 'query' : 'header';
      this._backoff = {
        base: (o.backoff && o.backoff.base) || DEFAULT_BACKOFF.base,
        max: (o.backoff && o.backoff.max) || DEFAULT_BACKOFF.max
      };

      // Injectable environment (tests, unusual runtimes).
      var f = o.fetch || (root && root.fetch);
      this._fetch = f ? function (u, init) { return f.call(root, u, init); } : null;
      var t = o.timers || {};
      this._setTimeout = t.setTimeout || function (fn, ms) { return setTimeout(fn, ms); };
      this._clearTimeout = t.clearTimeout || function (id) { return clearTimeout(id); };
      this._random = o.random || Math.random;
      this._now = o.now || Date.now;
      this._AbortController = o.AbortController || (root && root.AbortController) || null;
      this._storage = o.storage === undefined ? defaultStorage() : (o.storage || null);
      this._eventTarget = o.eventTarget !== undefined ? o.eventTarget
        : (root && typeof root.addEventListener === 'function' && typeof root.removeEventListener === 'function' ? root : null);

      this._handlers = Object.create(null);
      this._state = STATES.STOPPED;
      this._running = false;
      this._req = null;         // the one open poll: {controller, timer}
      this._retryTimer = null;  // pending reconnect
      this._refreshing = false; // a getToken() call is pending
      this._attempt = 0;        // consecutive failures (backoff exponent)
      this._authFailures = 0;   // consecutive 401s
      this._fastEmpty = 0;      // consecutive empty replies that came back at once
      this._gen = 0;            // bumped by stop(): late callbacks of an older run are ignored
      this._onlineListener = null;

      this._token = null;
      this._claims = null;
      this._storageKey = null;
      this._cursor = null;
      this._stored = null;      // the cursor last read from or written to storage
      // An explicit cursor wins over the remembered one.
      this._sinceExplicit = typeof o.since === 'string' && o.since.length > 0;
      if (this._sinceExplicit) this._cursor = o.since;
      this._applyToken(typeof o.token === 'string' && o.token ? o.token : null, false);
    }

    // ------------------------------------------------------------ public API

    /** The cursor of the last message handled (what the next poll sends as `since`), or null. */
    get cursor() { return this._cursor; }
    /** `connecting`, `connected`, `waiting to reconnect` or `stopped`. */
    get state() { return this._state; }
    /** The current token. */
    get token() { return this._token; }
    /** The client id: the token's `sub` claim (null without a readable token). */
    get clientId() { return this._claims && typeof this._claims.sub === 'string' ? this._claims.sub : null; }
    /** The URL requested for polls (without query). */
    get pollUrl() { return this._url + '/poll'; }

    /** Call `fn(data, message)` for each message whose `event` is `eventName`
     *  (`'*'`: every message). Returns this. */
    on(eventName, fn) {
      if (typeof fn !== 'function') throw new TypeError('CometBox.on: handler must be a function');
      var key = String(eventName);
      (this._handlers[key] || (this._handlers[key] = [])).push(fn);
      return this;
    }

    /** Remove a handler added with on() (without fn: all handlers of that event). Returns this. */
    off(eventName, fn) {
      var key = String(eventName);
      var list = this._handlers[key];
      if (!list) return this;
      if (!fn) { delete this._handlers[key]; return this; }
      var i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
      if (!list.length) delete this._handlers[key];
      return this;
    }

    /** Replace the token (e.g. after a login). Takes effect from the next poll. */
    setToken(token) {
      this._applyToken(token || null, true);
      return this;
    }

    /** Start polling (no-op when already started). Returns this. */
    start() {
      if (this._running) return this;
      if (!this._fetch) throw new Error('CometBox: no fetch() available');
      this._running = true;
      this._gen++;
      this._attempt = 0;
      this._authFailures = 0;
      this._fastEmpty = 0;
      this._attachOnline();
      this._setState(STATES.CONNECTING);
      this._poll();
      return this;
    }

    /** Stop polling: abort the open request, cancel a pending reconnect. Returns this. */
    stop() {
      this._halt();
      this._setState(STATES.STOPPED);
      return this;
    }

    // ------------------------------------------------------------ internals

    _applyToken(token, fromUpdate) {
      var oldKey = this._storageKey;
      var oldSub = this.clientId;
      this._token = token;
      this._claims = decodeToken(token);
      var sub = this.clientId || '';
      this._storageKey = 'cometbox:cursor:' + absoluteBase(this._url) + '#' + sub;
      if (fromUpdate && oldKey === this._storageKey) return; // same client: keep the cursor
      var stored = this._load();
      if (!fromUpdate || !oldSub) {
        // The first token (maybe from getToken()): the remembered cursor of this client,
        // unless the page passed an explicit `since`.
        if (stored != null && !this._sinceExplicit) this._cursor = stored;
      } else {
        // A token of another client: that client's remembered cursor, or a fresh start.
        this._cursor = stored;
        this._sinceExplicit = false;
      }
      this._stored = stored; // what this key holds now
    }

    _load() {
      if (!this._storage || !this._storageKey) return null;
      try {
        var v = this._storage.getItem(this._storageKey);
        return typeof v === 'string' && v.length > 0 && v.length <= 1024 ? v : null;
      } catch (e) {
        return null;
      }
    }

    _save() {
      this._stored = this._cursor;
      if (!this._storage || !this._storageKey) return;
      try {
        if (this._cursor == null) this._storage.removeItem(this._storageKey);
        else this._storage.setItem(this._storageKey, this._cursor);
      } catch (e) { /* quota, security: the in-memory cursor still works */ }
    }

    /** Writes the cursor to storage unless it is what was last written there:
     *  storage writes are synchronous and can be slow, so it is done once per
     *  reply, not once per message. */
    _persist() {
      if (this._cursor !== this._stored) this._save();
    }

    _setState(state, detail) {
      var prev = this._state;
      if (prev === state) return;
      this._state = state;
      if (this._onStateChange) {
        var d = { previous: prev };
        if (detail) for (var k in detail) d[k] = detail[k];
        this._safeCall(this._onStateChange, [state, d]);
      }
    }

    _safeCall(fn, args) {
      try {
        return fn.apply(this, args);
      } catch (err) {
        reportHandlerError(err);
        return undefined;
      }
    }

    _attachOnline() {
      if (!this._eventTarget || this._onlineListener) return;
      var self = this;
      this._onlineListener = function () { self._kick(); };
      try { this._eventTarget.addEventListener('online', this._onlineListener); } catch (e) { this._onlineListener = null; }
    }

    _detachOnline() {
      if (!this._eventTarget || !this._onlineListener) return;
      try { this._eventTarget.removeEventListener('online', this._onlineListener); } catch (e) { /* ignore */ }
      this._onlineListener = null;
    }

    /** The browser is back online: poll now instead of waiting (an open request made
     *  while offline is probably dead, so it is replaced). */
    _kick() {
      if (!this._running || this._refreshing) return;
      if (this._retryTimer != null) {
        this._clearTimeout(this._retryTimer);
        this._retryTimer = null;
      } else if (this._req) {
        this._abortRequest();
      }
      this._attempt = 0;
      this._fastEmpty = 0;
      this._poll();
    }

    _halt() {
      this._running = false;
      this._gen++;
      this._refreshing = false;
      if (this._retryTimer != null) {
        this._clearTimeout(this._retryTimer);
        this._retryTimer = null;
      }
      this._abortRequest();
      this._detachOnline();
    }

    _abortRequest() {
      var req = this._req;
      if (!req) return;
      this._req = null; // its late settlement is ignored: req !== this._req
      if (req.timer != null) this._clearTimeout(req.timer);
      if (req.controller) {
        try { req.controller.abort(); } catch (e) { /* ignore */ }
      }
    }

    _buildUrl() {
      var q = [];
      if (this._cursor != null) q.push('since=' + encodeURIComponent(this._cursor));
      if (this._channels.length) q.push('channels=' + encodeURIComponent(this._channels.join(',')));
      if (this._pollTimeout != null && !isNaN(this._pollTimeout)) q.push('timeout=' + encodeURIComponent(String(this._pollTimeout)));
      if (this._tokenIn === 'query' && this._token) q.push('token=' + encodeURIComponent(this._token));
      var base = this.pollUrl;
      return q.length ? base + (base.indexOf('?') >= 0 ? '&' : '?') + q.join('&') : base;
    }

    _poll() {
      // Never two polls at once; nothing while stopped, waiting or refreshing a token.
      if (!this._running || this._req || this._retryTimer != null || this._refreshing) return;
      if (!this._token && this._getToken) {
        this._refreshToken(null);
        return;
      }
      if (this._state !== STATES.CONNECTED) {
        this._setState(STATES.CONNECTING);
        // onStateChange may have called stop() (or stop() and start()).
        if (!this._running || this._req || this._retryTimer != null || this._refreshing) return;
      }

      var self = this;
      var req = { controller: this._AbortController ? new this._AbortController() : null, timer: null, timedOut: false, started: this._now() };
      this._req = req;
      var headers = { 'Accept': 'application/json' };
      if (this._tokenIn === 'header' && this._token) headers['Authorization'] = 'Bearer ' + this._token;
      var init = { method: 'GET', headers: headers, cache: 'no-store' };
      if (req.controller) init.signal = req.controller.signal;
      if (this._requestTimeout > 0 && req.controller) {
        req.timer = this._setTimeout(function () {
          req.timer = null;
          req.timedOut = true;
          try { req.controller.abort(); } catch (e) { /* ignore */ }
        }, this._requestTimeout);
      }

      var p;
      try {
        p = Promise.resolve(this._fetch(this._buildUrl(), init));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(function (resp) {
        return Promise.resolve(resp.text()).then(function (text) { return { status: resp.status, text: text }; });
      }).then(function (r) {
        if (self._req !== req) return; // stopped or replaced meanwhile
        self._finishRequest(req);
        var gen = self._gen;
        try {
          self._handleResponse(r.status, r.text, self._now() - req.started);
        } catch (err) {
          // A bug (ours, or a broken storage/runtime) must not leave the
          // instance 'connected' with no poll open: retry from the cursor,
          // which names the last message whose dispatch completed.
          reportHandlerError(err);
          if (gen === self._gen && self._running && !self._req && self._retryTimer == null && !self._refreshing) {
            self._retry(new CometBoxError('client-error', (err && err.message) || String(err), 0, false));
          }
        }
      }, function (err) {
        if (self._req !== req) return;
        self._finishRequest(req);
        if (req.timedOut) {
          self._retry(new CometBoxError('request-timeout', 'no answer within ' + self._requestTimeout + ' ms', 0, false));
        } else {
          self._retry(new CometBoxError('network', (err && err.message) || 'network error', 0, false));
        }
      });
    }

    _finishRequest(req) {
      if (req.timer != null) this._clearTimeout(req.timer);
      req.timer = null;
      this._req = null;
    }

    _handleResponse(status, text, elapsed) {
      var body = null;
      try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }

      if (status === 200) {
        if (!body || typeof body !== 'object' || typeof body.cursor !== 'string' || !Array.isArray(body.messages)) {
          this._retry(new CometBoxError('bad-response', 'the poll reply is not cometbox JSON', status, false));
          return;
        }
        this._handleBatch(body, elapsed);
        return;
      }

      var code = body && typeof body.error === 'string' ? body.error : 'http-' + status;
      var message = body && typeof body.message === 'string' ? body.message : ('HTTP ' + status);
      var err;
      if (status === 401) {
        err = new CometBoxError(code, message, status, false);
        if (!this._getToken) {
          this._fail(err);
          return;
        }
        this._authFailures++;
        // The first 401 refreshes at once; a fresh token that is refused again backs off.
        this._refreshToken(err);
        return;
      }
      if (status === 429 || status === 408 || status >= 500 || status === 0) {
        this._retry(new CometBoxError(code, message, status, false));
        return;
      }
      // 400, 403, 404 and any other client error: retrying cannot help.
      if (status === 400 && this._cursor != null) {
        // The remembered cursor may be what the server refuses: forget it so that
        // a reload does not hit the same wall. The in-memory value stays for inspection.
        var keep = this._cursor;
        this._cursor = null;
        this._save();
        this._cursor = keep;
      }
      this._fail(new CometBoxError(code, message, status, true));
    }

    _handleBatch(body, elapsed) {
      var gen = this._gen;
      this._attempt = 0;
      this._authFailures = 0;
      this._sinceExplicit = false;
      this._setState(STATES.CONNECTED);
      if (gen !== this._gen) return; // stop() from onStateChange

      if (body.reset === true && this._onReset) {
        this._safeCall(this._onReset, [{ cursor: body.cursor, messages: body.messages, previousCursor: this._cursor }]);
        if (gen !== this._gen) return;
      }

      // The in-memory cursor advances after each message (cb.cursor is the last
      // handled one); storage is written once, after the reply's messages were
      // dispatched. It never gets ahead of what was dispatched: if the loop is
      // left early (stop() from a handler) or broken by an exception, what is
      // stored is the last message whose dispatch completed, so a reload
      // replays the rest (at least once) and skips nothing. A handler that
      // throws is reported by _safeCall and its message counts as handled.
      var msgs = body.messages;
      try {
        for (var i = 0; i < msgs.length; i++) {
          var m = msgs[i];
          if (!m || typeof m !== 'object') continue;
          this._dispatch(m);
          if (typeof m.id === 'string') this._cursor = m.id;
          if (gen !== this._gen) return; // stop() from a handler: resume after this message later
        }
        if (body.disconnected === true) {
          // The backend <disconnect>ed this client: its mailbox is gone.
          this._cursor = null;
        } else {
          this._cursor = body.cursor;
        }
      } finally {
        this._persist();
      }

      if (body.disconnected === true) {
        this._fail(new CometBoxError('disconnected', 'the backend disconnected this client', 200, true));
        return;
      }

      var empty = !msgs.length && body.reset !== true;
      if (empty && this._onTimeout) {
        this._safeCall(this._onTimeout, [{ cursor: body.cursor }]);
        if (gen !== this._gen) return;
      }
      // An empty reply normally means the server held the poll for its timeout.
      // Empty replies that keep coming back at once (a proxy answering for the
      // server, ?timeout=0, a server going down) would make a busy loop: space them.
      this._fastEmpty = empty && elapsed != null && elapsed < 1000 ? this._fastEmpty + 1 : 0;
      if (this._fastEmpty >= 3) {
        var self = this;
        this._retryTimer = this._setTimeout(function () {
          self._retryTimer = null;
          if (gen === self._gen && self._running) self._poll();
        }, backoffDelay(this._fastEmpty - 2, this._backoff, this._random));
        return;
      }
      this._poll();
    }

    _dispatch(m) {
      if (this._onMessage) this._safeCall(this._onMessage, [m]);
      var lists = [];
      if (typeof m.event === 'string' && this._handlers[m.event]) lists.push(this._handlers[m.event]);
      if (this._handlers['*'] && m.event !== '*') lists.push(this._handlers['*']);
      for (var j = 0; j < lists.length; j++) {
        var list = lists[j].slice(); // handlers may call on()/off()
        for (var k = 0; k < list.length; k++) this._safeCall(list[k], [m.data, m]);
      }
    }

    _refreshToken(cause) {
      var self = this;
      var gen = this._gen;
      if (this._authFailures > 1) {
        // The server refused a token we just fetched: do not hammer the backend.
        this._retry(cause || new CometBoxError('invalid-token', 'token refused', 401, false), function () {
          self._doRefresh(cause, gen);
        });
        return;
      }
      this._doRefresh(cause, gen);
    }

    _doRefresh(cause, gen) {
      var self = this;
      if (!this._running || gen !== this._gen) return;
      if (this._state !== STATES.CONNECTED) {
        this._setState(STATES.CONNECTING);
        if (!this._running || gen !== this._gen) return; // stop() from onStateChange
      }
      this._refreshing = true;
      var p;
      try {
        p = Promise.resolve(this._getToken({ reason: cause ? cause.code : 'no-token', clientId: this.clientId }));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(function (token) {
        if (gen !== self._gen) return;
        self._refreshing = false;
        if (typeof token !== 'string' || !token) {
          self._retry(new CometBoxError('token-refresh-failed', 'getToken() gave no token', 0, false), again);
          return;
        }
        self._applyToken(token, true);
        self._poll();
      }, function (err) {
        if (gen !== self._gen) return;
        self._refreshing = false;
        self._retry(new CometBoxError('token-refresh-failed', 'getToken() failed: ' + ((err && err.message) || err), 0, false), again);
      });
      // After a failed getToken(), ask again (not a poll with the refused token).
      function again() { self._doRefresh(cause, gen); }
    }

    /** Wait (exponential backoff with jitter) then run `then` (default: poll again). */
    _retry(err, then) {
      if (!this._running) return;
      this._attempt++;
      var delay = backoffDelay(this._attempt, this._backoff, this._random);
      var self = this;
      var gen = this._gen;
      // The timer first: onStateChange may call stop(), which must be able to cancel it.
      this._retryTimer = this._setTimeout(function () {
        self._retryTimer = null;
        if (gen !== self._gen || !self._running) return;
        if (then) then(); else self._poll();
      }, delay);
      this._setState(STATES.WAITING, { error: err, delay: delay, attempt: this._attempt });
    }

    _fail(err) {
      err.fatal = true;
      this._halt();
      this._setState(STATES.STOPPED, { error: err });
      if (this._onError) this._safeCall(this._onError, [err]);
    }
  }

  CometBox.VERSION = VERSION;
  CometBox.STATES = STATES;
  CometBox.CometBoxError = CometBoxError;
  CometBox.decodeToken = decodeToken;
  CometBox.backoffDelay = backoffDelay;
  CometBox.CometBox = CometBox;
  CometBox.default = CometBox;
  return CometBox;
});
