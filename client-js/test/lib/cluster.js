'use strict';
// Several cometbox nodes on one real Redis, behind one real nginx, for the
// browser tests: Debian's redis-server and nginx (client-js/run-tests.sh installs
// them), each with its own directory in the system temp dir and a free loopback
// port, stopped by pid. nginx includes deploy/nginx/cometbox.conf unchanged, and
// deploy/nginx/cometbox-upstream-cluster.conf with only its `server` addresses
// replaced by the nodes' (as tests/cluster/nginx_server.rs does for the Rust suite).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Server, REPO, sleep, waitFor } = require('../../../tests/support/server.cjs');

const REDIS = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const NGINX = process.env.NGINX_BIN || '/usr/sbin/nginx';

/** A loopback port nothing listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function listening(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('connect', () => { c.destroy(); resolve(true); });
    c.on('error', () => resolve(false));
  });
}

/** A child process started by us, stopped by its pid. */
class Proc {
  constructor(bin, args, logFile) {
    this.log = fs.openSync(logFile, 'a');
    this.proc = spawn(bin, args, { stdio: ['ignore', this.log, this.log] });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get running() { return this.proc.exitCode === null && this.proc.signalCode === null; }

  async stop(signal = 'SIGTERM', timeoutMs = 10000) {
    if (this.running) {
      this.proc.kill(signal);
      const t = setTimeout(() => { try { this.proc.kill('SIGKILL'); } catch (e) { /* gone */ } }, timeoutMs);
      await this.exited;
      clearTimeout(t);
    }
    try { fs.closeSync(this.log); } catch (e) { /* closed */ }
  }
}

/** The shipped multi-node upstream with its server lines replaced by `nodes`. */
function clusterUpstream(nodes) {
  const shipped = fs.readFileSync(path.join(REPO, 'deploy', 'nginx', 'cometbox-upstream-cluster.conf'), 'utf8');
  const lines = shipped.split('\n');
  const isServer = (l) => /^\s*server\s/.test(l);
  const params = lines.find(isServer).trim().replace(/;$/, '').split(/\s+/).slice(2).join(' ');
  const out = [];
  let written = false;
  for (const l of lines) {
    if (!isServer(l)) out.push(l);
    else if (!written) {
      written = true;
      for (const n of nodes) out.push(`    server ${n} ${params};`);
    }
  }
  return out.join('\n');
}

/**
 * `n` nodes on a fresh Redis behind nginx. `url` is what a page uses
 * (`http://127.0.0.1:<nginx>/cometbox`); `nodes` are the Server objects (ingest,
 * /stats, kill9). The shipped snippet (deploy/nginx/cometbox.conf) passes the
 * WebSocket upgrade of /cometbox/ws on; `{ passUpgrade: false }` puts a location
 * before it that does not, as a proxy configured for HTTP only would (/ws then
 * answers 400).
 */
class Cluster {
  constructor(n = 2, { passUpgrade = true } = {}) {
    this.n = n;
    this.passUpgrade = passUpgrade;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cometbox-js-cluster-'));
    this.nodes = [];
  }

  async start() {
    for (const [bin, pkg] of [[REDIS, 'redis-server'], [NGINX, 'nginx']]) {
      if (!fs.existsSync(bin)) throw new Error(`${bin} not found (apt-get install -y ${pkg})`);
    }
    // Redis, no persistence: this test kills nodes, not Redis.
    this.redisPort = await freePort();
    const rdir = path.join(this.dir, 'redis');
    fs.mkdirSync(rdir);
    this.redis = new Proc(REDIS, ['--port', String(this.redisPort), '--bind', '127.0.0.1', '--dir', rdir,
      '--save', '', '--appendonly', 'no', '--daemonize', 'no'], path.join(rdir, 'redis.log'));
    await waitFor(() => listening(this.redisPort), { timeout: 20000, what: 'redis-server listening' });
    for (let i = 0; i < this.n; i++) {
      const s = new Server({
        COMETBOX_STORE__KIND: 'redis',
        COMETBOX_STORE__URL: `redis://127.0.0.1:${this.redisPort}/0`,
        COMETBOX_LIMITS__POLL_TIMEOUT: '5s',
      });
      await s.start();
      this.nodes.push(s);
    }
    await this.startNginx();
    return this;
  }

  async startNginx() {
    const ndir = path.join(this.dir, 'nginx');
    fs.mkdirSync(ndir);
    const upstream = clusterUpstream(this.nodes.map((s) => s.publicAddr));
    const snippet = path.join(REPO, 'deploy', 'nginx', 'cometbox.conf');
    const user = process.getuid && process.getuid() === 0 ? 'user root root;' : '';
    for (let attempt = 0; attempt < 3; attempt++) {
      this.nginxPort = await freePort();
      const conf = path.join(ndir, 'nginx.conf');
      fs.writeFileSync(conf, `${user}
worker_processes 1;
pid ${ndir}/nginx.pid;
error_log ${ndir}/error.log info;
events { worker_connections 1024; }
http {
    log_format upstreams '$request_uri|$status|$upstream_addr|$upstream_status';
    access_log ${ndir}/access.log upstreams;
    client_body_temp_path ${ndir}/body;
    proxy_temp_path ${ndir}/proxy;
    fastcgi_temp_path ${ndir}/fastcgi;
    uwsgi_temp_path ${ndir}/uwsgi;
    scgi_temp_path ${ndir}/scgi;
${upstream}
    server {
        listen 127.0.0.1:${this.nginxPort};
        server_name localhost;
        location / { return 404; }
${this.passUpgrade ? '' : `        location = /cometbox/ws {
            proxy_pass http://cometbox_public/ws;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
`}        include ${snippet};
    }
}
`);
      this.nginx = new Proc(NGINX, ['-p', ndir, '-c', conf, '-e', path.join(ndir, 'error.log'), '-g', 'daemon off;'],
        path.join(ndir, 'stderr.log'));
      const deadline = Date.now() + 20000;
      while (Date.now() < deadline && this.nginx.running && !(await listening(this.nginxPort))) await sleep(25);
      if (this.nginx.running && await listening(this.nginxPort)) return;
      await this.nginx.stop();
    }
    throw new Error('nginx did not start: ' + this.nginxLog());
  }

  get origin() { return 'http://127.0.0.1:' + this.nginxPort; }
  get url() { return this.origin + '/cometbox'; }

  nginxLog() {
    const read = (f) => { try { return fs.readFileSync(path.join(this.dir, 'nginx', f), 'utf8'); } catch (e) { return ''; } };
    return read('stderr.log') + read('error.log');
  }

  accessLog() {
    try { return fs.readFileSync(path.join(this.dir, 'nginx', 'access.log'), 'utf8'); } catch (e) { return ''; }
  }

  /** Open polls (streams included) each node counts as its own. */
  async openPolls() {
    const out = [];
    for (const s of this.nodes) {
      if (!s.proc) { out.push(0); continue; }
      const r = await fetch(s.ingestUrl + '/stats');
      out.push((await r.json()).open_polls);
    }
    return out;
  }

  async stop() {
    if (this.nginx) await this.nginx.stop();
    for (const s of this.nodes) { await s.stop(); s.cleanup(); }
    if (this.redis) await this.redis.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

module.exports = { Cluster, Proc, clusterUpstream, freePort, listening, REDIS };
