// ES module entry of cometbox.js.
//
// cometbox.js is a classic script (the sidecar serves it as /cometbox.js) that
// also registers the class on the global object under a well-known symbol.
// Importing it for its side effect and re-exporting that class gives ES-module
// users the very same code, with no build step and no second copy to keep in sync.
import './cometbox.js';

const CometBox = globalThis[Symbol.for('cometbox.CometBox')];
if (typeof CometBox !== 'function') {
  throw new Error('cometbox.mjs: cometbox.js did not load');
}

export const CometBoxError = CometBox.CometBoxError;
export const STATES = CometBox.STATES;
export const decodeToken = CometBox.decodeToken;
export const backoffDelay = CometBox.backoffDelay;
export { CometBox };
export default CometBox;
