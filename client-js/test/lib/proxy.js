'use strict';
// A reverse proxy on loopback that buffers whole responses before passing them
// on (like nginx with proxy_buffering on for a stream, or a corporate proxy):
// a long-poll still works through it, an SSE stream never arrives.
const http = require('node:http');

function bufferingProxy(target) {
  const upstream = new URL(target);
  const sockets = new Set();
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      const up = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        const chunks = [];
        ur.on('data', (c) => chunks.push(c));
        ur.on('end', () => {
          const headers = { ...ur.headers };
          delete headers['transfer-encoding'];
          delete headers['content-length'];
          const body = Buffer.concat(chunks);
          headers['content-length'] = String(body.length);
          res.writeHead(ur.statusCode, headers);
          res.end(body);
        });
        ur.on('error', () => res.destroy());
      });
      up.on('error', () => { if (!res.headersSent) { res.writeHead(502); res.end(); } else res.destroy(); });
      // The client gave up: drop the upstream request too (its stream counts as an open poll).
      res.on('close', () => up.destroy());
      req.pipe(up);
    });
    srv.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      resolve({
        url: 'http://127.0.0.1:' + port,
        close: () => new Promise((r) => { for (const s of sockets) s.destroy(); srv.close(() => r()); }),
      });
    });
  });
}

module.exports = { bufferingProxy };
