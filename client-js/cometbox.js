/*!
 * cometbox.js - browser client for the cometbox server-push relay.
 * https://github.com/ (see client-js/README.md)  License: MIT
 *
 * One dependency-free file. Use it as:
 *   - a classic script:   <script src="/cometbox.js"></script>  -> global `CometBox`
 *   - CommonJS:           const CometBox = require('cometbox-client')
 *   - an ES module:       import CometBox from 'cometbox-client'  (cometbox.mjs beside this file)
 *
 * Wire protocol: cometbox docs/protocol.md: GET <url>/ws (WebSocket) where it works,
 * else GET <url>/events (Server-Sent Events, read with fetch streaming), else
 * GET <url>/poll (long-poll); one connection per client shared by all tabs (Web
 * Locks + BroadcastChannel).
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

  var VERSION = '0.2.0';

  /** The four states of a CometBox instance (see README: state machine). */
  var STATES = Object.freeze({
    CONNECTING: 'connecting',
    CONNECTED: 'connected',
    WAITING: 'waiting to reconnect',
    STOPPED: 'stopped'
  });

  var DEFAULT_BACKOFF = Object.freeze({ base: 1000, max: 30000 });
  /** Message ids a tab remembers to drop what it already dispatched (tab sharing). */
  var SEEN_MAX = 2000;
  /** Where a leader's batch goes past a follower's cursor: the index after the
   *  message whose id is that cursor, or 0 when the batch does not hold it. A
   *  leader with no cursor (a new tab, or one that took over before its
   *  catch-up ended) posts everything the mailbox retains; a follower that
   *  reloaded has forgotten the ids it dispatched, not its cursor, and must not
   *  show again what came up to it. */
  function afterCursor(msgs, cursor) {
    if (typeof cursor !== 'string') return 0;
    for (var i = msgs.length - 1; i >= 0; i--) {
      if (msgs[i] && msgs[i].id === cursor) return i + 1;
    }
    return 0;
  }

  /** Leader batches a follower keeps while it catches up. */
  var PENDING_MAX = 1000;
  /** Longest SSE line accepted (the server's replies are bounded by max_reply_bytes). */
  var STREAM_LINE_MAX = 4 * 1024 * 1024;

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

  function cancelReader(reader) {
    try { Promise.resolve(reader.cancel()).then(null, function () {}); } catch (e) { /* ignore */ }
  }

  function cancelBody(resp) {
    try { if (resp && resp.body && typeof resp.body.cancel === 'function') resp.body.cancel().then(null, function () {}); } catch (e) { /* ignore */ }
  }

  function isAbortError(err) {
    return !!err && (err.name === 'AbortError' || err.code === 20);
  }

  // ---------------------------------------------------------------- the class

  class CometBox {
    /**
     * @param {string} url  the poll endpoint base: `http://127.0.0.1:8480`, `/cometbox`...
     *                      The class requests `<url>/events` (stream) or `<url>/poll`.
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

      // Transport: 'auto' tries a WebSocket, then the SSE stream, then long-poll,
      // and keeps a fallback for good (this instance) once what it tried does not
      // work here; 'ws', 'sse' and 'poll' force one.
      this._transportOpt = o.transport === 'ws' || o.transport === 'sse' || o.transport === 'poll' ? o.transport : 'auto';
      this._transport = null;        // resolved at the first start(): 'ws', 'sse' or 'poll'
      this._fallbackReason = null;   // why 'auto' left the WebSocket or the stream
      this._WebSocket = o.WebSocket !== undefined ? o.WebSocket
        : (root && typeof root.WebSocket === 'function' ? root.WebSocket : null);
      this._wsOpened = false;        // a WebSocket has opened here (the upgrade gets through)
      this._wsProven = false;        // a WebSocket has delivered a frame here
      this._wsTrial = false;         // 'auto' tries the stream (or a poll) in place of a WebSocket that did not open
      this._streamProbe = o.streamProbeTimeout != null ? Number(o.streamProbeTimeout) : 5000;
      this._streamIdle = o.streamIdleTimeout != null ? Number(o.streamIdleTimeout) : 45000;
      this._idleTimeouts = 0;        // consecutive stream watchdog expiries with no event between
      this._fastEnd = 0;             // consecutive streams that ended at once with nothing
      this._streamWorked = false;    // a stream has delivered its first bytes here
      this._streamNetFails = 0;      // consecutive network failures of /events before that
      this._probePoll = false;       // the next attempt is a long-poll, to tell the two apart

      // Tab sharing: one connection per (url, client, channels) for all tabs of a browser.
      this._shareWanted = o.shareTabs !== false;
      var nav = root && root.navigator;
      this._locks = o.locks !== undefined ? o.locks : (nav && nav.locks) || null;
      this._BroadcastChannel = o.BroadcastChannel !== undefined ? o.BroadcastChannel
        : (root && typeof root.BroadcastChannel === 'function' ? root.BroadcastChannel : null);
      this._role = null;             // null (not decided), 'electing', 'solo', 'leader', 'follower'
      this._share = null;            // {name, channel, release, abort} while in a group
      this._catchingUp = false;      // follower: fetching what it missed (?timeout=0 polls)
      this._pending = [];            // follower: leader batches heard while catching up
      this._leaderState = null;      // follower: the leader's last state message
      this._seen = null;             // shared mode: recently dispatched message ids

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
    /** The URL of the SSE stream (without query). */
    get eventsUrl() { return this._url + '/events'; }
    /** The URL of the WebSocket (ws: or wss:, without query). */
    get wsUrl() { return absoluteBase(this._url).replace(/^http(s?):/i, 'ws$1:') + '/ws'; }
    /** The transport in use: 'ws', 'sse' or 'poll' (null before the first start()). */
    get transport() { return this._transport; }
    /** Why `transport: 'auto'` left the WebSocket or the stream (null when it did not). */
    get fallbackReason() { return this._fallbackReason; }
    /** 'leader' (this tab holds the connection), 'follower' (another tab does),
     *  'solo' (not shared), or null (stopped / not decided yet). */
    get role() { return this._role === 'electing' ? null : this._role; }

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
      // Another client (or a first token): the tab group changes with it.
      if (this._running && this._share && this._shareName() !== this._share.name) this._regroup();
      return this;
    }

    /** Start polling (no-op when already started). Returns this. */
    start() {
      if (this._running) return this;
      if (!this._fetch) throw new Error('CometBox: no fetch() available');
      if (this._transportOpt === 'ws' && !this._WebSocket) throw new Error('CometBox: transport \'ws\' but no WebSocket available');
      this._running = true;
      this._gen++;
      if (!this._transport) this._transport = this._pickTransport();
      this._idleTimeouts = 0;
      this._fastEnd = 0;
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
      if (this._role === 'leader') this._postState(detail);
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
      this._leaveGroup();
    }

    _abortRequest() {
      var req = this._req;
      if (!req) return;
      this._req = null; // its late settlement is ignored: req !== this._req
      if (req.timer != null) this._clearTimeout(req.timer);
      if (req.controller) {
        try { req.controller.abort(); } catch (e) { /* ignore */ }
      }
      if (req.cancel) req.cancel(); // a WebSocket
    }

    /** The URL of a poll (`stream` falsy), of the SSE stream (true) or of the WebSocket ('ws'). */
    _buildUrl(stream) {
      var ws = stream === 'ws';
      var q = [];
      if (this._cursor != null) q.push('since=' + encodeURIComponent(this._cursor));
      if (this._channels.length) q.push('channels=' + encodeURIComponent(this._channels.join(',')));
      // A follower catching up must not be held: it only wants what it missed.
      var timeout = this._catchingUp ? 0 : this._pollTimeout;
      if (!stream && timeout != null && !isNaN(timeout)) q.push('timeout=' + encodeURIComponent(String(timeout)));
      // A WebSocket cannot carry an Authorization header: its token is in the query.
      if ((ws || this._tokenIn === 'query') && this._token) q.push('token=' + encodeURIComponent(this._token));
      var base = ws ? this.wsUrl : (stream ? this.eventsUrl : this.pollUrl);
      return q.length ? base + (base.indexOf('?') >= 0 ? '&' : '?') + q.join('&') : base;
    }

    _poll() {
      // Never two polls at once; nothing while stopped, waiting or refreshing a token.
      if (!this._running || this._req || this._retryTimer != null || this._refreshing) return;
      if (!this._token && this._getToken) {
        this._refreshToken(null);
        return;
      }
      // Tab sharing: the first poll with a token decides whether this tab holds
      // the connection or follows the tab that does (see _elect).
      if (this._role === null && this._elect()) return;
      if (this._role === 'electing') return;
      if (this._role === 'follower' && !this._catchingUp) return; // fed by the leader
      if (this._state !== STATES.CONNECTED) {
        this._setState(STATES.CONNECTING);
        // onStateChange may have called stop() (or stop() and start()).
        if (!this._running || this._req || this._retryTimer != null || this._refreshing) return;
      }
      if (this._transport === 'ws' && !this._catchingUp) {
        this._openSocket();
        return;
      }
      var probe = this._probePoll;
      this._probePoll = false;
      if (this._transport === 'sse' && !this._catchingUp && !probe) {
        this._openStream();
        return;
      }

      var self = this;
      var req = { controller: this._AbortController ? new this._AbortController() : null, timer: null, timedOut: false, started: this._now(), probe: probe };
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
        if (self._req === req) self._settleTrial(true); // an HTTP answer: long-poll gets through
        return Promise.resolve(resp.text()).then(function (text) { return { status: resp.status, text: text }; });
      }).then(function (r) {
        if (self._req !== req) return; // stopped or replaced meanwhile
        self._finishRequest(req);
        if (req.probe && r.status === 200) {
          // /poll answers where /events never did: the stream cannot get through here.
          self._transport = 'poll';
          self._fallbackReason = 'stream-unreachable';
        }
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
        if (self._settleTrial(false)) {
          // Long-poll fails too where the WebSocket did not open: the server is down.
          self._retry(new CometBoxError('network', (err && err.message) || 'network error', 0, false));
          return;
        }
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
        // A leader whose token is refused hands the connection over at once: a
        // tab with a good token (one opened after a redeploy with a new secret)
        // must not wait for this tab's refreshes and backoff. Leaving the group
        // gives the lock up; this tab's next poll elects again (with no other
        // tab waiting, it simply leads again).
        if (this._role === 'leader' && (code !== 'token-expired' || this._authFailures > 1)) this._leaveGroup();
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

    /** A poll reply, or one SSE event as a reply of one message (`stream`: the
     *  stream goes on, nothing is polled afterwards). */
    _handleBatch(body, elapsed, stream) {
      var gen = this._gen;
      this._attempt = 0;
      this._authFailures = 0;
      this._sinceExplicit = false;
      this._setState(STATES.CONNECTED);
      if (gen !== this._gen) return; // stop() from onStateChange

      var msgs = body.messages;
      if (this._role === 'leader' && (msgs.length || body.reset === true || body.disconnected === true)) {
        // Before dispatching here: a handler of this tab may stop() it midway.
        this._post({ t: 'batch', messages: msgs, cursor: body.disconnected === true ? null : body.cursor,
          reset: body.reset === true, disconnected: body.disconnected === true, previousCursor: this._cursor });
      }
      if (body.reset === true) {
        if (this._seen) this._seen.clear(); // ids after a reset may repeat older ones
        if (this._onReset) {
          this._safeCall(this._onReset, [{ cursor: body.cursor, messages: body.messages, previousCursor: this._cursor }]);
          if (gen !== this._gen) return;
        }
      }

      // The in-memory cursor advances after each message (cb.cursor is the last
      // handled one); storage is written once, after the reply's messages were
      // dispatched. It never gets ahead of what was dispatched: if the loop is
      // left early (stop() from a handler) or broken by an exception, what is
      // stored is the last message whose dispatch completed, so a reload
      // replays the rest (at least once) and skips nothing. A handler that
      // throws is reported by _safeCall and its message counts as handled.
      try {
        for (var i = 0; i < msgs.length; i++) {
          var m = msgs[i];
          if (!m || typeof m !== 'object') continue;
          if (this._markSeen(m.id)) this._dispatch(m);
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

      if (stream) return;
      var empty = !msgs.length && body.reset !== true;
      if (this._role === 'follower' && this._catchingUp) {
        // Caught up once a ?timeout=0 poll comes back empty; then the leader feeds this tab.
        if (empty) this._caughtUp(); else this._poll();
        return;
      }
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

    // ------------------------------------------------------------ tab sharing
    //
    // All tabs of one browser that run a CometBox for the same (url, client,
    // channels) form a group: the tab holding the Web Lock named after the group
    // (the leader) holds the only connection and posts what it receives on a
    // BroadcastChannel of the same name; the others (followers) dispatch that.
    // A follower first catches up by itself with ?timeout=0 polls from its own
    // cursor (what it missed, e.g. during its reload), holding nothing open.
    // When the leader goes (closed, reloaded, stopped), the browser grants the
    // lock to a waiting follower, which connects from the cursor of the last
    // message it dispatched: nothing is lost, and message ids already
    // dispatched by this tab are skipped (the last SEEN_MAX), so nothing is
    // shown twice in a tab either.

    /** The group's lock and channel name, or null (no client id yet). */
    _shareName() {
      var sub = this.clientId;
      if (!sub) return null;
      var ch = this._channels.slice().sort().join(',');
      return 'cometbox:' + absoluteBase(this._url) + '#' + sub + (ch ? '|' + ch : '');
    }

    /** Decide this tab's role. Returns true while an election is under way
     *  (the caller must wait: _becomeLeader/_becomeFollower poll when it ends). */
    _elect() {
      var name = this._shareName();
      var locks = this._locks;
      if (!this._shareWanted || !name || !locks || typeof locks.request !== 'function' ||
          !this._BroadcastChannel || !this._AbortController) {
        this._role = 'solo';
        return false;
      }
      var self = this;
      var share = { name: name, channel: null, release: null, abort: new this._AbortController() };
      try {
        share.channel = new this._BroadcastChannel(name);
      } catch (e) {
        this._role = 'solo';
        return false;
      }
      share.channel.onmessage = function (ev) {
        if (self._share === share) self._onGroupMessage(ev && ev.data);
      };
      var held = new Promise(function (resolve) { share.release = resolve; });
      this._share = share;
      this._role = 'electing';
      this._seen = new Set();
      function solo(err) {
        // Web Locks refused (sandboxed iframe, a broken polyfill): work alone.
        if (self._share !== share) return;
        if (err) reportHandlerError(err);
        self._leaveGroup();
        self._role = 'solo';
        self._poll();
      }
      try {
        Promise.resolve(locks.request(name, { ifAvailable: true }, function (lock) {
          if (self._share !== share) return undefined; // stopped meanwhile: release at once
          if (lock) {
            self._becomeLeader();
            return held;
          }
          self._becomeFollower();
          // Queue for the lock: granted when the leader's tab goes away.
          Promise.resolve(locks.request(name, { signal: share.abort.signal }, function () {
            if (self._share !== share) return undefined;
            self._becomeLeader();
            return held;
          })).then(null, function (err) {
            if (self._share === share && !isAbortError(err)) solo(err);
          });
          return undefined;
        })).then(null, solo);
      } catch (err) {
        solo(err);
      }
      return true;
    }

    _becomeLeader() {
      var wasFollower = this._role === 'follower';
      this._role = 'leader';
      // What the old leader posted and this tab has not dispatched yet comes again
      // from the server, from this tab's cursor, in order.
      this._catchingUp = false;
      this._pending = [];
      this._postState();
      if (wasFollower && this._running && !this._req && this._retryTimer == null && !this._refreshing) {
        this._attempt = 0;
        this._poll();
      } else if (!wasFollower) {
        this._poll();
      }
    }

    _becomeFollower() {
      this._role = 'follower';
      this._catchingUp = true;
      this._pending = [];
      this._leaderState = null;
      this._post({ t: 'hello' }); // the leader answers with its state
      this._poll();
    }

    _caughtUp() {
      this._catchingUp = false;
      this._attempt = 0;
      var gen = this._gen;
      var pending = this._pending;
      this._pending = [];
      for (var i = 0; i < pending.length; i++) {
        this._applyBatch(pending[i]);
        if (gen !== this._gen || this._role !== 'follower') return;
      }
      if (this._leaderState) this._mirrorState(this._leaderState);
    }

    _onGroupMessage(d) {
      if (!d || typeof d !== 'object') return;
      if (d.t === 'hello') {
        if (this._role === 'leader') this._postState();
      } else if (d.t === 'state') {
        if (this._role !== 'follower') return;
        this._leaderState = d;
        if (!this._catchingUp) this._mirrorState(d);
      } else if (d.t === 'batch' && Array.isArray(d.messages)) {
        if (this._role === 'follower') {
          if (!this._catchingUp) {
            this._applyBatch(d);
          } else if (this._pending.length < PENDING_MAX) {
            this._pending.push(d);
          } else {
            // Catching up for this long: the server has these too; fetch them then.
            this._pending = [];
          }
        } else if (d.disconnected === true && this._running) {
          // A late word from the old leader after this tab took over: the client is
          // gone (its mailbox too, so its last messages come only from here).
          this._applyBatch(d);
        }
        // A leader ignores other batches: the server is its source, from its cursor.
      }
    }

    /** A follower dispatches what the leader received (same order as a poll reply). */
    _applyBatch(d) {
      var gen = this._gen;
      var msgs = d.messages;
      if (d.reset === true) {
        if (this._seen) this._seen.clear();
        if (this._onReset) {
          this._safeCall(this._onReset, [{ cursor: d.cursor, messages: msgs, previousCursor: this._cursor }]);
          if (gen !== this._gen) return;
        }
      }
      var fresh = msgs.length === 0;
      try {
        // After a reset the ids start again: this tab's cursor names nothing in them.
        for (var i = d.reset === true ? 0 : afterCursor(msgs, this._cursor); i < msgs.length; i++) {
          var m = msgs[i];
          if (!m || typeof m !== 'object' || !this._markSeen(m.id)) continue;
          fresh = true;
          this._dispatch(m);
          if (typeof m.id === 'string') this._cursor = m.id;
          if (gen !== this._gen) return;
        }
        if (d.disconnected === true) this._cursor = null;
        else if (fresh && typeof d.cursor === 'string') this._cursor = d.cursor;
      } finally {
        this._persist();
      }
      if (d.disconnected === true) {
        this._fail(new CometBoxError('disconnected', 'the backend disconnected this client', 200, true));
      }
    }

    /** A follower shows the leader's connection state (never `stopped`: when the
     *  leader stops, a follower takes over). */
    _mirrorState(d) {
      if (d.state !== STATES.CONNECTING && d.state !== STATES.CONNECTED && d.state !== STATES.WAITING) return;
      var detail = null;
      if (d.error) {
        detail = { error: new CometBoxError(d.error.code, d.error.message, d.error.status, false) };
        if (d.delay != null) detail.delay = d.delay;
        if (d.attempt != null) detail.attempt = d.attempt;
      }
      this._setState(d.state, detail);
    }

    _postState(detail) {
      var msg = { t: 'state', state: this._state };
      var err = detail && detail.error;
      if (err) msg.error = { code: err.code, message: err.message, status: err.status };
      if (detail && detail.delay != null) msg.delay = detail.delay;
      if (detail && detail.attempt != null) msg.attempt = detail.attempt;
      this._post(msg);
    }

    _post(msg) {
      var share = this._share;
      if (!share || !share.channel) return;
      try {
        share.channel.postMessage(msg);
      } catch (e) {
        reportHandlerError(e); // a message that cannot be cloned: followers fetch it on takeover
      }
    }

    _leaveGroup() {
      var share = this._share;
      this._share = null;
      this._role = null;
      this._catchingUp = false;
      this._pending = [];
      this._leaderState = null;
      if (!share) return;
      if (share.release) share.release();            // the leader's lock: next tab's turn
      try { share.abort.abort(); } catch (e) { /* ignore */ }  // a follower's queued request
      try { share.channel.close(); } catch (e) { /* ignore */ }
    }

    /** The token now names another client: leave the group and join that client's. */
    _regroup() {
      this._leaveGroup();
      this._abortRequest();
      if (this._retryTimer != null) {
        this._clearTimeout(this._retryTimer);
        this._retryTimer = null;
      }
      if (!this._refreshing) this._poll();
    }

    /** Remember a dispatched id; false when this tab already dispatched it. */
    _markSeen(id) {
      var seen = this._seen;
      if (!seen || typeof id !== 'string') return true;
      if (seen.has(id)) return false;
      seen.add(id);
      if (seen.size > SEEN_MAX) seen.delete(seen.values().next().value);
      return true;
    }

    // ------------------------------------------------------------ SSE stream
    //
    // GET <url>/events read with fetch() and a ReadableStream rather than
    // EventSource: EventSource cannot send the Authorization header, cannot read
    // the JSON error of a refused request, delivers named events only to
    // listeners of that name (a message's `event` is any name), and hides the
    // comment lines that tell a live stream from one a proxy buffers.
    //
    // 'auto' detection: the server writes `: ok` as soon as the stream starts.
    // If those first bytes do not arrive within streamProbeTimeout (a proxy
    // buffers the body), or /events answers 404/405/501 (an older server), or a
    // 200 that is not text/event-stream, or the stream closes before any byte,
    // this instance switches to long-poll for good; so it does when /events keeps
    // failing at the network level while a long-poll tried in its place is
    // answered ('stream-unreachable'). On a working stream some
    // bytes (keep-alive comments every 15 s) arrive at least every
    // streamIdleTimeout; when two such watchdogs expire in a row with no event
    // between (a proxy that started buffering), it switches too; one is taken
    // for a dead connection and reconnects.

    _pickTransport() {
      if (this._transportOpt === 'poll') return 'poll';
      if (this._transportOpt === 'ws' || (this._transportOpt === 'auto' && this._WebSocket)) return 'ws';
      var streams = typeof ReadableStream === 'function' && typeof TextDecoder === 'function' && !!this._AbortController;
      if (!streams) {
        if (this._transportOpt === 'auto') this._fallbackReason = 'no-streams';
        return 'poll';
      }
      return 'sse';
    }

    /** Where 'auto' goes from the WebSocket: the stream, or long-poll without streams. */
    _afterSocket() {
      var streams = typeof ReadableStream === 'function' && typeof TextDecoder === 'function' && !!this._AbortController;
      return streams ? 'sse' : 'poll';
    }

    _fallBack(reason) {
      this._transport = this._transport === 'ws' ? this._afterSocket() : 'poll';
      this._fallbackReason = reason;
      this._attempt = 0;
      this._poll();
    }

    /**
     * Replaces `req`'s timer with one that calls `expired` after `ms` (none
     * when `ms` is not positive), if `req` is still the current request.
     */
    _armRequestTimer(req, ms, expired) {
      if (req.timer != null) this._clearTimeout(req.timer);
      req.timer = null;
      if (!(ms > 0)) return;
      var self = this;
      req.timer = this._setTimeout(function () {
        req.timer = null;
        if (self._req === req) expired();
      }, ms);
    }

    /** Ends the stream `req` unless some bytes come within `ms`. */
    _armWatchdog(req, ms) {
      var self = this;
      this._armRequestTimer(req, ms, function () {
        req.timedOut = true;
        self._finishRequest(req);
        try { req.controller.abort(); } catch (e) { /* ignore */ }
        if (req.reader) cancelReader(req.reader);
        self._streamEnded(req, new CometBoxError('request-timeout', 'stream watchdog', 0, false));
      });
    }

    _openStream() {
      var self = this;
      var auto = this._transportOpt === 'auto';
      var req = { controller: new this._AbortController(), timer: null, timedOut: false, started: this._now(), proven: false, events: 0 };
      this._req = req;
      var headers = { 'Accept': 'text/event-stream' };
      if (this._tokenIn === 'header' && this._token) headers['Authorization'] = 'Bearer ' + this._token;
      var init = { method: 'GET', headers: headers, cache: 'no-store', signal: req.controller.signal };
      this._armWatchdog(req, this._streamProbe);
      var p;
      try {
        p = Promise.resolve(this._fetch(this._buildUrl(true), init));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(function (resp) {
        if (self._req !== req) { cancelBody(resp); return undefined; }
        self._settleTrial(true); // an HTTP answer: the stream's route gets through
        var ct = (resp.headers && typeof resp.headers.get === 'function' && resp.headers.get('content-type')) || '';
        var isStream = resp.status === 200 && /^\s*text\/event-stream/i.test(ct) && resp.body && typeof resp.body.getReader === 'function';
        if (!isStream) {
          return Promise.resolve(resp.text()).then(function (text) {
            if (self._req !== req) return;
            self._finishRequest(req);
            var status = resp.status;
            if (auto && (status === 404 || status === 405 || status === 501 || status === 200)) {
              self._fallBack(status === 200 ? 'not-a-stream' : 'http-' + status);
            } else if (status === 200) {
              self._retry(new CometBoxError('bad-response', 'the /events reply is not text/event-stream', status, false));
            } else {
              self._handleResponse(status, text, self._now() - req.started);
            }
          });
        }
        return self._readStream(req, resp.body);
      }).then(null, function (err) {
        if (self._req !== req) return;
        self._finishRequest(req);
        try { req.controller.abort(); } catch (e) { /* ignore */ }
        if (err && !(err instanceof CometBoxError) && !isAbortError(err) && !(err instanceof TypeError)) {
          reportHandlerError(err); // a bug, not the network: say so, then reconnect
        }
        self._streamEnded(req, err || new Error('network error'));
      });
    }

    _readStream(req, body) {
      var self = this;
      var reader = body.getReader();
      req.reader = reader;
      var decoder = new TextDecoder('utf-8');
      var parser = { buf: '', data: [], event: '', id: null, size: 0 };
      function pump() {
        return reader.read().then(function (r) {
          if (self._req !== req) { cancelReader(reader); return undefined; }
          if (r.done) {
            self._finishRequest(req);
            self._streamEnded(req, null);
            return undefined;
          }
          if (!req.proven) {
            // The first bytes (`: ok`): the stream reaches us unbuffered.
            req.proven = true;
            self._streamWorked = true;
            self._streamNetFails = 0;
            self._attempt = 0;
            self._authFailures = 0;
            self._sinceExplicit = false;
            self._setState(STATES.CONNECTED);
            if (self._req !== req) { cancelReader(reader); return undefined; }
          }
          self._armWatchdog(req, self._streamIdle);
          var gen = self._gen;
          try {
            self._feedStream(req, parser, decoder.decode(r.value, { stream: true }));
          } finally {
            if (gen === self._gen) self._persist();
          }
          if (self._req !== req) { cancelReader(reader); return undefined; }
          return pump();
        });
      }
      return pump();
    }

    /** The SSE line format (WHATWG HTML, "event stream interpretation"). */
    _feedStream(req, p, text) {
      p.buf += text;
      if (p.buf.length > STREAM_LINE_MAX) throw new CometBoxError('bad-response', 'an SSE line over ' + STREAM_LINE_MAX + ' characters', 200, false);
      for (;;) {
        var m = /\r\n|\r|\n/.exec(p.buf);
        if (!m) return;
        if (m[0] === '\r' && m.index === p.buf.length - 1) return; // maybe a \r\n cut in two
        var line = p.buf.slice(0, m.index);
        p.buf = p.buf.slice(m.index + m[0].length);
        if (line === '') {
          var data = p.data, type = p.event || 'message', id = p.id;
          p.data = [];
          p.event = '';
          if (data.length) {
            this._streamEvent(req, type, data.join('\n'), id);
            if (this._req !== req) return;
          }
          continue;
        }
        if (line.charAt(0) === ':') continue; // `: ok`, `: keep-alive`
        var c = line.indexOf(':');
        var field = c < 0 ? line : line.slice(0, c);
        var value = c < 0 ? '' : line.slice(c + 1);
        if (value.charAt(0) === ' ') value = value.slice(1);
        if (field === 'data') p.data.push(value);
        else if (field === 'event') p.event = value;
        else if (field === 'id' && value.indexOf('\0') < 0) p.id = value;
      }
    }

    _streamEvent(req, type, text, id) {
      var data;
      try { data = JSON.parse(text); } catch (e) { data = undefined; }
      var gen = this._gen;
      req.events++;
      this._idleTimeouts = 0;
      this._fastEnd = 0;
      if (type === 'reset') {
        var cursor = data && typeof data.cursor === 'string' ? data.cursor : id;
        if (typeof cursor !== 'string') return;
        // The same meaning as a poll reply's `reset: true`; its messages follow as events.
        this._handleBatch({ cursor: cursor, messages: [], reset: true }, null, true);
        return;
      }
      if (type === 'disconnected') {
        this._handleBatch({ cursor: this._cursor || '', messages: [], disconnected: true }, null, true);
        return;
      }
      if (!data || typeof data !== 'object') return; // not a cometbox message: ignored
      var mid = typeof data.id === 'string' ? data.id : id;
      if (typeof mid !== 'string') return;
      if (typeof data.id !== 'string') data.id = mid;
      this._handleBatch({ cursor: mid, messages: [data] }, null, true);
      if (gen !== this._gen) return;
    }

    /** The stream ended: `err` null when the server closed it, else why. */
    _streamEnded(req, err) {
      var auto = this._transportOpt === 'auto';
      if (err && !req.timedOut && !(err instanceof CometBoxError) && this._settleTrial(false)) {
        // The stream fails too where the WebSocket did not open: the server is down.
        this._retry(new CometBoxError('network', (err && err.message) || 'network error', 0, false));
        return;
      }
      this._settleTrial(true); // no byte in time: something is there, and it buffers
      if (err && req.timedOut) {
        if (!req.proven) {
          if (auto) { this._fallBack('buffered'); return; }
          this._retry(new CometBoxError('request-timeout', 'no byte of the stream within ' + this._streamProbe + ' ms', 0, false));
          return;
        }
        this._idleTimeouts++;
        if (auto && this._idleTimeouts >= 2) { this._fallBack('stream-stalled'); return; }
        this._retry(new CometBoxError('request-timeout', 'the stream was silent for ' + this._streamIdle + ' ms', 0, false));
        return;
      }
      if (err) {
        if (err instanceof CometBoxError) { this._retry(err); return; }
        // /events failing at the network level while it never worked here: either
        // the server is down, or something lets /poll through and not /events (a
        // proxy route, CORS on /poll only). Every second such failure, the next
        // attempt is a long-poll: if that one is answered, long-poll it is.
        if (auto && !this._streamWorked && ++this._streamNetFails % 2 === 0) this._probePoll = true;
        this._retry(new CometBoxError('network', (err && err.message) || 'network error', 0, false));
        return;
      }
      if (!req.proven) {
        if (auto) { this._fallBack('stream-closed'); return; }
        this._retry(new CometBoxError('bad-response', 'the stream closed before it started', 200, false));
        return;
      }
      // Closed by the server: its shutdown, or the token's `exp` passed.
      var exp = this._claims && typeof this._claims.exp === 'number' ? this._claims.exp * 1000 : null;
      if (exp != null && exp <= this._now() + 1000 && this._getToken) {
        this._refreshToken(new CometBoxError('token-expired', 'the token expired', 0, false));
        return;
      }
      // Streams that keep ending at once with nothing are spaced like empty polls.
      this._fastEnd = !req.events && this._now() - req.started < 1000 ? this._fastEnd + 1 : 0;
      if (this._fastEnd >= 3) {
        this._retry(new CometBoxError('bad-response', 'the stream keeps closing at once', 200, false));
        return;
      }
      this._poll();
    }

    // ------------------------------------------------------------ WebSocket
    //
    // GET <url>/ws (docs/protocol.md): each server frame is a poll reply
    // ({messages, cursor, reset?, disconnected?}) handled like one; a refusal
    // after the upgrade is told by the close code. The token goes in the query
    // (a WebSocket cannot send headers), as do `since` and `channels`.
    //
    // Proof and liveness: the server's pings are invisible to a page, and an
    // idle socket carries nothing. So the class sends a no-op frame
    // {"type":"subscribe","channels":[],"ref":…}, which the server answers
    // {"type":"ok","ref":…} at once without touching its store: once right after
    // `open` (the answer, or any frame, proves that the server admitted this
    // socket and that frames get through: `connected`), then whenever the
    // socket was quiet for streamIdleTimeout / 2. No frame at all for another
    // streamIdleTimeout / 2 after such a frame: a dead connection, reopened.
    //
    // 'auto' detection:
    // - the socket errors or closes before `open` (or does not open within
    //   streamProbeTimeout): no upgrade here (an older server, a proxy that
    //   does not pass `Upgrade`) or the server is down; a page cannot tell
    //   which (no status). The next attempt is the stream (long-poll without
    //   streams) in its place: if that gets any HTTP answer, the WebSocket is
    //   left for good ('ws-failed' / 'ws-timeout'); if it fails at the network
    //   level too, the server is down: the WebSocket is tried again after the
    //   backoff. Once a socket has opened here, failing to open is never a
    //   reason to leave it (the server restarts, the network drops).
    // - it opens but the first answer does not come within streamProbeTimeout,
    //   before any socket delivered here ('ws-buffered': a proxy holds frames);
    // - a socket that worked goes silent (its ping unanswered) twice in a row
    //   with no frame between ('ws-stalled').

    /** Sends the no-op frame whose answer proves the socket is alive. */
    _socketPing(req, ms) {
      req.pinged = true;
      req.pings++;
      try {
        req.socket.send(JSON.stringify({ type: 'subscribe', channels: [], ref: 'cometbox-ping-' + req.pings }));
      } catch (e) { /* closing: its close event follows */ }
      this._armSocketTimer(req, ms);
    }

    /** Until `open` and its first answer: the probe; then the quiet timer. */
    _armSocketTimer(req, ms) {
      var self = this;
      this._armRequestTimer(req, ms, function () {
        if (req.proven && !req.pinged) {
          self._socketPing(req, self._streamIdle / 2); // quiet for a while: ask
          return;
        }
        req.timedOut = true;
        self._finishRequest(req);
        req.cancel();
        self._socketEnded(req, 0, '');
      });
    }

    _openSocket() {
      var self = this;
      var req = { socket: null, timer: null, timedOut: false, started: this._now(), opened: false, proven: false, pinged: false, pings: 0, frames: 0, cancel: null };
      this._req = req;
      var ws;
      try {
        ws = new this._WebSocket(this._buildUrl('ws'));
      } catch (err) {
        // A URL that is not http(s) or ws(s), a page policy: as a socket that did not open.
        this._finishRequest(req);
        this._socketEnded(req, 0, '');
        return;
      }
      req.socket = ws;
      function detach() { ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null; }
      req.cancel = function () {
        detach();
        try { ws.close(1000); } catch (e) { /* ignore */ }
      };
      ws.onopen = function () {
        if (self._req !== req) return;
        req.opened = true;
        self._wsOpened = true;
        self._socketPing(req, self._streamProbe);
      };
      ws.onmessage = function (ev) {
        if (self._req !== req) return;
        self._socketFrame(req, ev && ev.data);
      };
      function ended(code, reason) {
        if (self._req !== req) return;
        detach();
        self._finishRequest(req);
        try { ws.close(1000); } catch (e) { /* already closed */ }
        self._socketEnded(req, code, reason);
      }
      // `error` is only fired when the connection fails, and its close is then
      // 1006 (WHATWG WebSockets): handled at once, as some implementations
      // (Node 20's) fire no close after the error of a refused handshake.
      ws.onerror = function () { ended(1006, ''); };
      ws.onclose = function (ev) {
        ended(ev && typeof ev.code === 'number' ? ev.code : 1006, (ev && ev.reason) || '');
      };
      this._armSocketTimer(req, this._streamProbe); // for `open`
    }

    _socketFrame(req, data) {
      var body = null;
      try { body = typeof data === 'string' ? JSON.parse(data) : null; } catch (e) { body = null; }
      req.frames++;
      if (!req.proven) {
        // The server admitted this socket and its frames get through.
        req.proven = true;
        this._wsProven = true;
        this._attempt = 0;
        this._authFailures = 0;
        this._sinceExplicit = false;
        this._setState(STATES.CONNECTED);
        if (this._req !== req) return; // stop() from onStateChange
      }
      req.pinged = false;
      this._armSocketTimer(req, this._streamIdle / 2);
      if (body && typeof body === 'object' && typeof body.type === 'string') return; // an answer to a ping
      this._idleTimeouts = 0; // a reply frame (as an SSE event; pings answered do not count)
      if (!body || typeof body !== 'object' || typeof body.cursor !== 'string' || !Array.isArray(body.messages)) {
        this._finishRequest(req);
        req.cancel();
        this._retry(new CometBoxError('bad-response', 'a WebSocket frame that is not cometbox JSON', 0, false));
        return;
      }
      var gen = this._gen;
      try {
        this._handleBatch(body, null, true);
      } catch (err) {
        // A bug (ours, or a broken storage/runtime): reconnect from the cursor.
        reportHandlerError(err);
        if (gen === this._gen && this._req === req) {
          this._finishRequest(req);
          req.cancel();
          this._retry(new CometBoxError('client-error', (err && err.message) || String(err), 0, false));
        }
      }
    }

    /** The socket `req` closed (`code` 0: it timed out, or could not be made). */
    _socketEnded(req, code, reason) {
      var auto = this._transportOpt === 'auto';
      if (!req.opened) {
        if (auto && !this._wsOpened) {
          // Try the stream (or long-poll) in its place; _settleTrial decides.
          this._wsTrial = true;
          this._transport = this._afterSocket();
          this._fallbackReason = req.timedOut ? 'ws-timeout' : 'ws-failed';
          this._poll();
          return;
        }
        this._retry(new CometBoxError(req.timedOut ? 'request-timeout' : 'network',
          req.timedOut ? 'the WebSocket did not open within ' + this._streamProbe + ' ms' : 'the WebSocket did not open', 0, false));
        return;
      }
      if (req.timedOut) {
        if (!req.proven) {
          if (auto && !this._wsProven) { this._fallBack('ws-buffered'); return; }
          this._retry(new CometBoxError('request-timeout', 'no answer on the WebSocket within ' + this._streamProbe + ' ms', 0, false));
          return;
        }
        this._idleTimeouts++;
        if (auto && this._idleTimeouts >= 2) { this._fallBack('ws-stalled'); return; }
        this._retry(new CometBoxError('request-timeout', 'the WebSocket was silent for ' + this._streamIdle + ' ms', 0, false));
        return;
      }
      // The server's close codes, handled as the statuses of their HTTP twins.
      var status = { 4001: 401, 4003: 403, 4029: 429, 1008: 400, 1013: 503, 1001: 503 }[code];
      var name = reason || { 4001: 'token-expired', 4003: 'denied', 4029: 'too-many-polls', 1008: 'invalid-request', 1013: 'overloaded', 1001: 'shutting-down' }[code];
      if (code === 4003 && reason === 'invalid-token') status = 401; // as /poll's 401 invalid-token
      if (status === 400 && name !== 'invalid-request') {
        // A frame the server did not take (ours): a bug, not the cursor.
        this._fail(new CometBoxError(name, 'the WebSocket closed with ' + code + ' ' + reason, 400, true));
        return;
      }
      if (status) {
        this._handleResponse(status, JSON.stringify({ error: name, message: 'the WebSocket closed with ' + code + (reason ? ' ' + reason : '') }), this._now() - req.started);
        return;
      }
      if (code === 1000 && reason === 'disconnected') {
        // Its last frame ({disconnected: true}) normally came first and stopped this instance.
        this._handleBatch({ cursor: this._cursor || '', messages: [], disconnected: true }, null, true);
        return;
      }
      if (code === 1000 || code === 1005) {
        // Closed cleanly by the server: reconnect now from the cursor; sockets
        // that keep closing at once with nothing are spaced like empty polls.
        this._fastEnd = !req.frames && this._now() - req.started < 1000 ? this._fastEnd + 1 : 0;
        if (this._fastEnd >= 3) {
          this._retry(new CometBoxError('bad-response', 'the WebSocket keeps closing at once', 0, false));
          return;
        }
        this._poll();
        return;
      }
      // 1006 (the connection dropped), 1011, …: a network failure.
      this._retry(new CometBoxError('network', 'the WebSocket closed' + (code ? ' (' + code + (reason ? ' ' + reason : '') + ')' : ''), 0, false));
    }

    /** While 'auto' tries the stream (or a poll) in place of a WebSocket that did
     *  not open: an HTTP answer (`answered`) keeps that transport for good; a
     *  network failure means the server is down, and the WebSocket is tried
     *  again. Returns true when it went back to the WebSocket. */
    _settleTrial(answered) {
      if (!this._wsTrial) return false;
      this._wsTrial = false;
      if (answered) return false;
      this._transport = 'ws';
      this._fallbackReason = null;
      return true;
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
