// Type declarations for cometbox.mjs (the ES-module entry: `import CometBox from
// 'cometbox-client'`). The declarations themselves are in cometbox.d.ts (the
// CommonJS form); this file re-exports them as the module's named exports.
import CometBox from './cometbox.js';

export default CometBox;
export { CometBox };

export declare const CometBoxError: typeof CometBox.CometBoxError;
export type CometBoxError = CometBox.CometBoxError;
export declare const STATES: typeof CometBox.STATES;
export declare const decodeToken: typeof CometBox.decodeToken;
export declare const backoffDelay: typeof CometBox.backoffDelay;

export type CometBoxMessage<T = unknown> = CometBox.CometBoxMessage<T>;
export type CometBoxState = CometBox.CometBoxState;
export type StateChangeDetail = CometBox.StateChangeDetail;
export type ResetInfo<T = unknown> = CometBox.ResetInfo<T>;
export type GetTokenContext = CometBox.GetTokenContext;
export type CometBoxOptions = CometBox.CometBoxOptions;
