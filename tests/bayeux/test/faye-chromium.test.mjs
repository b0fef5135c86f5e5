// Faye's browser bundle (npm `faye`, client/faye-browser.js, unchanged) in
// headless Chromium, on a page from another origin: the same scenarios as
// the Node clients (test/scenarios.mjs). Faye chooses its transport itself
// (test/browser.test.mjs checks which).
import { after } from 'node:test';
import { scenarios } from './scenarios.mjs';
import { chromiumClients, FAYE_PAGE } from '../lib/chromium.mjs';
import { launch, staticServer } from '../lib/browser.mjs';

const site = await staticServer({ '/faye.html': FAYE_PAGE });
const browser = await launch();
after(async () => { await browser.close(); await site.close(); });

scenarios('faye-chromium', chromiumClients(browser, site, { path: '/faye.html' }), { corsOrigins: [site.origin] });
