'use strict';
// Smoke test of the installed npm package through require() (CommonJS):
//   node smoke.cjs <expected version>
// Run from a project where `npm install cometbox-client-<v>.tgz` was done.
// One long-poll reply is served by an injected fetch (no server needed) and
// must reach the on('notice') handler.
const assert = require('node:assert/strict');
const CometBox = require('cometbox-client');

const expected = process.argv[2];
assert.equal(typeof CometBox, 'function', 'require() gives the class');
assert.equal(CometBox.VERSION, expected, 'CometBox.VERSION is the package version');
assert.equal(CometBox.default, CometBox);
assert.equal(require('cometbox-client/package.json').version, expected);
assert.ok(require.resolve('cometbox-client').endsWith('/node_modules/cometbox-client/cometbox.js'));

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const token = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64({ sub: 'user:42', exp: Math.floor(Date.now() / 1000) + 60 }) + '.sig';
assert.equal(CometBox.decodeToken(token).sub, 'user:42');

const urls = [];
const fetch = (url, init) => {
  urls.push(url);
  if (urls.length === 1) {
    const reply = { cursor: 'c-1', messages: [{ id: 'c-1', event: 'notice', data: { text: 'hi' }, ts: 1 }] };
    return Promise.resolve(new Response(JSON.stringify(reply), { status: 200, headers: { 'Content-Type': 'application/json' } }));
  }
  return new Promise((resolve, reject) => init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))));
};
const cb = new CometBox('http://127.0.0.1:9', { token, transport: 'poll', shareTabs: false, storage: null, eventTarget: null, fetch });
assert.equal(cb.state, 'stopped');
assert.equal(cb.clientId, 'user:42');
const timer = setTimeout(() => { console.error('no message dispatched within 5 s'); process.exit(1); }, 5000);
cb.on('notice', (data, msg) => {
  assert.deepEqual(data, { text: 'hi' });
  assert.equal(msg.id, 'c-1');
  setImmediate(() => {
    assert.equal(cb.cursor, 'c-1');
    assert.match(urls[0], /^http:\/\/127\.0\.0\.1:9\/poll\b/);
    cb.stop();
    clearTimeout(timer);
    console.log('require: CometBox ' + CometBox.VERSION + ' dispatched ' + JSON.stringify(data));
  });
});
cb.start();
