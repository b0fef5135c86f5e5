// CometD's JavaScript library (npm `cometd`, unchanged) in headless
// Chromium, on a page from another origin: the same scenarios as CometD and
// Faye in Node (test/scenarios.mjs), each client in its own browser context,
// and the AckExtension across a lost reply (long-polling and callback-polling).
import { after } from 'node:test';
import { scenarios, ackScenario } from './scenarios.mjs';
import { chromiumClients, CLIENT_PAGE } from '../lib/chromium.mjs';
import { launch, staticServer } from '../lib/browser.mjs';

const site = await staticServer({ '/client.html': CLIENT_PAGE });
const browser = await launch();
after(async () => { await browser.close(); await site.close(); });

const make = chromiumClients(browser, site);
scenarios('cometd-chromium', make, { corsOrigins: [site.origin] });
ackScenario('cometd-chromium', make, { corsOrigins: [site.origin] });
// A reply lost over JSONP (a <script> that fails) too. (All the scenarios
// pass over callback-polling as well; run here only for the lost reply, to
// keep the suite's time down.)
ackScenario('cometd-chromium callback-polling', chromiumClients(browser, site, { only: 'callback-polling' }), { corsOrigins: [site.origin] });
