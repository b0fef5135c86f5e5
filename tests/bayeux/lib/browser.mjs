// Headless Debian Chromium through playwright-core (which never downloads a
// browser), and a static loopback server for test pages and the CometD
// library's ES modules (node_modules/cometd, unchanged).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { HERE } from './harness.mjs';

const require = createRequire(import.meta.url);
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const RESULTS = path.join(HERE, 'test-results');
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`);
  const { chromium } = require('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
}

const COMETD_DIR = path.dirname(require.resolve('cometd/package.json'));
const FAYE_DIR = path.join(path.dirname(require.resolve('faye/package.json')), 'client');

/**
 * A static server on a loopback port: `routes` maps a path to HTML,
 * /cometd/<file>.js serves the npm CometD library's files as they are, and
 * /faye/<file>.js Faye's browser bundle.
 */
export function staticServer(routes) {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      const p = req.url.split('?')[0];
      const lib = /^\/(cometd|faye)\/([A-Za-z0-9-]+\.js)$/.exec(p);
      const file = lib && path.join(lib[1] === 'cometd' ? COMETD_DIR : FAYE_DIR, lib[2]);
      if (file && fs.existsSync(file)) {
        res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
        res.end(fs.readFileSync(file));
      } else if (routes[p] != null) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(routes[p]);
      } else {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found');
      }
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const origin = 'http://127.0.0.1:' + srv.address().port;
      resolve({ origin, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }) });
    });
  });
}
