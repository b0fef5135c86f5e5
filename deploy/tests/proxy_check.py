#!/usr/bin/env python3
"""What deploy/nginx/cometbox.conf does on the wire, seen from the upstream.

Starts a recording HTTP/1.1 server on an ephemeral loopback port and a real
nginx (its own prefix directory, ephemeral port) whose server {} includes
cometbox.conf unchanged, with `upstream cometbox_public` pointing at the
recorder. Then checks: the /cometbox/ prefix is stripped; the client address
is forwarded (X-Real-IP, X-Forwarded-For, X-Forwarded-Proto); HTTP/1.1 without
"Connection: close" and idle connections are reused (keepalive); a reply that
the upstream sends in two parts a second apart reaches the client part by part
(no buffering delay). Loopback only, bounded in time, stops nginx by its pid.

    proxy_check.py COMETBOX_CONF TMPDIR [USER_LINE]
Prints PASS/FAIL lines; exit status 1 if any check failed.
"""
import http.client
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

conf_path, tmp = sys.argv[1], sys.argv[2]
user_line = sys.argv[3] if len(sys.argv) > 3 else ""
RESULTS = []
SEEN = []          # (client port of the upstream connection, request line, headers)
SEEN_LOCK = threading.Lock()


def report(name, ok, why=""):
    RESULTS.append(ok)
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)


class Recorder(socketserver.StreamRequestHandler):
    """A minimal HTTP/1.1 server with keep-alive, enough for the checks."""

    def handle(self):
        self.connection.settimeout(20)
        while True:
            try:
                line = self.rfile.readline(8192)
            except OSError:
                return
            if not line:
                return
            request_line = line.decode("latin-1").rstrip("\r\n")
            headers = {}
            while True:
                h = self.rfile.readline(8192).decode("latin-1")
                if h in ("\r\n", "\n", ""):
                    break
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            with SEEN_LOCK:
                SEEN.append((self.client_address[1], request_line, headers))
            path = request_line.split(" ")[1] if " " in request_line else ""
            if path.startswith("/stream"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                self.wfile.write(b"6\r\n[first\r\n")
                self.wfile.flush()
                time.sleep(1.0)
                self.wfile.write(b"7\r\n,second\r\n1\r\n]\r\n0\r\n\r\n")
                self.wfile.flush()
            else:
                body = b'{"ok":true}'
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                self.wfile.flush()
            if headers.get("connection", "").lower() == "close":
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    rec = Server(("127.0.0.1", 0), Recorder)
    threading.Thread(target=rec.serve_forever, daemon=True).start()
    up_port = rec.server_address[1]

    prefix = os.path.join(tmp, "nginx-proxy-check")
    os.makedirs(prefix, exist_ok=True)
    nginx = None
    port = None
    try:
        for _attempt in range(3):
            port = free_port()
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""{user_line}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream cometbox_public {{ server 127.0.0.1:{up_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 404; }}
        include {conf_path};
    }}
}}
""")
            nginx = subprocess.Popen(["nginx", "-e", f"{prefix}/error.log", "-p", prefix + "/",
                                      "-c", conf, "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            up = False
            while time.monotonic() < deadline and nginx.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    up = True
                    break
                except OSError:
                    time.sleep(0.1)
            if up:
                break
            if nginx.poll() is None:
                nginx.terminate()
                nginx.wait(timeout=10)
            nginx = None
        if nginx is None:
            report("nginx for the proxy checks starts", False, f"see {prefix}/error.log")
            return

        def get(path, headers=None):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                c.request("GET", path, headers=headers or {})
                r = c.getresponse()
                return r.status, r.read()
            finally:
                c.close()

        # 1. prefix, forwarded headers, HTTP/1.1 keep-alive
        status, _ = get("/cometbox/poll?token=abc&since=x-1",
                        {"X-Forwarded-For": "203.0.113.7"})
        with SEEN_LOCK:
            first = SEEN[-1] if SEEN else None
        if status != 200 or first is None:
            report("request reaches the upstream", False, f"status {status}, seen {SEEN}")
            return
        _, line, h = first
        report("/cometbox/ prefix stripped (GET /poll?token=...)",
               line.split(" ")[:2] == ["GET", "/poll?token=abc&since=x-1"], f"upstream saw {line!r}")
        report("HTTP/1.1 to the upstream without Connection: close",
               line.endswith("HTTP/1.1") and h.get("connection", "").lower() != "close",
               f"{line!r}, Connection: {h.get('connection')!r}")
        report("X-Real-IP is the client address", h.get("x-real-ip") == "127.0.0.1",
               f"X-Real-IP: {h.get('x-real-ip')!r}")
        report("X-Forwarded-For appends the client address",
               h.get("x-forwarded-for") == "203.0.113.7, 127.0.0.1",
               f"X-Forwarded-For: {h.get('x-forwarded-for')!r}")
        report("X-Forwarded-Proto is set", h.get("x-forwarded-proto") == "http",
               f"X-Forwarded-Proto: {h.get('x-forwarded-proto')!r}")

        # 2. idle upstream connections are reused
        for _ in range(3):
            get("/cometbox/cometbox.js")
        with SEEN_LOCK:
            ports = [p for p, _, _ in SEEN[-3:]]
        report("idle upstream connections are reused (keepalive)",
               len(set(ports)) == 1, f"upstream client ports {ports}")

        # 3. no buffering: the first part arrives before the second is sent
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            t0 = time.monotonic()
            s.sendall(f"GET /cometbox/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            got = b""
            first_at = None
            while time.monotonic() - t0 < 10:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
                if first_at is None and b"[first" in got:
                    first_at = time.monotonic() - t0
            total = time.monotonic() - t0
        finally:
            s.close()
        # (nginx 1.22 also passes parts on promptly with proxy_buffering on, so
        # this guards the behaviour, not the directive; run-tests.sh checks that.)
        report("reply parts reach the client as the upstream sends them",
               first_at is not None and first_at < 0.6 and b",second" in got,
               f"first part after {first_at}s, whole reply after {total:.2f}s: {got[-80:]!r}")
    finally:
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGTERM)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(timeout=5)
        rec.shutdown()
        rec.server_close()


if __name__ == "__main__":
    main()
    sys.exit(1 if (not RESULTS or False in RESULTS) else 0)
