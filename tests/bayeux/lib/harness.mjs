// The Bayeux suite's test harness: the real cometbox binary with `[bayeux]`
// on, tokens from its POST /token, ingest, a plain-HTTP /poll client, the
// PHP hook receiver under `php -S`, and a TCP proxy that can lose replies.
// Everything listens on loopback ephemeral ports; every wait is bounded.
//
// Starting and stopping the binary, waitFor and sleep are the shared
// JavaScript test support (tests/support/server.cjs).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import serverLib from '../../support/server.cjs';

export const { Server, waitFor, sleep, REPO, SECRET } = serverLib;
export const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const HOOK_SECRET = 'bayeux-test-hook-secret';

// What this process started and must not outlive it, even when the test
// runner ends it early (a file over its time limit gets SIGTERM; with
// --test-force-exit it exits before `after` hooks that are still waiting).
const started = new Set(); // functions that SIGKILL one thing by its pid
function killStarted() { for (const kill of started) { try { kill(); } catch (e) { /* already gone */ } } }
process.on('exit', killStarted);
process.once('SIGTERM', () => { killStarted(); process.exit(143); });

/**
 * The server with Bayeux on. `hooks`: a HookReceiver whose URL the server
 * calls. `env`: more COMETBOX_* settings. A short poll timeout keeps held
 * `/meta/connect`s cycling, as they would in production every 25 s.
 */
export async function startServer({ hooks = null, env = {}, corsOrigins = null } = {}) {
  const settings = {
    COMETBOX_BAYEUX__ENABLED: 'true',
    COMETBOX_BAYEUX__SESSION_TIMEOUT: '30s',
    COMETBOX_LIMITS__POLL_TIMEOUT: '5s',
    ...env,
  };
  if (hooks) {
    settings.COMETBOX_HOOKS__URL = hooks.url;
    settings.COMETBOX_HOOKS__SECRET = HOOK_SECRET;
    settings.COMETBOX_HOOKS__TIMEOUT = '5s';
    settings.COMETBOX_HOOKS__OFFLINE_AFTER = '2s';
  }
  if (corsOrigins) settings.COMETBOX_PUBLIC__CORS_ORIGINS = corsOrigins.join(',');
  const server = new Server(settings);
  await server.start();
  started.add(() => { // server.proc: the current process, also after restart()
    const proc = server.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  server.bayeuxUrl = server.publicUrl + '/bayeux';
  return server;
}

/** Stop and clean up, whatever is set. */
export async function stopAll(...things) {
  for (const t of things) {
    if (!t) continue;
    try {
      if (typeof t.stop === 'function') await t.stop();
      else if (typeof t.close === 'function') await t.close();
    } catch (e) { /* best effort in teardown */ }
    if (typeof t.cleanup === 'function') t.cleanup();
  }
}

/**
 * A token from the server's POST /token: `channels` and `publish` are
 * repeated grants (`publish` adds the claim bounding what a browser may
 * publish through Bayeux).
 */
export async function mintToken(server, client, { channels = [], publish = [], ttl = 600 } = {}) {
  const form = new URLSearchParams({ client, ttl: String(ttl) });
  for (const c of channels) form.append('channel', c);
  for (const p of publish) form.append('publish', p);
  const r = await fetch(server.ingestUrl + '/token', { method: 'POST', body: form });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`POST /token ${r.status}: ${text}`);
  const m = /^<token[^>]*>([^<]+)<\/token>\s*$/.exec(text.trim());
  if (!m) throw new Error('unexpected POST /token reply: ' + text);
  return m[1];
}

/**
 * A browser on /poll (plain HTTP, as client-js does it): `next()` long-polls
 * once from its cursor; `received` is every message so far.
 */
export class PollClient {
  constructor(server, token, channels) {
    this.server = server;
    this.token = token;
    this.channels = channels;
    this.cursor = null;
    this.received = [];
    this.replies = [];
  }

  async next(timeout = 5) {
    const q = new URLSearchParams({ token: this.token, timeout: String(timeout), channels: this.channels.join(',') });
    if (this.cursor) q.set('since', this.cursor);
    const r = await fetch(this.server.publicUrl + '/poll?' + q);
    const body = await r.json();
    this.replies.push({ status: r.status, body });
    if (r.status !== 200) throw new Error(`/poll ${r.status}: ${JSON.stringify(body)}`);
    if (body.cursor) this.cursor = body.cursor;
    this.received.push(...(body.messages || []));
    return body;
  }

  /** Poll until `pred(received)` holds (bounded). */
  async until(pred, { timeout = 15000, what = 'a /poll message' } = {}) {
    const deadline = Date.now() + timeout;
    while (!pred(this.received)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.received)}`);
      await this.next(2);
    }
    return this.received;
  }
}

/** Spawn `php -S 127.0.0.1:0` and wait for the port it prints. */
export async function phpServer(docroot, { env = {}, router = null } = {}) {
  const args = ['-S', '127.0.0.1:0', '-t', docroot];
  if (router) args.push(router);
  // Its own process group: with PHP_CLI_SERVER_WORKERS, php forks workers
  // that outlive a SIGTERM to the parent alone; stop() signals the group.
  const proc = spawn('php', args, {
    env: { ...process.env, PHP_CLI_SERVER_WORKERS: '4', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  started.add(() => process.kill(-proc.pid, 'SIGKILL'));
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((r) => proc.on('exit', r));
  const port = await waitFor(() => {
    if (proc.exitCode !== null) throw new Error('php -S exited (' + proc.exitCode + '):\n' + log);
    const m = /Development Server \(http:\/\/127\.0\.0\.1:(\d+)\) started/.exec(log);
    return m && Number(m[1]);
  }, { timeout: 10000, what: 'php -S to report its port' });
  return {
    proc,
    origin: 'http://127.0.0.1:' + port,
    log: () => log,
    async stop() {
      const group = (sig) => { try { process.kill(-proc.pid, sig); } catch (e) { /* gone */ } };
      group('SIGTERM');
      const t = setTimeout(() => group('SIGKILL'), 3000);
      if (proc.exitCode === null && proc.signalCode === null) await exited;
      clearTimeout(t);
      await sleep(50);
      group('SIGKILL'); // workers that ignored SIGTERM
    },
  };
}

/**
 * The hook receiver: tests/bayeux/hook/hook.php (CometBox\Hooks from
 * php-client) under `php -S`. It writes every verified event to a JSON-lines
 * file, read back by `events()`.
 */
export async function startHookReceiver() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-bayeux-hook-'));
  const logFile = path.join(dir, 'events.jsonl');
  const php = await phpServer(path.join(HERE, 'hook'), { env: { BAYEUX_HOOK_SECRET: HOOK_SECRET, BAYEUX_HOOK_LOG: logFile } });
  return {
    url: php.origin + '/hook.php',
    php,
    events() {
      if (!fs.existsSync(logFile)) return [];
      return fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    },
    async stop() { await php.stop(); },
    cleanup() { fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

/**
 * A TCP proxy to `target` (host:port) on a loopback port. `cut()`: from then
 * on a reply the server starts sending is thrown away and the client's
 * connection closed, so the client has sent its request but never sees the
 * answer (a reply lost on the way, as on a flaky mobile link). `swallowed`
 * holds the text of every reply lost that way (read to its end, for a
 * moment). `restore()` passes replies again.
 */
export function lossyProxy(target) {
  const [host, port] = target.split(':');
  const sockets = new Set();
  const proxy = { cutting: false, swallowed: [] };
  const srv = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    sockets.add(client); sockets.add(upstream);
    let lost = null; // this connection's reply being thrown away
    const close = (s) => { s.destroy(); sockets.delete(s); };
    client.on('data', (d) => { if (lost === null) upstream.write(d); });
    upstream.on('data', (d) => {
      if (lost === null && proxy.cutting) {
        lost = { text: '' };
        proxy.swallowed.push(lost);
        close(client);
        setTimeout(() => close(upstream), 300);
      }
      if (lost !== null) lost.text += d.toString('utf8');
      else client.write(d);
    });
    client.on('end', () => { if (lost === null) upstream.end(); });
    upstream.on('end', () => { if (lost === null) client.end(); });
    client.on('error', () => close(client));
    upstream.on('error', () => { close(upstream); close(client); });
    client.on('close', () => { if (lost === null) close(upstream); });
    upstream.on('close', () => close(client));
  });
  return new Promise((resolve, reject) => {
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      proxy.url = 'http://127.0.0.1:' + srv.address().port;
      proxy.cut = () => { proxy.cutting = true; };
      proxy.restore = () => { proxy.cutting = false; };
      proxy.close = () => new Promise((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); });
      resolve(proxy);
    });
  });
}
