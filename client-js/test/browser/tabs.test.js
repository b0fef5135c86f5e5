'use strict';
// Tab sharing in a real headless Chromium: pages of one browser context share
// Web Locks and BroadcastChannel, like the tabs of one browser profile. Only
// one connection per client is held (the server's presence says so), and each
// tab dispatches every message exactly once across the leader tab's close and
// a reload.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Server, mintToken, sleep, waitFor } = require('../../../tests/support/server.cjs');
const { launch, openTestPage } = require('../lib/browser.js');
const { bufferingProxy } = require('../lib/proxy.js');

let browser;
const cleanups = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

async function newServer(env) {
  const s = await new Server(env).start();
  cleanups.push(async () => { await s.stop(); s.cleanup(); });
  return s;
}

let seq = 0;
const cid = (n) => `${n}-${process.pid}-${++seq}`;

async function presence(s, id) {
  const r = await fetch(`${s.ingestUrl}/clients/${encodeURIComponent(id)}`);
  if (r.status === 404) return { open_polls: 0 };
  assert.equal(r.status, 200);
  return r.json();
}

/** Samples the client's open connections for `ms`: the most seen at once, and the last. */
async function connections(s, id, ms = 1500) {
  let max = 0;
  let last = 0;
  const until = Date.now() + ms;
  while (Date.now() < until) {
    last = (await presence(s, id)).open_polls;
    max = Math.max(max, last);
    await sleep(50);
  }
  return { max, last };
}

const texts = (p) => p.evaluate(() => T.messages.map((m) => m.data.n));
const roles = (pages) => Promise.all(pages.map((p) => p.evaluate(() => cb.role)));
async function waitMessages(page, n, timeout = 15000) {
  await page.waitForFunction((k) => T.messages.length >= k, n, { timeout, polling: 50 });
}
async function waitOneLeader(pages) {
  await waitFor(async () => {
    const r = await roles(pages);
    return r.filter((x) => x === 'leader').length === 1 && r.filter((x) => x === 'follower').length === pages.length - 1;
  }, { timeout: 15000, what: 'one leader and the rest followers: ' + (await roles(pages)).join(',') });
  const r = await roles(pages);
  return pages[r.indexOf('leader')];
}
/** Until every follower has caught up by itself: its ?timeout=0 polls are
 *  connections of this client too, short but countable, and then it holds none. */
async function waitCaughtUp(pages) {
  await waitFor(async () => {
    const busy = await Promise.all(pages.map((p) => p.evaluate(() => cb.role === 'follower' && cb._catchingUp)));
    return !busy.some(Boolean);
  }, { timeout: 15000, what: 'every follower caught up' });
}
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
async function sendRange(s, id, a, b) { for (let n = a; n <= b; n++) await s.send(id, { n }, 'tick'); }

for (const transport of ['ws', 'sse', 'poll']) test(`three tabs of one client (${transport}): one connection; the leader closed, a reload; nothing lost, nothing twice`, async () => {
  const s = await newServer();
  // 'auto' picks the WebSocket against this server; 'sse' and 'poll' are forced.
  const opts = transport === 'ws' ? {} : { transport };
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const id = cid('tabs');
  const token = mintToken(id);
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const p = await openTestPage(ctx, s.publicUrl);
    await p.evaluate(([u, t, o]) => boot(u, { token: t, ...o }), [s.publicUrl, token, opts]);
    pages.push(p);
  }
  let leader = await waitOneLeader(pages);
  await waitCaughtUp(pages);
  await waitFor(async () => (await presence(s, id)).open_polls === 1, { timeout: 10000, what: 'one open connection' });
  const c1 = await connections(s, id);
  assert.ok(c1.max <= 1, `at most one connection for three tabs, saw ${c1.max}`);

  await sendRange(s, id, 1, 5);
  for (const p of pages) await waitMessages(p, 5);
  for (const p of pages) assert.deepEqual(await texts(p), range(1, 5));
  for (const p of pages) assert.equal(await p.evaluate(() => cb.state), 'connected');

  // The leader tab goes away; messages are sent while another tab takes over.
  const rest = pages.filter((p) => p !== leader);
  await leader.close();
  await sendRange(s, id, 6, 10);
  leader = await waitOneLeader(rest);
  for (const p of rest) await waitMessages(p, 10);
  await sleep(500); // anything delivered twice would show by now
  for (const p of rest) assert.deepEqual(await texts(p), range(1, 10));
  await waitFor(async () => (await presence(s, id)).open_polls === 1, { timeout: 10000, what: 'one open connection after the takeover' });

  // The new leader reloads: the other tab takes over; what is sent meanwhile
  // reaches the reloaded tab from its own remembered cursor, once.
  const other = rest.find((p) => p !== leader);
  await leader.reload();
  await leader.waitForFunction(() => typeof window.boot === 'function');
  await sendRange(s, id, 11, 13);
  await leader.evaluate(([u, t, o]) => boot(u, { token: t, ...o }), [s.publicUrl, token, opts]);
  const newLeader = await waitOneLeader([leader, other]);
  assert.equal(newLeader, other, 'the tab that stayed took over');
  await waitMessages(leader, 3);
  await sendRange(s, id, 14, 15);
  await waitMessages(leader, 5);
  await waitMessages(other, 15);
  await sleep(500);
  assert.deepEqual(await texts(leader), range(11, 15), 'the reloaded tab: what it missed, then the live ones, once');
  assert.deepEqual(await texts(other), range(1, 15));
  const c2 = await connections(s, id);
  assert.ok(c2.max <= 1, `at most one connection for two tabs, saw ${c2.max}`);
  for (const p of [leader, other]) assert.deepEqual(await p.evaluate(() => T.errors), []);
  // The leader used the transport asked for ('auto' chose the WebSocket).
  assert.equal(await other.evaluate(() => cb.transport), transport);
});

test('shareTabs: false: every tab holds its own connection', async () => {
  const s = await newServer();
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const id = cid('alone');
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const p = await openTestPage(ctx, s.publicUrl);
    await p.evaluate(([u, t]) => boot(u, { token: t, shareTabs: false }), [s.publicUrl, mintToken(id)]);
    pages.push(p);
  }
  assert.deepEqual(await roles(pages), ['solo', 'solo']);
  await waitFor(async () => (await presence(s, id)).open_polls === 2, { timeout: 10000, what: 'two open connections' });
  await sendRange(s, id, 1, 3);
  for (const p of pages) { await waitMessages(p, 3); assert.deepEqual(await texts(p), range(1, 3)); }
});

test('tabs of two different clients in one browser do not share', async () => {
  const s = await newServer();
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const ids = [cid('ann'), cid('ben')];
  const pages = [];
  for (const id of ids) {
    const p = await openTestPage(ctx, s.publicUrl);
    await p.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, mintToken(id)]);
    pages.push(p);
  }
  await waitFor(async () => (await roles(pages)).every((r) => r === 'leader'), { timeout: 10000, what: 'two leaders' });
  await s.send(ids[0], { n: 1 }, 'tick');
  await s.send(ids[1], { n: 2 }, 'tick');
  await waitMessages(pages[0], 1);
  await waitMessages(pages[1], 1);
  await sleep(300);
  assert.deepEqual(await texts(pages[0]), [1]);
  assert.deepEqual(await texts(pages[1]), [2]);
});

test('through a proxy that buffers responses, the page falls back to long-poll by itself', async () => {
  const s = await newServer();
  const proxy = await bufferingProxy(s.publicUrl);
  cleanups.push(() => proxy.close());
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const id = cid('proxied');
  const page = await openTestPage(ctx, proxy.url);
  await page.evaluate(([u, t]) => boot(u, { token: t, streamProbeTimeout: 1500 }), [proxy.url, mintToken(id)]);
  await page.waitForFunction(() => cb.transport === 'poll', null, { timeout: 15000, polling: 50 });
  assert.equal(await page.evaluate(() => cb.fallbackReason), 'buffered');
  await sendRange(s, id, 1, 2);
  await waitMessages(page, 2);
  assert.deepEqual(await texts(page), [1, 2]);
  assert.deepEqual(await page.evaluate(() => T.errors), []);
});

test('messages sent without pause while the leader closes and the next leader reloads: each tab gets each once, in order', async () => {
  const s = await newServer();
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const id = cid('burst');
  const token = mintToken(id);
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const p = await openTestPage(ctx, s.publicUrl);
    await p.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, token]);
    pages.push(p);
  }
  let leader = await waitOneLeader(pages);
  const N = 60;
  let sent = 0;
  const sender = (async () => { while (sent < N) { sent++; await s.send(id, { n: sent }, 'tick'); await sleep(15); } })();
  await waitFor(() => sent >= 10, { what: '10 sent' });
  const rest = pages.filter((p) => p !== leader);
  await leader.close();
  leader = await waitOneLeader(rest);
  await waitFor(() => sent >= 35, { what: '35 sent' });
  await leader.reload();
  await leader.waitForFunction(() => typeof window.boot === 'function');
  // What the tab had dispatched when it went: its remembered cursor.
  const stored = await leader.evaluate(([k]) => sessionStorage.getItem(k), [`cometbox:cursor:${s.publicUrl}#${id}`]);
  await leader.evaluate(([u, t]) => boot(u, { token: t }), [s.publicUrl, token]);
  await sender;
  const other = rest.find((p) => p !== leader);
  await other.waitForFunction((k) => T.messages.length >= k, N, { timeout: 20000, polling: 50 });
  await leader.waitForFunction((k) => T.messages.length && T.messages[T.messages.length - 1].data.n === k, N, { timeout: 20000, polling: 50 });
  await sleep(500);
  assert.deepEqual(await texts(other), range(1, N), 'the tab that stayed: all, once, in order');
  const ids = await other.evaluate(() => T.messages.map((m) => m.id));
  const resumeAt = stored == null ? 1 : ids.indexOf(stored) + 2; // n of the message after the cursor
  assert.ok(resumeAt >= 2, `the remembered cursor ${stored} is a message id`);
  assert.deepEqual(await texts(leader), range(resumeAt, N), 'the reloaded tab: exactly what followed its cursor, once, in order');
  for (const p of [leader, other]) assert.deepEqual(await p.evaluate(() => T.errors), []);
  await waitFor(async () => (await presence(s, id)).open_polls === 1, { timeout: 10000, what: 'one open connection at the end' });
});

/** A token signed with another secret than the server's (a tab left from a
 *  server that has since been redeployed with a new secret). */
function tokenOfAnotherServer(sub) {
  return mintToken(sub, { secret: 'the-old-secret' });
}

for (const transport of ['ws', 'sse', 'poll']) test(`a leader whose token is refused hands over at once to a tab whose token works (${transport})`, async () => {
  const s = await newServer();
  const opts = transport === 'ws' ? {} : { transport };
  const ctx = await browser.newContext();
  cleanups.push(() => ctx.close());
  const id = cid('stale');
  // The old tab: its token, and every token its getToken() brings, are refused.
  const stale = await openTestPage(ctx, s.publicUrl);
  await stale.exposeFunction('mintToken', (sub) => tokenOfAnotherServer(sub));
  await stale.evaluate(([u, t, o]) => boot(u, { token: t, refresh: true, backoff: { base: 20000, max: 20000 }, ...o }),
    [s.publicUrl, tokenOfAnotherServer(id), opts]);
  await stale.waitForFunction(() => T.tokens >= 1, null, { timeout: 10000, polling: 50 });
  // A new tab of the same client with a good token.
  const fresh = await openTestPage(ctx, s.publicUrl);
  await fresh.evaluate(([u, t, o]) => boot(u, { token: t, ...o }), [s.publicUrl, mintToken(id), opts]);
  await fresh.waitForFunction(() => cb.role === 'leader', null, { timeout: 5000, polling: 50 });
  await waitFor(async () => (await presence(s, id)).open_polls === 1, { timeout: 5000, what: 'the good tab connected' });
  await sendRange(s, id, 1, 3);
  await waitMessages(fresh, 3, 5000);
  assert.deepEqual(await texts(fresh), [1, 2, 3]);
  assert.equal(await fresh.evaluate(() => cb.state), 'connected');
  assert.deepEqual(await fresh.evaluate(() => T.errors), []);
  assert.notEqual(await stale.evaluate(() => cb.role), 'leader', 'the refused tab no longer leads');
});
