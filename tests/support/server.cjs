'use strict';
// The real cometbox binary for the JavaScript suites, and the waits they
// share: client-js's tests (test/*, test/lib/cluster.js), the Bayeux suite
// (tests/bayeux/lib/harness.mjs) and the Pusher suite (tests/pusher/test).
// CommonJS with no dependencies outside Node itself, so that client-js
// require()s it and the .mjs suites import it (`import support from
// '.../server.cjs'`) without a node_modules of its own.
//
// It owns: where the binary is ($COMETBOX_BIN, else target/debug/cometbox),
// starting it on loopback port 0 with --ready-file (the ready file reports
// the bound ports and must name our child's pid; a child that exits during
// start-up fails the start at once with its log), restarting it on the same
// ports, stopping it by pid, waitFor/sleep, HS256 token minting as a backend
// would, and ingest calls. Every wait is bounded.
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
const BIN = process.env.COMETBOX_BIN || path.join(REPO, 'target', 'debug', 'cometbox');
const SECRET = 'client-js-test-secret';

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function b64url(x) { return Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url'); }

/** An HS256 JWT signed with the test secret, or `secret` (as a backend
 * minting locally would). */
function mintToken(sub, { ttl = 3600, channels, exp, secret = SECRET } = {}) {
  const claims = { sub, exp: exp != null ? exp : Math.floor(Date.now() / 1000) + ttl };
  if (channels) claims.channels = channels;
  const head = b64url({ alg: 'HS256', typ: 'JWT' }) + '.' + b64url(claims);
  return head + '.' + crypto.createHmac('sha256', secret).update(head).digest('base64url');
}

function xmlEscape(s) {
  return String(s).replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' }[c]));
}

class Server {
  /** `env`: COMETBOX_* settings over the defaults (test secret, 2 s poll
   * timeout); `bin`: another binary than BIN. */
  constructor(env = {}, { publicPort = 0, ingestPort = 0, config = null, bin = BIN } = {}) {
    this.bin = bin;
    this.extraEnv = env;
    this.config = config; // TOML text for --config (optional)
    this.publicPort = publicPort;
    this.ingestPort = ingestPort;
    this.proc = null;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-js-test-'));
    this.log = '';
  }

  get publicUrl() { return 'http://' + this.publicAddr; }
  get ingestUrl() { return 'http://' + this.ingestAddr; }

  async start(timeoutMs = 15000) {
    if (!fs.existsSync(this.bin)) throw new Error('cometbox binary not found at ' + this.bin + ' (set COMETBOX_BIN or run cargo build)');
    const ready = path.join(this.dir, 'ready.json');
    try { fs.unlinkSync(ready); } catch (e) { /* none */ }
    // Only COMETBOX_<SECTION>__<KEY> variables are the server's configuration (an
    // unknown key there is refused); other COMETBOX_* variables such as COMETBOX_BIN
    // are ignored by it (src/config.rs). Inherited COMETBOX_* are still dropped, so
    // that a developer's own COMETBOX_LIMITS__... cannot change what the tests see:
    // the server gets only ours.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^COMETBOX_/i.test(k)));
    const env = {
      ...inherited,
      COMETBOX_PUBLIC__LISTEN: '127.0.0.1:' + this.publicPort,
      COMETBOX_INGEST__LISTEN: '127.0.0.1:' + this.ingestPort,
      COMETBOX_AUTH__SECRET: SECRET,
      COMETBOX_LIMITS__POLL_TIMEOUT: '2s',
      ...this.extraEnv,
    };
    this.log = '';
    const args = ['--ready-file', ready];
    if (this.config != null) {
      const cfg = path.join(this.dir, 'cometbox.toml');
      fs.writeFileSync(cfg, this.config);
      args.push('--config', cfg);
    }
    const proc = spawn(this.bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stdout.on('data', (d) => { this.log += d; });
    proc.stderr.on('data', (d) => { this.log += d; });
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    let exitInfo = null;
    this.exited.then((x) => { exitInfo = x; });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (exitInfo) throw new Error(`cometbox exited early (${JSON.stringify(exitInfo)}):\n${this.log}`);
      let j = null;
      try { j = JSON.parse(fs.readFileSync(ready, 'utf8')); } catch (e) { /* not there yet (it is renamed into place) */ }
      if (j) {
        if (j.pid !== proc.pid) {
          await this.stop();
          throw new Error(`the ready file names pid ${j.pid}, not our child ${proc.pid}`);
        }
        this.publicAddr = j.public;
        this.ingestAddr = j.ingest;
        this.publicPort = Number(j.public.split(':').pop());
        this.ingestPort = Number(j.ingest.split(':').pop());
        return this;
      }
      await sleep(25);
    }
    await this.stop();
    throw new Error('cometbox did not write its ready file in ' + timeoutMs + ' ms:\n' + this.log);
  }

  /** SIGTERM by pid, wait for the exit (SIGKILL after timeoutMs). */
  async stop(timeoutMs = 8000) {
    const proc = this.proc;
    if (!proc) return null;
    this.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return this.exited;
    proc.kill('SIGTERM');
    const t = setTimeout(() => { try { proc.kill('SIGKILL'); } catch (e) { /* gone */ } }, timeoutMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }

  /** SIGKILL by pid (a crash: nothing is cleaned up), wait for the exit. */
  async kill9() {
    const proc = this.proc;
    if (!proc) return null;
    this.proc = null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    return this.exited;
  }

  async restart() {
    await this.stop();
    // Same ports (the ones the ready file reported): the page keeps polling the
    // same origin. Another process could take them in between: start() fails
    // then and is retried until the deadline.
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        return await this.start();
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
  }

  async ingest(xml) {
    const r = await fetch(this.ingestUrl + '/', { method: 'POST', headers: { 'Content-Type': 'application/xml' }, body: xml });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`ingest ${r.status}: ${text}`);
    return text;
  }

  send(to, data, event) {
    return this.ingest(`<message to="${xmlEscape(to)}"${event ? ` event="${xmlEscape(event)}"` : ''}>${xmlEscape(JSON.stringify(data))}</message>`);
  }

  publish(channel, data, event) {
    return this.ingest(`<message channel="${xmlEscape(channel)}"${event ? ` event="${xmlEscape(event)}"` : ''}>${xmlEscape(JSON.stringify(data))}</message>`);
  }

  /** How many polls (or streams) `client` holds open now (0 when unknown). */
  async openPolls(client) {
    const r = await fetch(this.ingestUrl + '/clients/' + encodeURIComponent(client));
    if (r.status === 404) { await r.text(); return 0; }
    if (r.status !== 200) throw new Error(`GET /clients/${client}: ${r.status} ${await r.text()}`);
    return (await r.json()).open_polls;
  }

  /** Waits until `client` holds `n` open polls: a state, not a sleep. */
  async untilOpen(client, n = 1) {
    let last = -1;
    await waitFor(async () => (last = await this.openPolls(client)) === n, { what: `${client} holding ${n} open poll(s)` })
      .catch((e) => { throw new Error(`${e.message} (last seen: ${last})`); });
  }

  cleanup() {
    try { fs.rmSync(this.dir, { recursive: true, force: true }); } catch (e) { /* ignore */ }
  }
}

/** Poll until fn() is truthy (bounded). */
async function waitFor(fn, { timeout = 10000, interval = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(interval);
  }
  throw new Error('timed out waiting for ' + what);
}

module.exports = { Server, BIN, REPO, SECRET, mintToken, waitFor, sleep, xmlEscape };
