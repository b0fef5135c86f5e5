'use strict';
// Issue #26: "tabs of one browser showed each message twice" when a FRESH tab
// (no cursor in its sessionStorage) joined a running tab with tab sharing on.
// One browser context (tabs of one profile share Web Locks and
// BroadcastChannel), a first tab running, messages retained for the client,
// then fresh tabs opened while bursts of new messages arrive: one fresh tab,
// then two at once, then the first tab closed mid-burst (a newer tab takes
// over). On every transport, with and without `channels`. Every tab must show
// every message exactly once, in order: a fresh tab shows what the server
// retains for the client (here everything sent) and then what comes next,
// never a message twice. This did not reproduce the report, neither on this
// code nor on the code before the follower fix of test/unit/tabs.test.js; it
// pins the behaviour that client-js/README.md ("A fresh tab") describes.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Server, mintToken, sleep, waitFor } = require('../../../tests/support/server.cjs');
const { launch, openTestPage } = require('../lib/browser.js');

let browser;
const cleanups = [];

before(async () => { browser = await launch(); });
after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

let seq = 0;
const cid = (n) => `${n}-${process.pid}-${++seq}`;
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const texts = (p) => p.evaluate(() => T.messages.map((m) => m.data.n));
const roles = (pages) => Promise.all(pages.map((p) => p.evaluate(() => cb.role)));

/** The n values a tab shows more than once. */
function doubles(list) {
  const seen = new Set();
  const twice = [];
  for (const n of list) { if (seen.has(n)) twice.push(n); seen.add(n); }
  return twice;
}

for (const transport of ['ws', 'sse', 'poll']) {
  for (const withChannels of [false, true]) {
    test(`fresh tabs join a running tab (${transport}${withChannels ? ', channels' : ''}) during bursts: each message once per tab`, async () => {
      const s = await new Server().start();
      cleanups.push(async () => { await s.stop(); s.cleanup(); });
      const ctx = await browser.newContext();
      cleanups.push(() => ctx.close());
      const id = cid('fresh');
      const channel = 'room-' + id;
      const token = withChannels ? mintToken(id, { channels: [channel] }) : mintToken(id);
      // 'auto' picks the WebSocket here; 'sse' and 'poll' are forced.
      const opts = { token, ...(transport === 'ws' ? {} : { transport }), ...(withChannels ? { channels: [channel] } : {}) };
      // Direct messages to the client, or publications on its channel.
      const send = (n) => (withChannels ? s.publish(channel, { n }, 'tick') : s.send(id, { n }, 'tick'));
      const boot = (p) => p.evaluate(([u, o]) => boot(u, o), [s.publicUrl, opts]);

      // Retained for the client before any tab exists: the first tab is fresh too.
      if (!withChannels) for (const n of range(1, 5)) await send(n);
      let sent = withChannels ? 0 : 5;
      const first = await openTestPage(ctx, s.publicUrl);
      await boot(first);
      await first.waitForFunction(() => cb.role === 'leader' && cb.state === 'connected', null, { timeout: 15000, polling: 50 });
      if (withChannels) await sleep(300); // the leader's connection has subscribed the client
      while (sent < 10) { sent++; await send(sent); }
      await first.waitForFunction(() => T.messages.length >= 10, null, { timeout: 15000, polling: 50 });

      // Bursts go on while fresh tabs open: one, then two at once; then the
      // leader closes during a burst and a fresh tab may take over.
      const N = 100;
      const sender = (async () => {
        while (sent < N) { sent++; await send(sent); await sleep(sent % 10 === 0 ? 120 : 5); }
      })();
      const pages = [first];
      await waitFor(() => sent >= 20, { what: '20 sent', timeout: 15000 });
      const second = await openTestPage(ctx, s.publicUrl);
      await boot(second);
      pages.push(second);
      await waitFor(() => sent >= 40, { what: '40 sent', timeout: 15000 });
      const [third, fourth] = await Promise.all([openTestPage(ctx, s.publicUrl), openTestPage(ctx, s.publicUrl)]);
      await Promise.all([boot(third), boot(fourth)]);
      pages.push(third, fourth);
      await waitFor(() => sent >= 70, { what: '70 sent', timeout: 15000 });
      // The first tab goes while the two newest may still be catching up.
      const firstTransport = await first.evaluate(() => cb.transport);
      await first.close();
      pages.shift();
      await sender;
      await waitFor(async () => { const r = await roles(pages); return r.filter((x) => x === 'leader').length === 1 && r.filter((x) => x === 'follower').length === pages.length - 1; },
        { timeout: 15000, what: 'one leader, the rest followers' });
      // A quieter last burst once every tab is settled.
      for (const n of range(N + 1, N + 10)) await send(n);
      const total = N + 10;
      for (const p of pages) {
        await p.waitForFunction((k) => T.messages.length && T.messages[T.messages.length - 1].data.n === k, total, { timeout: 20000, polling: 50 })
          .catch(() => {});
      }
      await sleep(800); // anything delivered twice would show by now
      for (const [i, p] of pages.entries()) {
        const got = await texts(p);
        assert.deepEqual(doubles(got), [], `tab ${i + 2} showed these twice: ${doubles(got).join(',')}\n${p.logs.join('\n')}`);
        assert.deepEqual(got, range(1, total), `tab ${i + 2}: every message once, in order (a fresh tab: everything retained, then the rest)`);
        assert.deepEqual(await p.evaluate(() => T.errors), [], `tab ${i + 2} had no error`);
      }
      assert.equal(firstTransport, transport);
    });
  }
}
