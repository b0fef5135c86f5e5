'use strict';
// Unit tests of cometbox.js with an injected fetch, timers, storage and event target.
const test = require('node:test');
const assert = require('node:assert/strict');
const CometBox = require('../../cometbox.js');
const { setup, flush, fakeJwt, MemoryStorage } = require('../lib/fakes.js');

const URL_BASE = 'http://127.0.0.1:8480';
const KEY_ALICE = 'cometbox:cursor:' + URL_BASE + '#alice';

function msg(id, data, extra = {}) { return { id, data, ts: 1, ...extra }; }

test('first poll: URL, Authorization header, channels, timeout, no since', async () => {
  const env = setup({ channels: ['room:1', 'news'], timeout: 20 });
  const cb = new CometBox(URL_BASE + '/', env.opts);
  assert.equal(cb.state, 'stopped');
  assert.equal(cb.clientId, 'alice');
  cb.start();
  assert.equal(cb.state, 'connecting');
  assert.equal(env.fetch.calls.length, 1);
  const c = env.fetch.last;
  const u = new URL(c.url);
  assert.equal(u.origin + u.pathname, URL_BASE + '/poll');
  assert.equal(u.searchParams.get('since'), null);
  assert.equal(u.searchParams.get('channels'), 'room:1,news');
  assert.equal(u.searchParams.get('timeout'), '20');
  assert.equal(u.searchParams.get('token'), null);
  assert.equal(c.init.headers.Authorization, 'Bearer ' + cb.token);
  assert.equal(c.init.method, 'GET');
  assert.ok(c.init.signal);
  cb.stop();
});

test('tokenIn: query puts the token in the URL and sends no header', async () => {
  const env = setup({ tokenIn: 'query' });
  const cb = new CometBox('/cometbox', env.opts);
  cb.start();
  assert.ok(env.fetch.last.url.startsWith('/cometbox/poll?token='));
  assert.equal(env.fetch.last.init.headers.Authorization, undefined);
  cb.stop();
});

test('dispatch: onMessage, on(event) with (data, message), "*" and order; cursor advances', async () => {
  const env = setup();
  const seen = [];
  const cb = new CometBox(URL_BASE, { ...env.opts, onMessage: (m) => seen.push(['onMessage', m.id]) });
  cb.on('chat', (data, m) => seen.push(['chat', data.text, m.id, m.channel]));
  cb.on('notice', (data) => seen.push(['notice', data]));
  cb.on('*', (data, m) => seen.push(['*', m.id]));
  cb.start();
  env.fetch.respond(200, {
    cursor: 'e-3',
    messages: [
      msg('e-1', { text: 'hi' }, { event: 'chat', channel: 'room:1' }),
      msg('e-2', 'plain', { event: 'notice' }),
      msg('e-3', [1, 2]),
    ],
  });
  await flush();
  assert.deepEqual(seen, [
    ['onMessage', 'e-1'], ['chat', 'hi', 'e-1', 'room:1'], ['*', 'e-1'],
    ['onMessage', 'e-2'], ['notice', 'plain'], ['*', 'e-2'],
    ['onMessage', 'e-3'], ['*', 'e-3'],
  ]);
  assert.equal(cb.cursor, 'e-3');
  assert.equal(cb.state, 'connected');
  assert.equal(env.storage.getItem(KEY_ALICE), 'e-3');
  // Re-polls at once with since = cursor, exactly one open request.
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(env.fetch.query().get('since'), 'e-3');
  assert.equal(env.fetch.open.length, 1);
  cb.stop();
});

test('off() removes handlers; a throwing handler does not break the loop', async () => {
  const env = setup();
  const got = [];
  const origError = console.error;
  const reported = [];
  console.error = (...a) => reported.push(a);
  try {
    const cb = new CometBox(URL_BASE, env.opts);
    const h = (d) => got.push(['h', d]);
    cb.on('x', h).on('x', () => { throw new Error('boom'); }).on('x', (d) => got.push(['h2', d]));
    cb.start();
    env.fetch.respond(200, { cursor: 'c2', messages: [msg('c1', 1, { event: 'x' })] });
    await flush();
    cb.off('x', h);
    env.fetch.respond(200, { cursor: 'c2', messages: [msg('c2', 2, { event: 'x' })] });
    await flush();
    assert.deepEqual(got, [['h', 1], ['h2', 1], ['h2', 2]]);
    assert.equal(reported.length, 2);
    assert.equal(cb.cursor, 'c2');
    assert.equal(cb.state, 'connected');
    cb.stop();
  } finally {
    console.error = origError;
  }
});

test('empty reply: onTimeout, poll again with the same cursor', async () => {
  const env = setup();
  const timeouts = [];
  const cb = new CometBox(URL_BASE, { ...env.opts, since: 'a-5', onTimeout: (i) => timeouts.push(i.cursor) });
  cb.start();
  assert.equal(env.fetch.query().get('since'), 'a-5');
  env.fetch.respond(200, { cursor: 'a-5', messages: [] });
  await flush();
  assert.deepEqual(timeouts, ['a-5']);
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(env.fetch.query().get('since'), 'a-5');
  cb.stop();
});

test('cursor is remembered per url+sub in storage and resumed by a new instance', async () => {
  const storage = new MemoryStorage();
  const env = setup({ storage });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(200, { cursor: 'k-2', messages: [msg('k-1', 1), msg('k-2', 2)] });
  await flush();
  cb.stop();
  assert.equal(storage.getItem(KEY_ALICE), 'k-2');

  // "Page reload": new instance, same storage, resumes from k-2.
  const env2 = setup({ storage });
  const cb2 = new CometBox(URL_BASE, env2.opts);
  assert.equal(cb2.cursor, 'k-2');
  cb2.start();
  assert.equal(env2.fetch.query().get('since'), 'k-2');
  cb2.stop();

  // Another client (sub) on the same url does not share it.
  const env3 = setup({ storage, token: fakeJwt({ sub: 'bob', exp: 2e9 }) });
  const cb3 = new CometBox(URL_BASE, env3.opts);
  assert.equal(cb3.cursor, null);
  // Another url does not either.
  const env4 = setup({ storage });
  assert.equal(new CometBox('http://127.0.0.1:9999', env4.opts).cursor, null);
  // An explicit `since` wins over the stored cursor.
  const env5 = setup({ storage, since: 'k-1' });
  assert.equal(new CometBox(URL_BASE, env5.opts).cursor, 'k-1');
});

test('reset: onReset first (with the old cursor), then the messages; continue from the new cursor', async () => {
  const env = setup({ since: 'old-9' });
  const order = [];
  const cb = new CometBox(URL_BASE, {
    ...env.opts,
    onReset: (info) => order.push(['reset', info.previousCursor, info.cursor, info.messages.length]),
    onMessage: (m) => order.push(['msg', m.id]),
  });
  cb.start();
  env.fetch.respond(200, { cursor: 'new-1', reset: true, messages: [msg('new-1', 'x')] });
  await flush();
  assert.deepEqual(order, [['reset', 'old-9', 'new-1', 1], ['msg', 'new-1']]);
  assert.equal(cb.cursor, 'new-1');
  assert.equal(env.fetch.query().get('since'), 'new-1');
  // A reset with no messages is not a timeout.
  let timeouts = 0;
  const env2 = setup({ since: 'old', onTimeout: () => timeouts++ });
  const cb2 = new CometBox(URL_BASE, env2.opts);
  cb2.start();
  env2.fetch.respond(200, { cursor: 'n-0', reset: true, messages: [] });
  await flush();
  assert.equal(timeouts, 0);
  assert.equal(cb2.cursor, 'n-0');
  cb.stop(); cb2.stop();
});

test('backoffDelay: exponential, equal jitter, capped', () => {
  const b = { base: 1000, max: 30000 };
  assert.equal(CometBox.backoffDelay(1, b, () => 0), 500);
  assert.equal(CometBox.backoffDelay(1, b, () => 1), 1000);
  assert.equal(CometBox.backoffDelay(2, b, () => 0), 1000);
  assert.equal(CometBox.backoffDelay(3, b, () => 0.5), 3000);
  assert.equal(CometBox.backoffDelay(6, b, () => 1), 30000);
  assert.equal(CometBox.backoffDelay(50, b, () => 1), 30000);
  assert.equal(CometBox.backoffDelay(50, b, () => 0), 15000);
  for (let i = 1; i < 40; i++) {
    const d = CometBox.backoffDelay(i, b);
    assert.ok(d >= 500 && d <= 30000, `attempt ${i}: ${d}`);
  }
});

test('network errors and 5xx: waiting to reconnect with growing delays, reset after a success', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  const delays = [];
  const failures = [
    () => env.fetch.fail(),
    () => env.fetch.respond(503, { error: 'shutting-down', message: 'bye' }),
    () => env.fetch.respond(502, '<html>bad gateway</html>'),
    () => env.fetch.respond(200, 'not json'),
    () => env.fetch.fail(),
    () => env.fetch.fail(),
    () => env.fetch.fail(),
  ];
  const codes = [];
  for (const f of failures) {
    f();
    await flush();
    assert.equal(cb.state, 'waiting to reconnect');
    const [, detail] = env.states[env.states.length - 1];
    codes.push(detail.error.code);
    assert.equal(env.fetch.open.length, 0, 'no request while waiting');
    delays.push(env.clock.runNext());
    assert.equal(cb.state, 'connecting');
    assert.equal(env.fetch.open.length, 1);
  }
  // random() = 0.5 -> 3/4 of the capped exponential.
  assert.deepEqual(delays, [750, 1500, 3000, 6000, 12000, 22500, 22500]);
  assert.deepEqual(codes, ['network', 'shutting-down', 'http-502', 'bad-response', 'network', 'network', 'network']);
  assert.equal(env.errors.length, 0, 'transient errors are not reported through onError');
  // A success resets the backoff.
  env.fetch.respond(200, { cursor: 'c', messages: [] });
  await flush();
  assert.equal(cb.state, 'connected');
  env.fetch.fail();
  await flush();
  assert.equal(env.clock.runNext(), 750);
  cb.stop();
});

test('429 too-many-polls backs off', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(429, { error: 'too-many-polls', message: 'limit' });
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.states.at(-1)[1].error.code, 'too-many-polls');
  assert.equal(env.fetch.calls.length, 1);
  env.clock.runNext();
  assert.equal(env.fetch.calls.length, 2);
  cb.stop();
});

test('state sequence over a reconnect', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(200, { cursor: 'a', messages: [] });
  await flush();
  env.fetch.fail();
  await flush();
  env.clock.runNext();
  env.fetch.respond(200, { cursor: 'a', messages: [] });
  await flush();
  cb.stop();
  assert.deepEqual(env.states.map(([s, d]) => [d.previous, s]), [
    ['stopped', 'connecting'],
    ['connecting', 'connected'],
    ['connected', 'waiting to reconnect'],
    ['waiting to reconnect', 'connecting'],
    ['connecting', 'connected'],
    ['connected', 'stopped'],
  ]);
});

test('401: getToken (a promise) is called and the poll resumes with the new token and the same cursor', async () => {
  const env = setup();
  const t2 = fakeJwt({ sub: 'alice', exp: 2000000100 });
  const reasons = [];
  const cb = new CometBox(URL_BASE, {
    ...env.opts,
    getToken: (ctx) => { reasons.push(ctx); return new Promise((r) => setImmediate(() => r(t2))); },
  });
  cb.start();
  env.fetch.respond(200, { cursor: 'z-1', messages: [msg('z-1', 1)] });
  await flush();
  env.fetch.respond(401, { error: 'token-expired', message: 'expired' });
  await flush();
  assert.deepEqual(reasons, [{ reason: 'token-expired', clientId: 'alice' }]);
  assert.equal(env.fetch.calls.length, 3);
  assert.equal(env.fetch.last.init.headers.Authorization, 'Bearer ' + t2);
  assert.equal(env.fetch.query().get('since'), 'z-1');
  assert.equal(cb.token, t2);
  assert.equal(env.errors.length, 0);
  assert.equal(env.clock.pending().filter((t) => t.ms !== cb._requestTimeout).length, 0, 'no backoff for the first refresh');
  cb.stop();
});

test('401 again right after a refresh backs off before asking again', async () => {
  const env = setup();
  let n = 0;
  const cb = new CometBox(URL_BASE, { ...env.opts, getToken: () => fakeJwt({ sub: 'alice', n: ++n }) });
  cb.start();
  env.fetch.respond(401, { error: 'invalid-token', message: 'bad' });
  await flush();
  assert.equal(n, 1);
  assert.equal(env.fetch.calls.length, 2);
  env.fetch.respond(401, { error: 'invalid-token', message: 'bad' });
  await flush();
  assert.equal(n, 1);
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.clock.runNext(), 750);
  await flush();
  assert.equal(n, 2);
  assert.equal(env.fetch.calls.length, 3);
  env.fetch.respond(401, { error: 'invalid-token', message: 'bad' });
  await flush();
  assert.equal(env.clock.runNext(), 1500);
  cb.stop();
});

test('getToken failures back off and retry', async () => {
  const env = setup();
  let n = 0;
  const cb = new CometBox(URL_BASE, {
    ...env.opts,
    getToken: () => (++n === 1 ? Promise.reject(new Error('backend down')) : fakeJwt({ sub: 'alice', n })),
  });
  cb.start();
  env.fetch.respond(401, { error: 'token-expired', message: 'x' });
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.states.at(-1)[1].error.code, 'token-refresh-failed');
  assert.equal(env.fetch.calls.length, 1);
  assert.equal(env.clock.runNext(), 750);
  await flush();
  assert.equal(n, 2, 'getToken is asked again after the wait');
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(env.fetch.last.init.headers.Authorization, 'Bearer ' + fakeJwt({ sub: 'alice', n: 2 }));
  assert.equal(cb.state, 'connecting');
  cb.stop();
});

test('no token but getToken: the token is fetched before the first poll; its sub picks the stored cursor', async () => {
  const storage = new MemoryStorage({ [KEY_ALICE]: 'm-7' });
  const env = setup({ storage, token: undefined, getToken: async () => fakeJwt({ sub: 'alice' }) });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  assert.equal(env.fetch.calls.length, 0);
  await flush();
  assert.equal(env.fetch.calls.length, 1);
  assert.equal(env.fetch.query().get('since'), 'm-7');
  cb.stop();
});

test('401 without getToken: stop and report', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(401, { error: 'token-expired', message: 'expired' });
  await flush();
  assert.equal(cb.state, 'stopped');
  assert.equal(env.errors.length, 1);
  assert.equal(env.errors[0].code, 'token-expired');
  assert.equal(env.errors[0].status, 401);
  assert.equal(env.errors[0].fatal, true);
});

test('403 and 400: stop, report the server error code, no more requests or timers', async () => {
  for (const [status, code] of [[403, 'channel-forbidden'], [400, 'invalid-request'], [404, null]]) {
    const env = setup({ channels: ['secret'] });
    const cb = new CometBox(URL_BASE, env.opts);
    cb.start();
    env.fetch.respond(status, code ? { error: code, message: 'nope' } : 'Not Found');
    await flush();
    assert.equal(cb.state, 'stopped');
    assert.equal(env.errors.length, 1);
    assert.equal(env.errors[0].code, code || 'http-404');
    assert.equal(env.errors[0].status, status);
    assert.ok(env.errors[0] instanceof CometBox.CometBoxError);
    assert.ok(env.errors[0] instanceof Error);
    assert.equal(env.fetch.calls.length, 1);
    assert.equal(env.clock.pending().length, 0);
    assert.equal(env.states.at(-1)[1].error.code, code || 'http-404');
  }
});

test('400 with a remembered cursor forgets it in storage (a reload will not hit the same wall)', async () => {
  const storage = new MemoryStorage({ [KEY_ALICE]: 'garbage!' });
  const env = setup({ storage });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  assert.equal(env.fetch.query().get('since'), 'garbage!');
  env.fetch.respond(400, { error: 'invalid-request', message: 'bad cursor' });
  await flush();
  assert.equal(storage.getItem(KEY_ALICE), null);
  assert.equal(cb.state, 'stopped');
});

test('disconnected: dispatch what came, then stop with code "disconnected"', async () => {
  const storage = new MemoryStorage();
  const env = setup({ storage });
  const got = [];
  const cb = new CometBox(URL_BASE, { ...env.opts, onMessage: (m) => got.push(m.id) });
  cb.start();
  env.fetch.respond(200, { cursor: 'd-1', messages: [msg('d-1', 'bye')] });
  await flush();
  assert.equal(storage.getItem(KEY_ALICE), 'd-1');
  env.fetch.respond(200, { cursor: 'd-1', messages: [], disconnected: true });
  await flush();
  assert.deepEqual(got, ['d-1']);
  assert.equal(cb.state, 'stopped');
  assert.equal(env.errors.length, 1);
  assert.equal(env.errors[0].code, 'disconnected');
  assert.equal(env.errors[0].fatal, true);
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(storage.getItem(KEY_ALICE), null);
  assert.equal(env.clock.pending().length, 0);
});

test('never two polls: start() twice, online while a poll is open replaces it', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  cb.start();
  assert.equal(env.fetch.calls.length, 1);
  env.target.dispatchEvent(new Event('online'));
  assert.equal(env.fetch.calls.length, 2);
  assert.equal(env.fetch.calls[0].aborted, true);
  assert.equal(env.fetch.open.length, 1);
  await flush();
  // The aborted request's rejection is ignored (no backoff scheduled).
  assert.equal(cb.state, 'connecting');
  assert.equal(env.clock.pending().filter((t) => t.ms < 60000).length, 0);
  cb.stop();
});

test('online while waiting to reconnect polls at once', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.fail();
  await flush();
  env.fetch.calls.length; // 1
  env.clock.runNext();
  env.fetch.fail();
  await flush();
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.fetch.calls.length, 2);
  env.target.dispatchEvent(new Event('online'));
  assert.equal(env.fetch.calls.length, 3);
  assert.equal(cb.state, 'connecting');
  assert.equal(env.clock.pending().filter((t) => t.ms < 60000).length, 0, 'the backoff timer was cancelled');
  // and the backoff restarts from the first step
  env.fetch.fail();
  await flush();
  assert.equal(env.clock.runNext(), 750);
  cb.stop();
  env.target.dispatchEvent(new Event('online'));
  assert.equal(env.fetch.calls.length, 4, 'no poll after stop()');
});

test('stop() aborts the open request and ignores its late answer; start() resumes from the cursor', async () => {
  const env = setup();
  const got = [];
  const cb = new CometBox(URL_BASE, { ...env.opts, onMessage: (m) => got.push(m.id) });
  cb.start();
  env.fetch.respond(200, { cursor: 's-1', messages: [msg('s-1', 1)] });
  await flush();
  const open = env.fetch.last;
  cb.stop();
  assert.equal(open.aborted, true);
  assert.equal(cb.state, 'stopped');
  await flush();
  assert.equal(env.clock.pending().length, 0);
  cb.start();
  assert.equal(env.fetch.query().get('since'), 's-1');
  cb.stop();
  assert.deepEqual(got, ['s-1']);
});

test('stop() during the backoff cancels the reconnect', async () => {
  const env = setup();
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.fail();
  await flush();
  assert.equal(env.clock.pending().length, 1);
  cb.stop();
  assert.equal(env.clock.pending().length, 0);
  assert.equal(env.fetch.calls.length, 1);
});

test('stop() from a handler: the cursor stays at the last handled message', async () => {
  const env = setup();
  const got = [];
  const cb = new CometBox(URL_BASE, env.opts);
  cb.on('*', (d, m) => { got.push(m.id); if (m.id === 'h-2') cb.stop(); });
  cb.start();
  env.fetch.respond(200, { cursor: 'h-3', messages: [msg('h-1', 1), msg('h-2', 2), msg('h-3', 3)] });
  await flush();
  assert.deepEqual(got, ['h-1', 'h-2']);
  assert.equal(cb.cursor, 'h-2');
  assert.equal(cb.state, 'stopped');
  assert.equal(env.fetch.calls.length, 1);
});

test('a poll that hangs past requestTimeout is aborted and retried', async () => {
  const env = setup({ requestTimeout: 5000 });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.clock.tick(5000);
  await flush();
  assert.equal(env.fetch.calls[0].aborted, true);
  assert.equal(cb.state, 'waiting to reconnect');
  assert.equal(env.states.at(-1)[1].error.code, 'request-timeout');
  env.clock.runNext();
  assert.equal(env.fetch.calls.length, 2);
  cb.stop();
});

test('setToken with another sub switches to that client\'s cursor', () => {
  const storage = new MemoryStorage({ ['cometbox:cursor:' + URL_BASE + '#bob']: 'b-4' });
  const env = setup({ storage, since: 'a-1' });
  const cb = new CometBox(URL_BASE, env.opts);
  assert.equal(cb.cursor, 'a-1');
  cb.setToken(fakeJwt({ sub: 'alice', exp: 3e9 }));
  assert.equal(cb.cursor, 'a-1', 'same client keeps its cursor');
  cb.setToken(fakeJwt({ sub: 'bob' }));
  assert.equal(cb.clientId, 'bob');
  assert.equal(cb.cursor, 'b-4');
  cb.setToken(fakeJwt({ sub: 'carol' }));
  assert.equal(cb.cursor, null);
});

test('decodeToken reads base64url JWT payloads (UTF-8, no padding) and rejects junk', () => {
  const t = fakeJwt({ sub: 'user:42', name: 'Zoë ✓', channels: ['chat', 'room:*'] });
  assert.ok(!t.includes('=') && !t.includes('+') && !t.includes('/'));
  assert.deepEqual(CometBox.decodeToken(t), { sub: 'user:42', name: 'Zoë ✓', channels: ['chat', 'room:*'] });
  // a payload whose base64url form contains - and _
  const tricky = fakeJwt({ sub: '>>>???' });
  assert.equal(CometBox.decodeToken(tricky).sub, '>>>???');
  assert.equal(CometBox.decodeToken('nope'), null);
  assert.equal(CometBox.decodeToken('a.!!!.c'), null);
  assert.equal(CometBox.decodeToken(null), null);
  const cb = new CometBox(URL_BASE, { token: 'not-a-jwt', storage: null, fetch: () => new Promise(() => {}) });
  assert.equal(cb.clientId, null);
});

test('storage failures are harmless', async () => {
  const env = setup({
    storage: { getItem() { throw new Error('denied'); }, setItem() { throw new Error('quota'); }, removeItem() { throw new Error('x'); } },
  });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  env.fetch.respond(200, { cursor: 'q-1', messages: [msg('q-1', 1)] });
  await flush();
  assert.equal(cb.cursor, 'q-1');
  assert.equal(env.fetch.query().get('since'), 'q-1');
  cb.stop();
});

test('module shapes: CommonJS export, global, ES module re-export', async () => {
  assert.equal(typeof CometBox, 'function');
  assert.equal(globalThis.CometBox, CometBox);
  assert.equal(CometBox.default, CometBox);
  assert.equal(CometBox.STATES.WAITING, 'waiting to reconnect');
  const esm = await import('../../cometbox.mjs');
  assert.equal(esm.default, CometBox);
  assert.equal(esm.CometBox, CometBox);
  assert.equal(esm.STATES, CometBox.STATES);
  assert.throws(() => new CometBox(''), TypeError);
});

test('empty replies that come back at once are spaced out (no busy loop)', async () => {
  const env = setup();
  let now = 0;
  const cb = new CometBox(URL_BASE, { ...env.opts, now: () => now });
  cb.start();
  // Two quick empties: polled again at once.
  for (let i = 0; i < 2; i++) {
    env.fetch.respond(200, { cursor: 'e', messages: [] });
    await flush();
    assert.equal(env.fetch.open.length, 1);
  }
  // The third and later ones wait, growing; the state stays "connected".
  const waits = [];
  for (let i = 0; i < 3; i++) {
    env.fetch.respond(200, { cursor: 'e', messages: [] });
    await flush();
    assert.equal(env.fetch.open.length, 0);
    assert.equal(cb.state, 'connected');
    waits.push(env.clock.runNext());
  }
  assert.deepEqual(waits, [750, 1500, 3000]);
  // A normal long-poll timeout (held 2 s) resets it.
  now += 2000;
  env.fetch.respond(200, { cursor: 'e', messages: [] });
  await flush();
  assert.equal(env.fetch.open.length, 1);
  // So do messages.
  env.fetch.respond(200, { cursor: 'e', messages: [] });
  await flush();
  env.fetch.respond(200, { cursor: 'e', messages: [] });
  await flush();
  env.fetch.respond(200, { cursor: 'f', messages: [msg('f', 1)] });
  await flush();
  assert.equal(env.fetch.open.length, 1);
  cb.stop();
  assert.equal(env.clock.pending().length, 0);
});

test('stop() (and restart) from onStateChange leaves no stray request or timer', async () => {
  // stop() when entering "waiting to reconnect"
  const env = setup();
  let cb;
  cb = new CometBox(URL_BASE, { ...env.opts, onStateChange: (st) => { if (st === 'waiting to reconnect') cb.stop(); } });
  cb.start();
  env.fetch.fail();
  await flush();
  assert.equal(cb.state, 'stopped');
  assert.equal(env.clock.pending().length, 0);
  cb.start();
  assert.equal(env.fetch.calls.length, 2, 'a later start() polls');
  cb.stop();

  // stop() when entering "connecting": no request is made
  const env2 = setup();
  let cb2;
  cb2 = new CometBox(URL_BASE, { ...env2.opts, onStateChange: (st) => { if (st === 'connecting') cb2.stop(); } });
  cb2.start();
  assert.equal(env2.fetch.calls.length, 0);
  assert.equal(cb2.state, 'stopped');

  // stop() + start() when entering "connected": exactly one poll open afterwards
  const env3 = setup();
  let cb3, once = true;
  cb3 = new CometBox(URL_BASE, { ...env3.opts, onStateChange: (st) => { if (st === 'connected' && once) { once = false; cb3.stop(); cb3.start(); } } });
  cb3.start();
  env3.fetch.respond(200, { cursor: 'r-1', messages: [msg('r-1', 1)] });
  await flush();
  assert.equal(env3.fetch.open.length, 1);
  cb3.stop();
});

/** A MemoryStorage that counts its writes. */
class CountingStorage extends MemoryStorage {
  constructor(init) { super(init); this.writes = []; }
  setItem(k, v) { this.writes.push(['set', k, String(v)]); super.setItem(k, v); }
  removeItem(k) { this.writes.push(['remove', k]); super.removeItem(k); }
}

test('storage: the cursor is written once per reply, not once per message', async () => {
  const storage = new CountingStorage();
  const env = setup({ storage });
  const seen = [];
  const cb = new CometBox(URL_BASE, { ...env.opts, onMessage: (m) => seen.push([m.id, storage.getItem(KEY_ALICE)]) });
  cb.start();
  env.fetch.respond(200, { cursor: 'w-4', messages: [msg('w-1', 1), msg('w-2', 2), msg('w-3', 3), msg('w-4', 4)] });
  await flush();
  // While a reply is dispatched, storage still holds the previous cursor: it is
  // never ahead of what the page has handled.
  assert.deepEqual(seen, [['w-1', null], ['w-2', null], ['w-3', null], ['w-4', null]]);
  assert.deepEqual(storage.writes, [['set', KEY_ALICE, 'w-4']]);
  assert.equal(cb.cursor, 'w-4');

  // An empty reply with the same cursor writes nothing.
  env.fetch.respond(200, { cursor: 'w-4', messages: [] });
  await flush();
  assert.equal(storage.writes.length, 1);

  // Next reply: one more write.
  env.fetch.respond(200, { cursor: 'w-6', messages: [msg('w-5', 5), msg('w-6', 6)] });
  await flush();
  assert.deepEqual(storage.writes.slice(1), [['set', KEY_ALICE, 'w-6']]);
  cb.stop();
});

test('storage: a throwing handler does not skip or stop the write; stop() midway stores the last handled id', async () => {
  const origError = console.error;
  console.error = () => {};
  try {
    const storage = new CountingStorage();
    const env = setup({ storage });
    const cb = new CometBox(URL_BASE, env.opts);
    cb.on('*', (d, m) => { if (m.id === 't-2') throw new Error('boom'); });
    cb.start();
    env.fetch.respond(200, { cursor: 't-3', messages: [msg('t-1', 1), msg('t-2', 2), msg('t-3', 3)] });
    await flush();
    assert.deepEqual(storage.writes, [['set', KEY_ALICE, 't-3']]);
    assert.equal(env.fetch.query().get('since'), 't-3');
    cb.stop();

    // stop() from a handler: the reply's cursor (h-9) is not stored, the last handled id is.
    const storage2 = new CountingStorage();
    const env2 = setup({ storage: storage2 });
    const cb2 = new CometBox(URL_BASE, env2.opts);
    cb2.on('*', (d, m) => { if (m.id === 'h-2') cb2.stop(); });
    cb2.start();
    env2.fetch.respond(200, { cursor: 'h-9', messages: [msg('h-1', 1), msg('h-2', 2), msg('h-3', 3)] });
    await flush();
    assert.deepEqual(storage2.writes, [['set', KEY_ALICE, 'h-2']]);
    // A reload resumes after h-2: h-3 comes again, nothing is skipped.
    const cb3 = new CometBox(URL_BASE, setup({ storage: storage2 }).opts);
    assert.equal(cb3.cursor, 'h-2');
  } finally {
    console.error = origError;
  }
});

test('storage: an exception escaping the dispatch loop never stores a cursor past the message it broke on', async () => {
  const storage = new CountingStorage();
  const env = setup({ storage });
  const cb = new CometBox(URL_BASE, env.opts);
  cb.start();
  // Force a failure outside the handlers' safety net, in the middle of the reply.
  const dispatch = cb._dispatch;
  cb._dispatch = function (m) { if (m.id === 'x-2') throw new Error('broken'); return dispatch.call(this, m); };
  const origError = console.error;
  const reported = [];
  console.error = (...a) => reported.push(a);
  try {
    env.fetch.respond(200, { cursor: 'x-3', messages: [msg('x-1', 1), msg('x-2', 2), msg('x-3', 3)] });
    await flush();
  } finally {
    console.error = origError;
  }
  assert.deepEqual(storage.writes, [['set', KEY_ALICE, 'x-1']]);
  assert.equal(reported.length, 1);
  // The loop is not left hanging: it waits, then polls again from x-1 (x-2 comes again).
  assert.equal(cb.state, 'waiting to reconnect');
  cb._dispatch = dispatch;
  env.clock.runNext();
  assert.equal(env.fetch.query().get('since'), 'x-1');
  cb.stop();
});
