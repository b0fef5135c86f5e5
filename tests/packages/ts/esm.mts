// Type-checked by tests/packages/run-tests.sh against the installed package (moduleResolution node16 and bundler).
import CometBox, { CometBoxError, STATES, decodeToken, backoffDelay } from 'cometbox-client';
import type { CometBoxOptions, CometBoxMessage, CometBoxState } from 'cometbox-client';
const options: CometBoxOptions = { token: 'x', transport: 'poll', onError: (e: CometBoxError) => console.log(e.code) };
const cb: CometBox = new CometBox('http://127.0.0.1:8480', options);
const state: CometBoxState = cb.state;
cb.on<{ text: string }>('notice', (data, msg: CometBoxMessage<{ text: string }>) => console.log(data.text, msg.id));
const err: CometBoxError = new CometBoxError('network');
const version: string = CometBox.VERSION;
console.log(state, err.fatal, STATES.CONNECTED, decodeToken('a.b.c'), backoffDelay(1), version);
