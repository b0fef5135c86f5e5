'use strict';
// Unit tests of tab sharing: instances in one process stand for tabs, with a
// small in-memory Web Locks manager and Node's own BroadcastChannel (which
// delivers between instances, asynchronously, as between tabs).
// test/browser/tabs.test.js does the same in Chromium against the real server.
const test = require('node:test');
const { after } = require('node:test');
const assert = require('node:assert/strict');
const CometBox = require('../../cometbox.js');
const { setup, flush, fakeJwt } = require('../lib/fakes.js');

const URL_BASE = 'http://127.0.0.1:8480';

/** navigator.locks, exclusive mode only: request(name, {ifAvailable, signal}, cb). */
class FakeLocks {
  constructor() { this.held = new Set(); this.waiting = new Map(); }
  request(name, opts, cb) {
    return new Promise((resolve, reject) => {
      const run = (lock) => {
        Promise.resolve().then(() => cb(lock)).then(
          (v) => { if (lock) this.release(name); resolve(v); },
          (e) => { if (lock) this.release(name); reject(e); });
      };
      if (!this.held.has(name)) { this.held.add(name); run({ name }); return; }
      if (opts.ifAvailable) { run(null); return; }
      const q = this.waiting.get(name) || [];
      this.waiting.set(name, q);
      const entry = () => run({ name });
      q.push(entry);
      if (opts.signal) {
        opts.signal.addEventListener('abort', () => {
          const i = q.indexOf(entry);
          if (i >= 0) { q.splice(i, 1); reject(new DOMException('aborted', 'AbortError')); }
        });
      }
    });
  }
  release(name) {
    const q = this.waiting.get(name);
    if (q && q.length) q.shift()(); else this.held.delete(name);
  }
}

/** Lets BroadcastChannel deliveries and promise chains run. */
const settle = async () => { for (let i = 0; i < 3; i++) { await flush(); await new Promise((r) => setTimeout(r, 5)); } };

// Stopped at the end even when a test fails: an open BroadcastChannel keeps Node running.
const all = [];
after(() => { for (const t of all) t.cb.stop(); });

function tab(locks, token, extra = {}) {
  const env = setup({ locks, BroadcastChannel, shareTabs: true, token, ...extra });
  env.messages = [];
  env.opts.onMessage = (m) => env.messages.push(m.id);
  const cb = new CometBox(URL_BASE, env.opts);
  all.push({ cb });
  return { env, cb };
}
const ids = (t) => t.env.messages;
const msg = (id) => ({ id, data: id, ts: 1 });

test('one tab leads and polls; the others catch up once and then follow; take-over on stop()', async () => {
  const locks = new FakeLocks();
  const token = fakeJwt({ sub: 'alice', exp: 2000000000 });
  const a = tab(locks, token);
  const b = tab(locks, token);
  a.cb.start();
  await settle();
  assert.equal(a.cb.role, 'leader');
  assert.equal(a.env.fetch.open.length, 1);
  b.cb.start();
  await settle();
  assert.equal(b.cb.role, 'follower');
  // B's catch-up: a poll that must not be held, from its own cursor.
  assert.equal(b.env.fetch.open.length, 1);
  assert.equal(b.env.fetch.query().get('timeout'), '0');
  b.env.fetch.respond(200, { cursor: 'c-0', messages: [] });
  await settle();
  assert.equal(b.env.fetch.open.length, 0, 'a follower holds no connection');
  assert.equal(b.cb.state, 'connecting', 'the leader\'s state: its first poll is not answered yet');

  a.env.fetch.respond(200, { cursor: 'c-2', messages: [msg('c-1'), msg('c-2')] });
  await settle();
  assert.equal(b.cb.state, 'connected');
  assert.deepEqual(ids(a), ['c-1', 'c-2']);
  assert.deepEqual(ids(b), ['c-1', 'c-2']);
  assert.equal(b.cb.cursor, 'c-2');
  assert.equal(b.env.storage.getItem('cometbox:cursor:' + URL_BASE + '#alice'), 'c-2');
  assert.equal(b.env.fetch.calls.length, 1);

  // The leader goes: B takes over from the cursor of its last message.
  a.cb.stop();
  await settle();
  assert.equal(b.cb.role, 'leader');
  assert.equal(b.env.fetch.open.length, 1);
  assert.equal(b.env.fetch.query().get('since'), 'c-2');
  assert.notEqual(b.env.fetch.query().get('timeout'), '0');
  // A message the old leader had posted and the server sends again is not shown twice.
  b.env.fetch.respond(200, { cursor: 'c-3', messages: [msg('c-2'), msg('c-3')] });
  await settle();
  assert.deepEqual(ids(b), ['c-1', 'c-2', 'c-3']);
  b.cb.stop();
  await settle();
  assert.equal(locks.held.size, 0, 'every lock released');
});

test('a follower holds what the leader posts while it catches up, then applies it in order once', async () => {
  const locks = new FakeLocks();
  const token = fakeJwt({ sub: 'bob', exp: 2000000000 });
  const a = tab(locks, token);
  const b = tab(locks, token, { since: 'c-1' });
  a.cb.start();
  await settle();
  b.cb.start();
  await settle();
  const catchUp = b.env.fetch.last;
  assert.equal(b.env.fetch.query(catchUp).get('since'), 'c-1');
  // The leader receives c-2..c-4 while B's catch-up is still out.
  a.env.fetch.respond(200, { cursor: 'c-4', messages: [msg('c-2'), msg('c-3'), msg('c-4')] });
  await settle();
  assert.deepEqual(ids(b), [], 'held while catching up');
  b.env.fetch.respond(200, { cursor: 'c-3', messages: [msg('c-2'), msg('c-3')] }, catchUp);
  await settle();
  // Not empty yet: another catch-up poll.
  assert.equal(b.env.fetch.query().get('since'), 'c-3');
  b.env.fetch.respond(200, { cursor: 'c-4', messages: [msg('c-4')] });
  await settle();
  b.env.fetch.respond(200, { cursor: 'c-4', messages: [] });
  await settle();
  assert.deepEqual(ids(b), ['c-2', 'c-3', 'c-4']);
  a.env.fetch.respond(200, { cursor: 'c-5', messages: [msg('c-5')] });
  await settle();
  assert.deepEqual(ids(b), ['c-2', 'c-3', 'c-4', 'c-5']);
  a.cb.stop();
  b.cb.stop();
});

test('the leader\'s state reaches followers; a disconnected reply stops every tab', async () => {
  const locks = new FakeLocks();
  const token = fakeJwt({ sub: 'carol', exp: 2000000000 });
  const a = tab(locks, token);
  const b = tab(locks, token);
  a.cb.start();
  await settle();
  b.cb.start();
  await settle();
  b.env.fetch.respond(200, { cursor: 'c-0', messages: [] });
  await settle();
  a.env.fetch.respond(503, { error: 'overloaded' });
  await settle();
  assert.equal(a.cb.state, 'waiting to reconnect');
  assert.equal(b.cb.state, 'waiting to reconnect');
  const last = b.env.states[b.env.states.length - 1];
  assert.equal(last[1].error.code, 'overloaded');
  a.env.clock.runNext();
  a.env.fetch.respond(200, { cursor: 'c-1', messages: [msg('c-1')], disconnected: true });
  await settle();
  assert.deepEqual([a.cb.state, b.cb.state], ['stopped', 'stopped']);
  assert.deepEqual(b.env.errors.map((e) => e.code), ['disconnected']);
  assert.deepEqual(ids(b), ['c-1']);
  await settle();
  assert.equal(locks.held.size, 0);
});

test('different clients or channels are different groups; shareTabs: false and no Web Locks mean solo', async () => {
  const locks = new FakeLocks();
  const a = tab(locks, fakeJwt({ sub: 'dan', exp: 2000000000 }));
  const b = tab(locks, fakeJwt({ sub: 'eve', exp: 2000000000 }));
  const c = tab(locks, fakeJwt({ sub: 'dan', exp: 2000000000 }), { channels: ['news'] });
  const d = tab(locks, fakeJwt({ sub: 'dan', exp: 2000000000 }), { shareTabs: false });
  const e = tab(null, fakeJwt({ sub: 'dan', exp: 2000000000 }));
  for (const t of [a, b, c, d, e]) t.cb.start();
  await settle();
  assert.deepEqual([a, b, c, d, e].map((t) => t.cb.role), ['leader', 'leader', 'leader', 'solo', 'solo']);
  for (const t of [a, b, c, d, e]) t.cb.stop();
});

test('a fresh leader replays what the mailbox retains: a follower dispatches only what follows its own cursor', async () => {
  // The leader is a tab with no cursor (new, or it took over before its catch-up
  // ended): its poll brings everything retained and it posts all of it. A follower
  // that reloaded (its cursor remembered, its dispatched ids forgotten) must not
  // show again what it showed before its reload.
  const locks = new FakeLocks();
  const token = fakeJwt({ sub: 'alice', exp: 2000000000 });
  const a = tab(locks, token);
  a.cb.start();
  await settle();
  assert.equal(a.cb.role, 'leader');
  const { MemoryStorage } = require('../lib/fakes.js');
  const storage = new MemoryStorage({ [`cometbox:cursor:${URL_BASE}#alice`]: 'e-3' });
  const b = tab(locks, token, { storage });
  b.cb.start();
  await settle();
  assert.equal(b.cb.role, 'follower');
  assert.equal(b.env.fetch.query().get('since'), 'e-3');
  b.env.fetch.respond(200, { cursor: 'e-3', messages: [] });
  await settle();
  assert.equal(a.env.fetch.query().get('since'), null, 'the leader starts with no cursor');
  a.env.fetch.respond(200, { cursor: 'e-4', messages: [msg('e-1'), msg('e-2'), msg('e-3'), msg('e-4')] });
  await settle();
  assert.deepEqual(ids(a), ['e-1', 'e-2', 'e-3', 'e-4']);
  assert.deepEqual(ids(b), ['e-4'], 'the follower had shown e-1..e-3 before its reload');
  assert.equal(b.cb.cursor, 'e-4');
});
