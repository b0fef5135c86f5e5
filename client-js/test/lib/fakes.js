'use strict';
// Injected environment for unit tests: a fake fetch that the test answers by hand,
// fake timers driven by a manual clock, a Map-backed storage, an EventTarget for `online`.

class FakeClock {
  constructor() { this.now = 0; this.seq = 0; this.timers = new Map(); }
  setTimeout = (fn, ms) => { const id = ++this.seq; this.timers.set(id, { fn, at: this.now + Math.max(0, ms | 0), ms }); return id; };
  clearTimeout = (id) => { this.timers.delete(id); };
  /** Pending timers, soonest first. */
  pending() { return [...this.timers.entries()].map(([id, t]) => ({ id, ...t })).sort((a, b) => a.at - b.at || a.id - b.id); }
  /** Advance the clock by ms, firing due timers in order. */
  tick(ms) {
    const until = this.now + ms;
    for (;;) {
      const next = this.pending().find((t) => t.at <= until);
      if (!next) break;
      this.timers.delete(next.id);
      this.now = next.at;
      next.fn();
    }
    this.now = until;
  }
  /** Fire the next timer whatever its delay; returns its delay in ms. */
  runNext() {
    const next = this.pending()[0];
    if (!next) throw new Error('no pending timer');
    this.timers.delete(next.id);
    this.now = next.at;
    next.fn();
    return next.ms;
  }
}

class FakeFetch {
  constructor() { this.calls = []; this.fn = this.fetch.bind(this); }
  fetch(url, init) {
    return new Promise((resolve, reject) => {
      const call = { url: String(url), init, resolve, reject, aborted: false, settled: false };
      if (init && init.signal) {
        init.signal.addEventListener('abort', () => {
          call.aborted = true;
          if (!call.settled) { call.settled = true; reject(new DOMException('The operation was aborted.', 'AbortError')); }
        });
      }
      this.calls.push(call);
    });
  }
  get last() { return this.calls[this.calls.length - 1]; }
  /** Open (unsettled, unaborted) calls. */
  get open() { return this.calls.filter((c) => !c.settled); }
  respond(status, body, call = this.last) {
    if (!call || call.settled) throw new Error('no open fetch call to answer');
    call.settled = true;
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    call.resolve(new Response(text, { status, headers: { 'Content-Type': 'application/json' } }));
  }
  fail(err = new TypeError('Failed to fetch'), call = this.last) {
    if (!call || call.settled) throw new Error('no open fetch call to fail');
    call.settled = true;
    call.reject(err);
  }
  query(call = this.last) { return new URL(call.url).searchParams; }
}

/** A WebSocket constructor whose sockets the test drives by hand: open(), frame(),
 *  close(code, reason), fail() (error + close 1006 before open). `sent` holds what
 *  the class sent (parsed JSON). */
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = String(url);
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(JSON.parse(text));
    }
    close(code) { this.closedByClient = code == null ? 1005 : code; this.readyState = 3; }
    open() { this.readyState = 1; if (this.onopen) this.onopen({}); }
    frame(obj) { if (this.onmessage) this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
    /** Answers the class's last ping frame. */
    pong() { const p = this.sent[this.sent.length - 1]; this.frame({ type: 'ok', ref: p.ref }); }
    close_(code, reason = '') { this.readyState = 3; if (this.onclose) this.onclose({ code, reason }); }
    fail() { this.readyState = 3; if (this.onerror) this.onerror({}); if (this.onclose) this.onclose({ code: 1006, reason: '' }); }
    get query() { return new URL(this.url).searchParams; }
  }
  FakeWebSocket.sockets = sockets;
  Object.defineProperty(FakeWebSocket, 'last', { get: () => sockets[sockets.length - 1] });
  return FakeWebSocket;
}

class MemoryStorage {
  constructor(init) { this.map = new Map(Object.entries(init || {})); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

/** Let promise callbacks run (fetch -> text() -> handler takes a few turns). */
async function flush(turns = 10) {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

function b64url(obj) { return Buffer.from(JSON.stringify(obj)).toString('base64url'); }
/** An unsigned-looking JWT: the client never checks signatures. */
function fakeJwt(claims) { return b64url({ alg: 'HS256', typ: 'JWT' }) + '.' + b64url(claims) + '.sig'; }

function setup(options = {}) {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const storage = options.storage || new MemoryStorage();
  const target = new EventTarget();
  const states = [];
  const errors = [];
  const env = { clock, fetch, storage, target, states, errors };
  env.opts = {
    token: fakeJwt({ sub: 'alice', exp: 2000000000 }),
    // These tests drive the long-poll transport by hand (test/unit/sse.test.js
    // drives the stream); the default, 'auto', would open /events first.
    transport: 'poll',
    // No WebSocket unless a test gives one (FakeWebSocket): 'auto' then starts
    // with the stream, whether or not this Node has a global WebSocket.
    WebSocket: null,
    fetch: fetch.fn,
    timers: { setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout },
    storage,
    random: () => 0.5,
    eventTarget: target,
    onStateChange: (s, d) => states.push([s, d]),
    onError: (e) => errors.push(e),
    ...options,
  };
  return env;
}

module.exports = { FakeClock, FakeFetch, MemoryStorage, flush, fakeJwt, setup, fakeWebSocketClass };
