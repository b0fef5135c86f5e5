// Type-checked by tests/packages/run-tests.sh against the installed package (moduleResolution node16).
import CometBox = require('cometbox-client');
const options: CometBox.CometBoxOptions = { token: 'x' };
const cb: CometBox = new CometBox('http://127.0.0.1:8480', options);
const err: CometBox.CometBoxError = new CometBox.CometBoxError('network');
const same: typeof CometBox = CometBox.default;
console.log(cb.state, err.code, CometBox.STATES.STOPPED, CometBox.decodeToken('a.b.c'), same.VERSION);
