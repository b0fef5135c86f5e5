"""The real cometbox binary with a config file, on ephemeral loopback ports,
and a browser's view of it (GET /poll on the public port). Starting,
stopping and ``wait_for`` are tests/support/cometbox_testing.py's, shared
by every Python suite."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
import cometbox_testing  # noqa: E402  (the repository's shared test support)

T = TypeVar("T")


def wait_for(condition: Callable[[], Optional[T]], timeout: float, what: str, interval: float = 0.1) -> T:
    """The shared ``wait_for``, looking every 0.1 s by default here (brokers'
    management APIs are asked, not only cometbox)."""
    return cometbox_testing.wait_for(condition, timeout, what, interval)


class Cometbox:
    def __init__(self, directory: Path, config: str, env: Optional[Dict[str, str]] = None) -> None:
        #: COMETBOX_* variables for the server (secrets given by environment).
        self.env = dict(env or {})
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "cometbox.toml"
        self.config_path.write_text(config)
        self.log_path = self.dir / "cometbox.log"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        env = cometbox_testing.server_env(self.env)
        env["RUST_LOG"] = "info,cometbox=debug"
        started = cometbox_testing.start(["--config", str(self.config_path)], env, self.dir, self.log_path, timeout=60)
        self.process = started.process
        self.public = "http://" + started.public
        self.ingest = "http://" + started.ingest

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        assert self.process is not None
        cometbox_testing.kill(self.process)

    def stop(self) -> None:
        if self.process is not None:
            cometbox_testing.stop(self.process, timeout=20)

    def log(self) -> str:
        return cometbox_testing.read_log(self.log_path, 6000)

    # ------------------------------------------------------------ backend

    def post(self, path: str, body: bytes = b"", content_type: str = "application/xml") -> bytes:
        req = urllib.request.Request(self.ingest + path, data=body, method="POST",
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.read()

    def token(self, client: str) -> str:
        body = self.post("/token?" + urllib.parse.urlencode({"client": client}), b"",
                         "application/x-www-form-urlencoded").decode()
        return body.split(">", 1)[1].split("<", 1)[0]

    def subscribe(self, client: str, *channels: str) -> None:
        commands = "".join(f'<subscribe client="{client}" channel="{c}"/>' for c in channels)
        self.post("/", f"<batch>{commands}</batch>".encode())

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(self.ingest + "/stats", timeout=10) as reply:
            return json.loads(reply.read())

    def bridge(self, name: str) -> Dict[str, Any]:
        for b in self.stats()["bridges"]:
            if b["name"] == name:
                return dict(b)
        raise AssertionError(f"no bridge {name} in /stats")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.ingest + "/metrics", timeout=10) as reply:
            return reply.read().decode()

    def wait_state(self, name: str, state: str, timeout: float = 90) -> Dict[str, Any]:
        return wait_for(lambda: (lambda b: b if b["state"] == state else None)(self.bridge(name)),
                        timeout, f"bridge {name} to be {state}: {self.bridge(name)}")


class Browser:
    """A client polling GET /poll with its token, following the cursor."""

    def __init__(self, server: Cometbox, client: str) -> None:
        self.server = server
        self.client = client
        self.token = server.token(client)
        self.cursor: Optional[str] = None
        self.messages: List[Dict[str, Any]] = []

    def poll(self, timeout: int = 1) -> List[Dict[str, Any]]:
        params = {"token": self.token, "timeout": str(timeout)}
        if self.cursor:
            params["since"] = self.cursor
        url = self.server.public + "/poll?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout + 15) as reply:
            body = json.loads(reply.read())
        self.cursor = body["cursor"]
        self.messages.extend(body["messages"])
        return list(body["messages"])

    def wait(self, predicate: Callable[[Dict[str, Any]], bool], count: int = 1, timeout: float = 30) -> List[Dict[str, Any]]:
        """Polls until ``count`` messages matching ``predicate`` arrived."""
        def enough() -> Optional[List[Dict[str, Any]]]:
            found = [m for m in self.messages if predicate(m)]
            if len(found) >= count:
                return found
            self.poll()
            found = [m for m in self.messages if predicate(m)]
            return found if len(found) >= count else None
        return wait_for(enough, timeout, f"{count} message(s) for {self.client}; got {self.messages[-5:]}", interval=0)
