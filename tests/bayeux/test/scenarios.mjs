// What every Bayeux client must be able to do against cometbox, written once
// and run with each npm client (cometd-node.test.mjs, faye.test.mjs). Each
// group starts the real binary on loopback ephemeral ports.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stopAll, mintToken, PollClient, startHookReceiver, waitFor, lossyProxy,
} from '../lib/harness.mjs';

let seq = 0;
/** A client id unique within the run (ids are cometbox client ids). */
const uid = (who) => `${who}-${process.pid}-${++seq}`;

/**
 * `make(url, opts)` builds a client (lib/clients.mjs, lib/chromium.mjs);
 * `opts.name` names it in failures. `serverOptions` go to every
 * startServer() (a browser's page origin in `corsOrigins`).
 */
export function scenarios(label, make, serverOptions = {}) {
  const open = [];
  const client = (url, name, opts = {}) => { const c = make(url, { name: `${label}:${name}`, ...opts }); open.push(c); return c; };
  const closeAll = async () => { while (open.length) await open.pop().disconnect().catch(() => {}); };

  /** A client handshaken with a token for `who` (grants as given). */
  async function connected(server, who, grants = { channels: ['/chat/*'] }, opts = {}) {
    const token = await mintToken(server, who, grants);
    const c = client(server.bayeuxUrl, who, opts);
    const reply = await c.handshake({ cometbox: { token } });
    assert.equal(reply.successful, true, `${who}: handshake refused: ${JSON.stringify(reply)}`);
    return c;
  }

  /**
   * A refused handshake must tell the client not to try again
   * (`advice.reconnect: "none"`, as CometD's own server does): otherwise
   * both libraries handshake again in a loop (Faye every `retry` seconds,
   * forever), each time asking the connect hook.
   */
  function refusedForGood(reply) {
    assert.equal(reply.advice && reply.advice.reconnect, 'none', 'a refused handshake advises reconnect "none": ' + JSON.stringify(reply));
  }

  async function subscribed(c, channel) {
    const reply = await c.subscribe(channel);
    assert.equal(reply.successful, true, `${c.name}: subscribe ${channel} refused: ${JSON.stringify(reply)}`);
  }

  describe(`${label}: with tokens`, () => {
    let server;
    before(async () => { server = await startServer(serverOptions); });
    after(async () => { await closeAll(); await stopAll(server); });

    test('handshake with a token; subscribe; a message from ingest arrives with its id and event', async () => {
      const alice = await connected(server, uid('alice'));
      const hs = alice.handshakeReplies[0];
      assert.equal(typeof hs.clientId, 'string');
      assert.ok(hs.supportedConnectionTypes.includes('long-polling'), JSON.stringify(hs));
      await subscribed(alice, '/chat/demo');
      await server.publish('/chat/demo', { text: 'hello from the backend' }, 'chat');
      await alice.until((r) => r.length >= 1, { what: 'the ingest message' });
      const [m] = alice.received;
      assert.equal(m.channel, '/chat/demo');
      assert.deepEqual(m.data, { text: 'hello from the backend' });
      assert.equal(typeof m.id, 'string');
      assert.equal(m.ext && m.ext.cometbox && m.ext.cometbox.event, 'chat', JSON.stringify(m));
      await waitFor(() => alice.handed.length === 1, { what: "the library's subscription callback" });
      assert.deepEqual(alice.handed[0].data, { text: 'hello from the backend' });
    });

    test('wildcards: /chat/* matches one level, /chat/** every level, and one session gets a message once', async () => {
      const one = await connected(server, uid('one'));
      const all = await connected(server, uid('all'));
      const both = await connected(server, uid('both'));
      await subscribed(one, '/chat/*');
      await subscribed(all, '/chat/**');
      for (const ch of ['/chat/demo', '/chat/*', '/chat/**']) await subscribed(both, ch);

      await server.publish('/chat/room/7', { n: 1 });
      await server.publish('/chat/demo', { n: 2 });
      const wanted = (r) => r.some((m) => m.data.n === 2);
      await one.until(wanted, { what: '/chat/demo through /chat/*' });
      await all.until(wanted, { what: '/chat/demo through /chat/**' });
      await both.until(wanted, { what: '/chat/demo through three subscriptions' });
      // A marker after both, so that nothing else is still on its way.
      await server.publish('/chat/end', { n: 3 });
      for (const c of [one, all, both]) await c.until((r) => r.some((m) => m.data.n === 3), { what: 'the marker' });

      assert.deepEqual(one.received.map((m) => m.data.n), [2, 3], '/chat/* must not match /chat/room/7');
      assert.deepEqual(all.received.map((m) => [m.channel, m.data.n]), [['/chat/room/7', 1], ['/chat/demo', 2], ['/chat/end', 3]]);
      assert.deepEqual(both.received.map((m) => m.data.n), [1, 2, 3], 'each message once, however many subscriptions match');
    });

    test("a message to one client arrives on /cometbox/direct, and the library hands it to the page", async () => {
      const who = uid('dora');
      const dora = await connected(server, who);
      // How each library lets a page receive it (lib/clients.mjs): CometD,
      // a listener (no request); Faye hands out only messages of channels
      // it subscribed to, so its subscribe must be allowed without a grant.
      const reply = await dora.receiveDirect();
      assert.equal(reply.successful, true, `${dora.name}: cannot receive /cometbox/direct: ${JSON.stringify(reply)}`);
      await server.send(who, { text: 'just for you' }, 'notice');
      await dora.until((r) => r.length >= 1, { what: 'the direct message' });
      assert.equal(dora.received[0].channel, '/cometbox/direct');
      assert.deepEqual(dora.received[0].data, { text: 'just for you' });
      await waitFor(() => dora.handed.some((m) => m.data && m.data.text === 'just for you'), { what: "the library's callback" });
    });

    test('two clients publish to each other (token publish grants)', async () => {
      const grants = { channels: ['/chat/*'], publish: ['/chat/*'] };
      const alice = await connected(server, uid('alice'), grants);
      const bob = await connected(server, uid('bob'), grants);
      await subscribed(alice, '/chat/pair');
      await subscribed(bob, '/chat/pair');
      const r1 = await alice.publish('/chat/pair', { from: 'alice', text: 'hi bob' });
      assert.equal(r1.successful, true, JSON.stringify(r1));
      await bob.until((r) => r.some((m) => m.data.text === 'hi bob'), { what: "alice's publish" });
      const r2 = await bob.publish('/chat/pair', { from: 'bob', text: 'hi alice' });
      assert.equal(r2.successful, true, JSON.stringify(r2));
      await alice.until((r) => r.some((m) => m.data.text === 'hi alice'), { what: "bob's publish" });
      const m = bob.received.find((x) => x.data.text === 'hi bob');
      assert.equal(m.channel, '/chat/pair');
      assert.equal(typeof m.id, 'string');
    });

    test('refused: a subscribe outside the grants, a publish without a publish grant, a handshake without a token', async () => {
      const eve = await connected(server, uid('eve'), { channels: ['/chat/*'] });
      const sub = await eve.subscribe('/admin/logs');
      assert.equal(sub.successful, false);
      assert.match(String(sub.error), /^403:/);
      const pub = await eve.publish('/chat/demo', { text: 'no grant to publish' });
      assert.equal(pub.successful, false, JSON.stringify(pub));
      assert.match(String(pub.error), /^403:/);

      const anon = client(server.bayeuxUrl, 'anonymous');
      const hs = await anon.handshake({});
      assert.equal(hs.successful, false, JSON.stringify(hs));
      refusedForGood(hs);
      await anon.disconnect();
    });

    test('/poll and Bayeux clients share channels both ways', async () => {
      const pollWho = uid('poller');
      const poller = new PollClient(server, await mintToken(server, pollWho, { channels: ['/chat/*'] }), ['/chat/mixed']);
      await poller.next(0); // subscribes it to /chat/mixed
      const bay = await connected(server, uid('bay'), { channels: ['/chat/*'], publish: ['/chat/mixed'] });
      await subscribed(bay, '/chat/mixed');

      const pub = await bay.publish('/chat/mixed', { text: 'from bayeux' });
      assert.equal(pub.successful, true, JSON.stringify(pub));
      await poller.until((r) => r.some((m) => m.data && m.data.text === 'from bayeux'), { what: 'the Bayeux publish on /poll' });

      await server.publish('/chat/mixed', { text: 'from ingest' }, 'chat');
      await poller.until((r) => r.some((m) => m.data && m.data.text === 'from ingest'), { what: 'the ingest message on /poll' });
      await bay.until((r) => r.some((m) => m.data.text === 'from ingest'), { what: 'the ingest message on Bayeux' });
      const viaPoll = poller.received.find((m) => m.data.text === 'from bayeux');
      assert.equal(viaPoll.channel, '/chat/mixed');
    });

    test("with the library's default transports (websocket first) it falls back to long-polling", async () => {
      const wsy = await connected(server, uid('wsy'), { channels: ['/chat/*'] }, { websocket: true });
      await subscribed(wsy, '/chat/ws');
      await server.publish('/chat/ws', { text: 'over long-polling' });
      await wsy.until((r) => r.some((m) => m.data.text === 'over long-polling'), { what: 'a message after the fallback' });
    });
  });

  describe(`${label}: with hooks (php -S, CometBox\\Hooks)`, () => {
    let server, hook;
    before(async () => {
      hook = await startHookReceiver();
      server = await startServer({ ...serverOptions, hooks: hook });
    });
    after(async () => { await closeAll(); await stopAll(server, hook); });

    test('the connect hook decides a handshake without a token, and sees its ext', async () => {
      const guest = client(server.bayeuxUrl, 'guest');
      const ok = await guest.handshake({ test: { hello: label } });
      assert.equal(ok.successful, true, JSON.stringify(ok));
      await waitFor(() => hook.events().some((e) => e.type === 'connect' && e.ext && e.ext.test && e.ext.test.hello === label),
        { what: 'the connect hook with the handshake ext' });

      const denied = client(server.bayeuxUrl, 'denied');
      const no = await denied.handshake({ test: { deny: 'no guests today' } });
      assert.equal(no.successful, false, JSON.stringify(no));
      assert.match(JSON.stringify(no), /no guests today/);
      refusedForGood(no);
      await denied.disconnect();
    });

    test('subscribe and publish denied by the hook carry its reason; allowed ones go through', async () => {
      const ann = await connected(server, uid('ann'), { channels: ['/chat/*'] });
      const ben = await connected(server, uid('ben'), { channels: ['/chat/*'] });
      const sub = await ann.subscribe('/chat/secret');
      assert.equal(sub.successful, false);
      assert.match(String(sub.error), /^403:.*secret room/);
      await subscribed(ann, '/chat/open');
      await subscribed(ben, '/chat/open');

      // No publish claim in the tokens: the publish hook decides.
      const no = await ben.publish('/chat/open', { text: 'a forbidden thing' });
      assert.equal(no.successful, false);
      assert.match(String(no.error), /^403:.*forbidden word/);
      const yes = await ben.publish('/chat/open', { text: 'a fine thing' });
      assert.equal(yes.successful, true, JSON.stringify(yes));
      await ann.until((r) => r.some((m) => m.data.text === 'a fine thing'), { what: 'the allowed publish' });
      assert.ok(!ann.received.some((m) => /forbidden/.test(m.data.text)), 'a denied publish must not be delivered');
    });

    test('a publish to /service/** reaches the hook only', async () => {
      const carl = await connected(server, uid('carl'), { channels: ['/chat/*'] });
      const watcher = await connected(server, uid('watcher'), { channels: ['/chat/*', '/service/*'] });
      await subscribed(watcher, '/chat/**');
      await watcher.subscribe('/service/echo'); // allowed or not: nothing may arrive there
      const reply = await carl.publish('/service/echo', { text: 'for the backend', tag: label });
      assert.equal(reply.successful, true, JSON.stringify(reply));
      await waitFor(() => hook.events().some((e) => e.type === 'publish' && e.channel === '/service/echo' && e.data && e.data.tag === label),
        { what: 'the /service publish at the hook' });
      await server.publish('/chat/after', { text: 'marker' });
      await watcher.until((r) => r.some((m) => m.data.text === 'marker'), { what: 'the marker' });
      assert.deepEqual(watcher.received.map((m) => m.channel), ['/chat/after'], 'a /service publish is never broadcast');
      assert.ok(!carl.received.length, 'nor echoed to its sender');
    });
  });

  describe(`${label}: a restart of the memory store`, () => {
    let server;
    before(async () => { server = await startServer(serverOptions); });
    after(async () => { await closeAll(); await stopAll(server); });

    test('402::session_unknown: the client handshakes again by itself and receives again', async () => {
      const rita = await connected(server, uid('rita'));
      await subscribed(rita, '/chat/restart');
      await server.publish('/chat/restart', { n: 1 });
      await rita.until((r) => r.some((m) => m.data.n === 1), { what: 'the message before the restart' });

      await server.restart();
      await waitFor(() => rita.handshakes >= 2, { timeout: 30000, what: `${label} to handshake again` });
      assert.ok(rita.metas.some((m) => m.channel === '/meta/connect' && m.successful === false && /^402::session_unknown/.test(m.error)),
        'the server said 402::session_unknown: ' + JSON.stringify(rita.metas.filter((m) => !m.successful)));
      // The subscription is renewed after the new handshake (by the application for CometD, by Faye itself).
      const renewed = () => {
        const i = rita.metas.findLastIndex((m) => m.channel === '/meta/handshake' && m.successful);
        return rita.metas.slice(i).some((m) => m.channel === '/meta/subscribe' && m.successful);
      };
      await waitFor(renewed, { timeout: 15000, what: 'the subscription renewed' });
      await server.publish('/chat/restart', { n: 2 });
      await rita.until((r) => r.some((m) => m.data.n === 2), { what: 'a message after the restart' });
      await waitFor(() => rita.handed.some((m) => m.data.n === 2), { what: "the message after the restart in the page's callback" });
    });
  });
}

/**
 * CometD's AckExtension (`make(url, {ack: true})`): a message in a
 * /meta/connect reply lost on the way (lib/harness.mjs lossyProxy) is sent
 * again and arrives once.
 */
export function ackScenario(label, make, serverOptions = {}) {
  describe(`${label}: AckExtension`, () => {
    let server, proxy, c;
    before(async () => {
      server = await startServer(serverOptions);
      proxy = await lossyProxy(server.publicAddr);
    });
    after(async () => { if (c) await c.disconnect(); await stopAll(proxy, server); });

    test('a message in a /meta/connect reply that is lost on the way still arrives', async () => {
      const token = await mintToken(server, uid('acker'), { channels: ['/chat/*'] });
      c = make(proxy.url + '/bayeux', { name: `${label}:acker`, ack: true });
      const hs = await c.handshake({ cometbox: { token } });
      assert.equal(hs.successful, true, JSON.stringify(hs));
      assert.ok(hs.ext && hs.ext.ack, 'the handshake reply enables the ack extension: ' + JSON.stringify(hs));
      assert.equal((await c.subscribe('/chat/ack')).successful, true);
      await server.publish('/chat/ack', { n: 1 });
      await c.until((r) => r.some((m) => m.data.n === 1), { what: 'the first message' });

      // From now on every reply is lost: the held /meta/connect answers with
      // message 2, and that answer never reaches the client.
      proxy.cut();
      await server.publish('/chat/ack', { n: 2 });
      await waitFor(() => proxy.swallowed.some((s) => s.text.includes('"n":2')), { timeout: 15000, what: 'a reply carrying message 2 to be lost' });
      proxy.restore();
      await c.until((r) => r.some((m) => m.data.n === 2), { timeout: 20000, what: 'message 2 after the lost reply' });
      await server.publish('/chat/ack', { n: 3 });
      await c.until((r) => r.some((m) => m.data.n === 3), { what: 'message 3' });
      assert.deepEqual(c.received.map((m) => m.data.n), [1, 2, 3], 'each message once, in order');
    });
  });
}
