// CometD (npm `cometd` + `cometd-nodejs-client`, unchanged) in Node against
// the real cometbox binary: the shared scenarios, and the AckExtension.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { scenarios } from './scenarios.mjs';
import { cometdClient } from '../lib/clients.mjs';
import { startServer, stopAll, mintToken, lossyProxy, waitFor } from '../lib/harness.mjs';

scenarios('cometd', cometdClient);

describe('cometd: AckExtension', () => {
  let server, proxy, c;
  before(async () => {
    server = await startServer();
    proxy = await lossyProxy(server.publicAddr);
  });
  after(async () => { if (c) await c.disconnect(); await stopAll(proxy, server); });

  test('a message in a /meta/connect reply that is lost on the way still arrives', async () => {
    const token = await mintToken(server, 'acker-' + process.pid, { channels: ['/chat/*'] });
    c = cometdClient(proxy.url + '/bayeux', { name: 'cometd:acker', ack: true });
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
