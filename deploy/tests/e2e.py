#!/usr/bin/env python3
"""End-to-end checks of the deployment kit: browser traffic through a real
nginx that includes deploy/nginx/cometbox.conf unchanged, backend traffic to
the ingest listener (Unix socket or TCP) of a real cometbox.

Standard library only. Every request goes to loopback or a Unix socket, has a
timeout, and the script ends by itself. Prints one "PASS <name>" or
"FAIL <name>: <why>" line per check; exit status 1 if any check failed.

    e2e.py checks   --nginx 127.0.0.1:PORT --ready READY.json --secret S --poll-timeout 3
    e2e.py longpoll --nginx 127.0.0.1:PORT --ready READY.json --secret S --hold 65
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import stat
import sys
import threading
import time
import urllib.parse
import uuid

RESULTS = []


def report(name, ok, why=""):
    RESULTS.append(ok)
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        print(f"FAIL {name}: {why}", flush=True)


def check(name, fn):
    """Run fn(); an AssertionError or any exception fails the check."""
    try:
        fn()
    except AssertionError as e:
        report(name, False, str(e) or "assertion failed")
    except Exception as e:  # noqa: BLE001 - a check that crashed has failed
        report(name, False, f"{type(e).__name__}: {e}")
    else:
        report(name, True)


# ---------------------------------------------------------------- HTTP plumbing

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def connection(addr, timeout):
    """addr: "host:port" or "unix:/path"."""
    if addr.startswith("unix:"):
        return UnixHTTPConnection(addr[len("unix:"):], timeout)
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    assert host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."), \
        f"refusing non-loopback address {addr}"
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


class Reply:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"body is not JSON ({e}): {self.body[:300]!r}")

    def __repr__(self):
        return f"<{self.status} after {self.elapsed:.2f}s: {self.body[:300]!r}>"


def request(addr, method, path, body=None, headers=None, timeout=15):
    conn = connection(addr, timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Reply(r.status, hdrs, data, time.monotonic() - t0)
    finally:
        conn.close()


# ---------------------------------------------------------------- tokens

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint_jwt(secret, sub, ttl=600, channels=None):
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "exp": int(time.time()) + ttl}
    if channels is not None:
        claims["channels"] = channels
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def new_client(tag):
    return f"deploy-{tag}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- the checks

class Env:
    def __init__(self, args):
        with open(args.ready) as f:
            ready = json.load(f)
        self.public = ready["public"]
        self.ingest = ready["ingest"]
        self.nginx = args.nginx
        self.secret = args.secret
        self.poll_timeout = args.poll_timeout
        self.ingest_headers = {"Content-Type": "application/xml"}
        if args.ingest_key:
            self.ingest_headers["Authorization"] = f"Bearer {args.ingest_key}"

    def poll(self, token, since=None, timeout_param=None, http_timeout=None):
        q = {"token": token}
        if since is not None:
            q["since"] = since
        if timeout_param is not None:
            q["timeout"] = str(timeout_param)
        path = "/cometbox/poll?" + urllib.parse.urlencode(q)
        return request(self.nginx, "GET", path,
                       timeout=http_timeout or (self.poll_timeout + 15))

    def post(self, xml):
        return request(self.ingest, "POST", "/", body=xml.encode(),
                       headers=self.ingest_headers)

    def ingest_get(self, path):
        h = {k: v for k, v in self.ingest_headers.items() if k == "Authorization"}
        return request(self.ingest, "GET", path, headers=h)


def run_checks(env):
    def health():
        r = env.ingest_get("/health")
        assert r.status == 200, f"GET /health on ingest {env.ingest}: {r}"
    check("ingest GET /health answers 200", health)

    def stats():
        r = env.ingest_get("/stats")
        assert r.status == 200, f"GET /stats: {r}"
        s = r.json()
        missing = [k for k in ("clients", "open_polls", "queued_messages",
                               "messages_in", "messages_out", "uptime_s") if k not in s]
        assert not missing, f"/stats lacks {missing}: {s}"
    check("ingest GET /stats has the documented counters", stats)

    if env.ingest.startswith("unix:"):
        def sockmode():
            st = os.stat(env.ingest[len("unix:"):])
            assert stat.S_ISSOCK(st.st_mode), "not a socket"
            mode = stat.S_IMODE(st.st_mode)
            assert mode == 0o660, f"ingest socket mode is {oct(mode)}, want 0o660 (socket_mode)"
        check("ingest socket has socket_mode 0660", sockmode)

    def js():
        r = request(env.nginx, "GET", "/cometbox/cometbox.js")
        assert r.status == 200, f"GET /cometbox/cometbox.js through nginx: {r}"
        assert len(r.body) > 100, f"cometbox.js suspiciously short: {r}"
        ct = r.header("content-type") or ""
        assert "javascript" in ct, f"Content-Type of cometbox.js is {ct!r}"
    check("nginx serves /cometbox/cometbox.js", js)

    # --- a held poll gets a message posted while it waits, at once
    client = new_client("push")
    token = mint_jwt(env.secret, client)
    cursor = {}

    def push():
        box = {}

        def worker():
            try:
                box["reply"] = env.poll(token)
            except Exception as e:  # noqa: BLE001
                box["error"] = e
        t0 = time.monotonic()
        th = threading.Thread(target=worker, daemon=True)
        th.start()
        time.sleep(0.5)
        assert th.is_alive(), f"poll returned before anything was posted: {box}"
        # The poll must have reached cometbox, not be parked inside nginx.
        open_polls = env.ingest_get("/stats").json().get("open_polls")
        posted_at = time.monotonic()
        r = env.post(f'<message to="{client}" event="notice">{{"text": "hello through nginx"}}</message>')
        assert r.status == 200, f"POST / to ingest: {r}"
        assert b"<ok" in r.body and b'accepted="1"' in r.body, f"ingest reply: {r}"
        th.join(timeout=env.poll_timeout + 15)
        assert not th.is_alive(), "poll did not return"
        if "error" in box:
            raise box["error"]
        rep = box["reply"]
        latency = time.monotonic() - posted_at
        assert rep.status == 200, f"poll: {rep}"
        assert latency < 1.0, \
            f"poll answered {latency:.2f}s after the post (poll timeout {env.poll_timeout}s): buffered?"
        body = rep.json()
        msgs = body.get("messages")
        assert isinstance(msgs, list) and len(msgs) == 1, f"want one message: {body}"
        m = msgs[0]
        assert m.get("data") == {"text": "hello through nginx"}, f"message: {m}"
        assert m.get("event") == "notice", f"message: {m}"
        assert isinstance(body.get("cursor"), str) and body["cursor"], f"no cursor: {body}"
        assert m.get("id") == body["cursor"], f"last id {m.get('id')!r} != cursor {body['cursor']!r}"
        cursor["c"] = body["cursor"]
        cursor["reply"] = rep
        cursor["open_polls"] = open_polls
        print(f"     message delivered {latency * 1000:.0f} ms after the post, "
              f"{time.monotonic() - t0:.2f}s after the poll started", flush=True)
    check("poll through nginx gets a message posted while it waits (< 1 s)", push)

    # --- Server-Sent Events through the snippet unchanged: not buffered
    def sse():
        sse_client = new_client("sse")
        sse_token = mint_jwt(env.secret, sse_client)
        conn = connection(env.nginx, 15)
        try:
            conn.request("GET", "/cometbox/events?" + urllib.parse.urlencode({"token": sse_token}))
            r = conn.getresponse()
            assert r.status == 200, f"GET /cometbox/events: {r.status} {r.read()[:300]!r}"
            ctype = r.getheader("content-type") or ""
            assert ctype.startswith("text/event-stream"), f"Content-Type {ctype!r}"
            first = r.readline()
            assert first.startswith(b": ok"), f"first line {first!r}"
            posted_at = time.monotonic()
            p = env.post(f'<message to="{sse_client}" event="notice">{{"n": 1}}</message>')
            assert p.status == 200, f"POST / to ingest: {p}"
            lines = []
            while not (lines and lines[-1] == b"\n" and any(x.startswith(b"data:") for x in lines)):
                lines.append(r.readline())
                assert lines[-1], f"the stream ended: {lines}"
            latency = time.monotonic() - posted_at
            text = b"".join(lines).decode()
            assert "event: notice" in text, f"event: {text!r}"
            data = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
            assert data.get("data") == {"n": 1}, f"data: {data}"
            assert latency < 1.0, f"event arrived {latency:.2f}s after the post: buffered?"
            print(f"     SSE event delivered {latency * 1000:.0f} ms after the post", flush=True)
        finally:
            conn.close()
    check("SSE through nginx: an event arrives as it is posted (< 1 s), not buffered", sse)

    # --- Bayeux through the snippet unchanged: a POST body passes, a held
    # connect answers as a message is posted
    def bayeux():
        client = new_client("bayeux")
        bx_token = mint_jwt(env.secret, client, channels=["/chat/*"])

        def post(batch, timeout=15):
            conn = connection(env.nginx, timeout)
            try:
                body = json.dumps(batch)
                conn.request("POST", "/cometbox/bayeux", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                assert r.status == 200, f"POST /cometbox/bayeux: {r.status} {r.read()[:300]!r}"
                return json.loads(r.read())
            finally:
                conn.close()
        hs = post([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                    "supportedConnectionTypes": ["long-polling"],
                    "ext": {"cometbox": {"token": bx_token}}}])
        assert hs[0].get("successful") is True, f"handshake: {hs}"
        cid = hs[0]["clientId"]
        sub = post([{"channel": "/meta/subscribe", "clientId": cid, "id": "2",
                     "subscription": "/chat/**"}])
        assert sub[0].get("successful") is True, f"subscribe: {sub}"
        got = {}

        def held():
            got["reply"] = post([{"channel": "/meta/connect", "clientId": cid, "id": "3",
                                  "connectionType": "long-polling", "advice": {"timeout": 10000}}])
            got["at"] = time.monotonic()
        waiter = threading.Thread(target=held)
        waiter.start()
        time.sleep(0.5)
        posted_at = time.monotonic()
        p = env.post('<message channel="/chat/room/1">{"via": "nginx"}</message>')
        assert p.status == 200, f"POST / to ingest: {p}"
        waiter.join(15)
        assert "reply" in got, "the held connect did not answer"
        reply = got["reply"]
        assert reply[0].get("channel") == "/chat/room/1" and reply[0].get("data") == {"via": "nginx"}, \
            f"connect reply: {reply}"
        assert reply[-1].get("successful") is True, f"connect: {reply}"
        latency = got["at"] - posted_at
        assert latency < 1.0, f"Bayeux message arrived {latency:.2f}s after the post"
        print(f"     Bayeux message delivered {latency * 1000:.0f} ms after the post", flush=True)
    check("Bayeux through nginx: handshake, wildcard subscribe, a held connect answered (< 1 s)",
          bayeux)

    # --- A WebSocket through the snippet unchanged: the upgrade passes, a
    # frame arrives as a message is posted; a page elsewhere is refused.
    def websocket():
        client = new_client("ws")
        ws_token = mint_jwt(env.secret, client)
        host, port = env.nginx.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=15)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((
                f"GET /cometbox/ws?token={ws_token} HTTP/1.1\r\nHost: {env.nginx}\r\n"
                f"Origin: http://{env.nginx}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            reader = sock.makefile("rb")
            status = reader.readline()
            assert b" 101 " in status, f"upgrade through nginx: {status!r}"
            while reader.readline() not in (b"\r\n", b""):
                pass
            deadline = time.monotonic() + 5  # the socket's poll opens after the 101
            while True:
                r = env.ingest_get(f"/clients/{client}")
                if r.status == 200 and r.json().get("open_polls") == 1:
                    break
                assert time.monotonic() < deadline, f"the socket never counted as an open poll: {r}"
                time.sleep(0.05)
            posted_at = time.monotonic()
            p = env.post(f'<message to="{client}" event="notice">{{"n": 2}}</message>')
            assert p.status == 200, f"POST / to ingest: {p}"
            head = reader.read(2)
            assert head[0] == 0x81, f"a text frame: {head!r}"
            size = head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(reader.read(2), "big")
            elif size == 127:
                size = int.from_bytes(reader.read(8), "big")
            frame = json.loads(reader.read(size))
            latency = time.monotonic() - posted_at
            assert frame["messages"][0]["data"] == {"n": 2}, f"frame: {frame}"
            assert latency < 1.0, f"frame arrived {latency:.2f}s after the post: buffered?"
            print(f"     WebSocket frame delivered {latency * 1000:.0f} ms after the post", flush=True)
        finally:
            sock.close()
        conn = connection(env.nginx, 15)
        try:
            conn.request("GET", f"/cometbox/ws?token={ws_token}", headers={
                "Origin": "https://elsewhere.example", "Upgrade": "websocket",
                "Connection": "Upgrade", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13"})
            r = conn.getresponse()
            assert r.status == 403, f"a page elsewhere: {r.status} {r.read()[:200]!r}"
        finally:
            conn.close()
    check("WebSocket through nginx: the upgrade passes, a frame arrives as posted (< 1 s), "
          "another origin is refused", websocket)

    def held_in_server():
        assert "open_polls" in cursor, "no result from the previous check"
        n = cursor["open_polls"]
        assert isinstance(n, int) and n >= 1, \
            f"/stats open_polls={n!r} while a poll was held through nginx"
    check("the held poll is open in cometbox (/stats open_polls >= 1), not parked in nginx",
          held_in_server)

    def no_store():
        assert "reply" in cursor, "no reply from the previous check"
        cc = cursor["reply"].header("cache-control") or ""
        assert "no-store" in cc, f"Cache-Control of a poll reply through nginx: {cc!r}"
    check("poll reply through nginx carries Cache-Control: no-store", no_store)

    # --- an empty poll times out cleanly after poll_timeout
    def timeout():
        assert "c" in cursor, "no cursor from the previous check"
        r = env.poll(token, since=cursor["c"])
        assert r.status == 200, f"empty poll: {r}"
        body = r.json()
        assert body.get("messages") == [], f"want empty messages: {body}"
        assert isinstance(body.get("cursor"), str), f"no cursor: {body}"
        lo, hi = env.poll_timeout - 0.5, env.poll_timeout + 3
        assert lo <= r.elapsed <= hi, \
            f"empty poll answered after {r.elapsed:.2f}s, want about {env.poll_timeout}s"
        print(f"     empty poll answered after {r.elapsed:.2f}s", flush=True)
    check(f"empty poll through nginx times out cleanly after {env.poll_timeout}s", timeout)

    # --- POST /token on the ingest listener, queued message, immediate answer
    def token_endpoint():
        c = new_client("tok")
        r = request(env.ingest, "POST", "/token",
                    body=urllib.parse.urlencode({"client": c, "ttl": "300"}).encode(),
                    headers={**{k: v for k, v in env.ingest_headers.items() if k == "Authorization"},
                             "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 200, f"POST /token: {r}"
        text = r.body.decode()
        assert text.lstrip().startswith("<token") and "expires=" in text, f"POST /token reply: {text!r}"
        jwt = text[text.index(">") + 1:text.rindex("</token>")].strip()
        assert jwt.count(".") == 2, f"not a JWT: {jwt!r}"
        r = env.post(f'<message to="{c}" type="text">queued before the poll</message>')
        assert r.status == 200, f"POST /: {r}"
        rep = env.poll(jwt)
        assert rep.status == 200, f"poll: {rep}"
        assert rep.elapsed < 1.5, f"queued message took {rep.elapsed:.2f}s"
        msgs = rep.json().get("messages")
        assert msgs and msgs[0].get("data") == "queued before the poll", f"poll: {rep}"
    check("token from POST /token polls a queued message through nginx", token_endpoint)

    def bad_token():
        r = env.poll("not-a-token", http_timeout=10)
        assert r.status == 401, f"want 401: {r}"
        assert r.json().get("error") == "invalid-token", f"want invalid-token: {r}"
    check("invalid token through nginx: 401 invalid-token (JSON)", bad_token)

    def expired_token():
        r = env.poll(mint_jwt(env.secret, new_client("exp"), ttl=-120), http_timeout=10)
        assert r.status == 401, f"want 401: {r}"
        assert r.json().get("error") == "token-expired", f"want token-expired: {r}"
    check("expired token through nginx: 401 token-expired", expired_token)

    # keep-alive to the upstream: several short requests in a row work
    def sequential():
        for i in range(5):
            r = request(env.nginx, "GET", "/cometbox/cometbox.js")
            assert r.status == 200, f"request {i}: {r}"
    check("repeated requests through the keep-alive upstream", sequential)


def run_longpoll(env, hold):
    """A poll held longer than nginx's default proxy_read_timeout (60s) must
    come back as an empty 200 from cometbox, not a 504 from nginx."""
    def longpoll():
        c = new_client("long")
        r = env.poll(mint_jwt(env.secret, c), timeout_param=hold, http_timeout=hold + 30)
        assert r.status == 200, f"poll held {hold}s through nginx: {r}"
        body = r.json()
        assert body.get("messages") == [], f"want empty: {body}"
        assert r.elapsed >= hold - 1, \
            f"answered after {r.elapsed:.1f}s, want about {hold}s (is max_poll_timeout >= {hold}s?)"
        print(f"     held {r.elapsed:.1f}s", flush=True)
    check(f"poll held {hold}s (> nginx's default 60s read timeout) ends in 200, not 504", longpoll)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["checks", "longpoll"])
    ap.add_argument("--nginx", required=True, help="host:port of the test nginx")
    ap.add_argument("--ready", required=True, help="--ready-file written by cometbox")
    ap.add_argument("--secret", required=True)
    ap.add_argument("--ingest-key", default="")
    ap.add_argument("--poll-timeout", type=float, default=3.0)
    ap.add_argument("--hold", type=int, default=65)
    args = ap.parse_args()
    env = Env(args)
    if args.mode == "checks":
        run_checks(env)
    else:
        run_longpoll(env, args.hold)
    failed = RESULTS.count(False)
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())
