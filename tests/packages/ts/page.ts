// A classic <script> page using the global that cometbox.js defines (type-checked by tests/packages/run-tests.sh).
/// <reference types="cometbox-client" />
const page = new CometBox('/cometbox', { token: 'x' });
page.on('notice', (data) => console.log(data)).start();
