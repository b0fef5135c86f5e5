"""The brokers and the cometbox serving the whole suite (see support.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from cometbox_server import Cometbox
from support import BRIDGES, Env, declare_queue, declare_stream


@pytest.fixture(scope="session")
def env() -> Iterator[Env]:
    root = Path(tempfile.mkdtemp(prefix="cbbridges-", dir=os.environ.get("BRIDGES_WORK")))
    e = Env(root)
    try:
        # ActiveMQ's JVM and RabbitMQ's Erlang take seconds: all start at once.
        for b in e.all:
            b.start()
        for b in e.all:
            b.wait_ready(180)
        declare_queue(e.rabbit)
        declare_stream(e)
        e.cometbox = Cometbox(root / "cometbox", e.config(), e.secret_env())
        e.cometbox.start()
        for name in BRIDGES:
            e.cometbox.wait_state(name, "connected", 60)
        yield e
    except BaseException:
        for b in e.all:
            print(f"--- {b.name} log ---\n{b.log()}")
        if hasattr(e, "cometbox"):
            print(f"--- cometbox log ---\n{e.cometbox.log()}")
        raise
    finally:
        if hasattr(e, "cometbox"):
            e.cometbox.stop()
        for b in e.all:
            b.stop()
        e.rabbit.stop_epmd()
