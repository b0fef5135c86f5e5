// Smoke test of the installed npm package through import (ES module):
//   node smoke.mjs <expected version>
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import CometBox, { CometBox as Named, CometBoxError, STATES, decodeToken, backoffDelay } from 'cometbox-client';

const expected = process.argv[2];
assert.equal(typeof CometBox, 'function', 'the default export is the class');
assert.equal(Named, CometBox);
assert.equal(CometBox.VERSION, expected);
assert.equal(CometBoxError, CometBox.CometBoxError);
assert.equal(STATES.STOPPED, 'stopped');
if (typeof import.meta.resolve === 'function') {   // Node >= 20 (and 18.19+)
  assert.ok(import.meta.resolve('cometbox-client').endsWith('/node_modules/cometbox-client/cometbox.mjs'));
} else {
  console.log('import: (this Node has no import.meta.resolve; the named exports show cometbox.mjs was loaded)');
}
// one copy of the code whichever way it is loaded
assert.equal(createRequire(import.meta.url)('cometbox-client'), CometBox);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
assert.equal(decodeToken(b64({ alg: 'HS256' }) + '.' + b64({ sub: 'user:7' }) + '.sig').sub, 'user:7');
const d = backoffDelay(1, { base: 1000, max: 30000 }, () => 0);
assert.ok(d >= 500 && d <= 1000, `backoffDelay(1) = ${d}`);
const err = new CometBoxError('network', 'x', 0, false);
assert.equal(err.code, 'network');
const cb = new CometBox('http://127.0.0.1:9', { token: 'a.b.c', storage: null, shareTabs: false, eventTarget: null });
assert.equal(cb.state, 'stopped');
console.log('import: CometBox ' + CometBox.VERSION + ', named exports ok');
