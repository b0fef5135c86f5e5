#!/usr/bin/env python3
"""Type=notify without systemd: start cometbox with NOTIFY_SOCKET pointing at
our own datagram socket, expect READY=1 once both listeners accept, then
STOPPING=1 and exit status 0 after SIGTERM. Loopback/Unix sockets only;
bounded in time.

    sd_notify_check.py BINARY CONFIG TMPDIR
"""
import os
import signal
import socket
import subprocess
import sys
import time

binary, config, tmp = sys.argv[1:4]
notify_path = os.path.join(tmp, "notify.sock")
ingest_path = os.path.join(tmp, "notify-ingest.sock")
for p in (notify_path, ingest_path):
    if os.path.exists(p):
        os.unlink(p)
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(notify_path)
ns.settimeout(1.0)

env = {k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")}
env.update(NOTIFY_SOCKET=notify_path,
           COMETBOX_PUBLIC__LISTEN="127.0.0.1:0",
           COMETBOX_INGEST__LISTEN="unix:" + ingest_path,
           COMETBOX_AUTH__SECRET="sd-notify-check",
           COMETBOX_STORE__PATH=os.path.join(tmp, "notify-store"))
log = open(os.path.join(tmp, "notify-cometbox.log"), "wb")
proc = subprocess.Popen([binary, "--config", config], env=env, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL)
problems = []


def receive_until(word, seconds):
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        try:
            data = ns.recv(4096).decode(errors="replace")
        except socket.timeout:
            if proc.poll() is not None and word != "STOPPING=1":
                break
            continue
        seen.append(data)
        if word in data.split("\n"):
            return seen
    problems.append(f"no {word} within {seconds}s (got {seen!r}, exit status {proc.poll()!r})")
    return None


try:
    if receive_until("READY=1", 20) is not None:
        # READY=1 promises that the listeners accept connections.
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(5)
            c.connect(ingest_path)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head = c.recv(64)
            c.close()
            if not head.startswith(b"HTTP/1.1 200"):
                problems.append(f"GET /health right after READY=1: {head!r}")
        except OSError as e:
            problems.append(f"ingest socket not usable right after READY=1: {e}")
        proc.send_signal(signal.SIGTERM)
        receive_until("STOPPING=1", 10)
        try:
            rc = proc.wait(timeout=15)
            if rc != 0:
                problems.append(f"exit status {rc} after SIGTERM, want 0")
        except subprocess.TimeoutExpired:
            problems.append("still running 15s after SIGTERM")
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
    ns.close()

if problems:
    print("; ".join(problems))
    sys.exit(1)
print("READY=1 after binding, STOPPING=1 and exit 0 on SIGTERM")
