"""The real cometbox binary as a child of a Python test, for every Python
suite: python-client/tests/support.py, tests/bridges (cometbox_server.py,
and brokers.py's ports), tests/docs/run_docs.py and
tests/pusher/test/test_python_sdk.py. Standard library only (each suite
imports it by adding this directory to ``sys.path``; it ships in no package).

It owns: where the binary is (``binary``), the server's environment (none
of the caller's ``COMETBOX_*``), starting it with ``--ready-file`` on the
ports its configuration names (``127.0.0.1:0``: the kernel picks, the ready
file reports them) and waiting for readiness with exit detection (a child
that exits during start-up fails at once with its log; the ready file must
name its pid), stopping it by pid, ``wait_for``, and — for servers that need
a port chosen before they start (brokers, the docs' fixed ports) — a port
below the ephemeral range and a check that the listener there is one of
ours (``listens_in_session``), not another test's.

As a script, ``cometbox_testing.py listens-in-session SID PORT`` exits 0
when a process of session SID listens on PORT (the docs' bash uses it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent.parent


def binary() -> str:
    """$COMETBOX_BIN, else <repo>/target/debug/cometbox; fails loudly if
    it is not an executable file."""
    path = os.environ.get("COMETBOX_BIN") or str(REPO / "target" / "debug" / "cometbox")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"cometbox binary not found at {path}: build it with `cargo build` in the repository "
            "root, or point COMETBOX_BIN at one (the suites' run-tests.sh do both)"
        )
    return path


def server_env(settings: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """This environment without any ``COMETBOX_*`` variable (the server reads
    them all as configuration: COMETBOX_BIN would be refused as unknown, a
    developer's own COMETBOX_LIMITS__… would change what tests see), plus
    ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMETBOX_")}
    env.update(settings or {})
    return env


def wait_for(condition: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 0.02) -> T:
    """Polls ``condition`` until it returns something truthy (returned), at
    most ``timeout`` seconds; then fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_log(path: Path, tail: int = 4000) -> str:
    """The last ``tail`` characters of a log file."""
    try:
        return Path(path).read_text(errors="replace")[-tail:]
    except OSError:
        return "(no log)"


class Started:
    """A started server: the process and the addresses of its ready file
    (``public``, ``ingest``: ``host:port``, or ``unix:/path``)."""

    def __init__(self, process: "subprocess.Popen[bytes]", public: str, ingest: str) -> None:
        self.process = process
        self.public = public
        self.ingest = ingest


def start(
    args: List[str],
    env: Mapping[str, str],
    directory: Path,
    log_path: Path,
    timeout: float = 30,
) -> Started:
    """Starts the binary with ``args`` and ``--ready-file`` (in
    ``directory``, also its working directory), stdout and stderr appended
    to ``log_path``, and waits for the ready file. Fails at once, with the
    log, if the child exits first; after ``timeout`` s it is stopped and the
    start fails. The ready file must name the child's pid."""
    ready = Path(directory) / "ready.json"
    if ready.exists():
        ready.unlink()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [binary(), *args, "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=directory, env=dict(env),
        )
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, timeout, f"cometbox's ready file\n{read_log(log_path)}")
        if process.poll() is not None:
            raise RuntimeError(f"cometbox exited with {process.returncode} before it was ready:\n{read_log(log_path)}")
        addresses = json.loads(ready.read_text())
        if addresses.get("pid") != process.pid:
            raise RuntimeError(f"the ready file names pid {addresses.get('pid')}, not our child {process.pid}")
    except BaseException:
        stop(process)
        raise
    return Started(process, addresses["public"], addresses["ingest"])


def stop(process: "subprocess.Popen[bytes]", timeout: float = 10) -> None:
    """SIGTERM to the child's pid, SIGKILL if it has not exited within
    ``timeout`` s; reaped either way."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def kill(process: "subprocess.Popen[bytes]") -> None:
    """SIGKILL to the child's pid (no shutdown at all), then reap."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


# -------------------------------------------------------------------- ports


def free_port() -> int:
    """A port free now and below the kernel's ephemeral range, for a server
    that cannot bind port 0 and report it: between this choice and its bind
    a port from the ephemeral range can become the local end of some other
    test's outgoing connection. Below the range only a listener can take it,
    and ``listens_in_session`` tells whether the listener there is ours."""
    low = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000..{low}")


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low if low > 11000 else 32768


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def listens_in_session(sid: int, port: int) -> bool:
    """Whether the socket listening on ``port`` belongs to a process of
    session ``sid`` (a child started with ``start_new_session``, and its
    children), not to another test's process that took the port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if os.getsid(int(pid_dir.name)) != sid:
                continue
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return True
        except (OSError, ProcessLookupError):
            continue
    return False


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "listens-in-session":
        sys.exit(0 if listens_in_session(int(sys.argv[2]), int(sys.argv[3])) else 1)
    sys.exit(f"usage: {sys.argv[0]} listens-in-session SID PORT")
