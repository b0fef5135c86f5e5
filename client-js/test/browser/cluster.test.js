'use strict';
// cometbox.js in headless Chromium against two cometbox nodes on one Redis, behind
// nginx with the deploy kit's snippets (test/lib/cluster.js). One node is SIGKILLed
// while a backend posts continuously: the page keeps receiving, every acknowledged
// message exactly once and in order, no reset, no error. Once with long-poll, once
// with Server-Sent Events. Loopback only.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { mintToken, waitFor, sleep } = require('../../../tests/support/server.cjs');
const { launch, openTestPage } = require('../lib/browser.js');
const { Cluster } = require('../lib/cluster.js');

let browser;
const cleanups = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  for (const f of cleanups.reverse()) { try { await f(); } catch (e) { /* keep cleaning */ } }
  if (browser) await browser.close();
});

for (const transport of ['poll', 'sse', 'ws']) {
  test(`a page through nginx loses nothing when one of two nodes is SIGKILLed (${transport})`, async () => {
    // For 'ws', the shipped snippet passes the upgrade of /cometbox/ws on.
    const c = await new Cluster(2).start();
    cleanups.push(() => c.stop());
    const ctx = await browser.newContext();
    cleanups.push(() => ctx.close());
    const page = await openTestPage(ctx, c.origin, '/cometbox');
    const id = `page-${transport}-${process.pid}`;
    await page.evaluate(([u, t, tr]) => boot(u, { token: t, transport: tr, backoff: { base: 200, max: 1000 } }),
      [c.url, mintToken(id), transport]);
    await page.waitForFunction(() => cb.state === 'connected', null, { timeout: 15000, polling: 50 });
    assert.equal(await page.evaluate(() => cb.transport), transport);

    // A backend posts {n} to the nodes' ingest ports in turn, one after the other;
    // a post that fails (the killed node) is not acknowledged.
    const acked = [];
    let posting = true;
    let n = 0;
    const poster = (async () => {
      while (posting) {
        n += 1;
        const node = c.nodes[n % 2];
        try {
          await node.send(id, { n });
          acked.push(n);
        } catch (e) { /* not acknowledged */ }
        await sleep(10);
      }
    })();
    await waitFor(() => acked.length >= 60, { timeout: 20000, what: '60 posts acknowledged' });

    // Kill the node that holds the page's poll or stream right now.
    let victim = -1;
    await waitFor(async () => {
      victim = (await c.openPolls()).findIndex((o) => o > 0);
      return victim >= 0;
    }, { timeout: 10000, what: "the page's poll held on a node" });
    const killedAddr = c.nodes[victim].publicAddr;
    const ackedAtKill = acked.length;
    await c.nodes[victim].kill9();
    await waitFor(() => acked.length >= ackedAtKill + 100, { timeout: 30000, what: '100 more posts acknowledged' });
    posting = false;
    await poster;

    const last = acked[acked.length - 1];
    await page.waitForFunction((max) => T.messages.some((m) => m.data.n === max), last, { timeout: 20000, polling: 50 });
    const got = await page.evaluate(() => T.messages.map((m) => m.data.n));
    for (let i = 1; i < got.length; i++) assert.ok(got[i - 1] < got[i], `in order, once each: ${got.join(',')}`);
    const seen = new Set(got);
    const missing = acked.filter((k) => !seen.has(k));
    assert.deepEqual(missing, [], 'every acknowledged message arrived');
    assert.ok(got.every((k) => k >= 1 && k <= n), 'only posted messages');
    assert.deepEqual(await page.evaluate(() => T.resets), [], 'no reset');
    assert.deepEqual(await page.evaluate(() => T.errors), [], 'no error reported to the page');
    assert.equal(await page.evaluate(() => cb.state), 'connected');

    // nginx sent the page's requests to both nodes: the killed one before, the other
    // after (nginx logs a request when it ends: the stream open now is not logged yet,
    // the survivor counts it).
    const answered = c.accessLog().split('\n').filter((l) => l.includes(`/cometbox/${{ sse: 'events', poll: 'poll', ws: 'ws' }[transport]}`))
      .map((l) => l.split('|')[2] || '');
    const survivor = c.nodes[1 - victim].publicAddr;
    assert.ok(answered.some((a) => a.includes(killedAddr)), answered.join(' / '));
    const open = await c.openPolls();
    assert.ok(answered.some((a) => a.includes(survivor)) || open[1 - victim] > 0, answered.join(' / '));
    console.log(`${transport}: ${got.length} messages in the page (${acked.length} acknowledged, ${ackedAtKill} before the kill); ` +
      `requests through nginx: ${answered.length}, ${answered.filter((a) => a.includes(',')).length} passed on to the other node`);
  });
}
