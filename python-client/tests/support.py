"""Test helpers: the real cometbox binary on ephemeral loopback ports, and a
fake HTTP peer for replies the real server cannot be made to give.

Starting, waiting for and stopping the binary, and ``wait_for``, are the
shared tests/support/cometbox_testing.py's (one copy for every Python suite);
this file configures the server for the client's tests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cometbox

PACKAGE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACKAGE_DIR.parent / "tests" / "support"))
import cometbox_testing  # noqa: E402  (the repository's shared test support)
from cometbox_testing import binary, wait_for  # noqa: E402,F401  (used by the tests as support.*)

SECRET = "python-client-test-secret"
KEY = "python-client-test-ingest-key"
MAX_PAYLOAD_BYTES = 4096


class Server:
    """One cometbox process: public and ingest listeners on loopback port 0
    (ingest on a Unix socket when ``unix``), with or without an ingest key.
    Stopped by its pid (SIGTERM, then SIGKILL after 10 s)."""

    def __init__(self, unix: bool, key: bool, extra_env: Optional[Dict[str, str]] = None) -> None:
        self.key = KEY if key else None
        self.dir = tempfile.mkdtemp(prefix="cbpy-")
        self.log_path = os.path.join(self.dir, "server.log")
        env = cometbox_testing.server_env(
            {
                "COMETBOX_PUBLIC__LISTEN": "127.0.0.1:0",
                "COMETBOX_INGEST__LISTEN": f"unix:{self.dir}/ingest.sock" if unix else "127.0.0.1:0",
                "COMETBOX_INGEST__KEY": KEY if key else "",
                "COMETBOX_AUTH__SECRET": SECRET,
                "COMETBOX_LIMITS__POLL_TIMEOUT": "1s",
                "COMETBOX_LIMITS__MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES),
            }
        )
        env.update(extra_env or {})
        try:
            started = cometbox_testing.start([], env, Path(self.dir), Path(self.log_path), timeout=30)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.process = started.process
        self.public: str = started.public
        ingest: str = started.ingest
        self.ingest_url = ingest if ingest.startswith("unix:") else f"http://{ingest}"
        self.unix = unix

    def client(self, **options: Any) -> cometbox.Client:
        options.setdefault("key", self.key)
        options.setdefault("timeout", 5.0)
        return cometbox.Client(self.ingest_url, **options)

    def log(self) -> str:
        return cometbox_testing.read_log(Path(self.log_path))

    def stop(self) -> None:
        cometbox_testing.stop(self.process)
        if not os.environ.get("COMETBOX_KEEP_TEST_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ browser

    def poll(self, token: str, **params: str) -> Tuple[int, Any]:
        """GET /poll on the public listener, as a browser; (status, decoded JSON)."""
        host, port = self.public.rsplit(":", 1)
        query = urllib.parse.urlencode({"token": token, **params})
        conn = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            conn.request("GET", f"/poll?{query}", headers={"Connection": "close"})
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()

    def messages(self, token: str, timeout: int = 1, **params: str) -> List[Dict[str, Any]]:
        """The messages of one poll that must succeed (held ``timeout`` s when empty)."""
        status, body = self.poll(token, timeout=str(timeout), **params)
        assert status == 200, f"poll answered {status}: {body}"
        messages: List[Dict[str, Any]] = body["messages"]
        return messages


class FakePeer:
    """A loopback listener (TCP or Unix) answering each connection with the
    next canned reply: raw bytes, ``"hang"`` (read the request, never
    answer, until stop()) or ``"close"`` (read the request, close)."""

    def __init__(self, replies: List[Any], unix: bool = False) -> None:
        self.replies = list(replies)
        self.requests: List[bytes] = []
        self._stop = threading.Event()
        self.dir = tempfile.mkdtemp(prefix="cbpy-fake-")
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = os.path.join(self.dir, "s.sock")
            self.sock.bind(path)
            self.url = f"unix:{path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if stop() is never called
        while not self._stop.is_set() and self.replies and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.replies.pop(0)
            with conn:
                self.requests.append(self._read_request(conn))
                if reply == "hang":
                    self._stop.wait(30)
                elif reply == "close":
                    pass
                else:
                    conn.sendall(reply)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def http_reply(status: int, body: bytes, content_type: str = "application/xml", reason: str = "X") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def signature_header(body: bytes, secret: str, t: int) -> str:
    """A Cometbox-Signature computed here, independently of cometbox.hooks."""
    import hashlib
    import hmac

    return f"t={t},v1={hmac.new(secret.encode(), str(t).encode() + b'.' + body, hashlib.sha256).hexdigest()}"
