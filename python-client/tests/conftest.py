"""Fixtures: one real cometbox server per kind, started once per test session.

Kinds: ingest over TCP or a Unix socket, each with an ingest key and
without. Integration tests take ``server`` (parametrized over all four) or
one kind by name.
"""

from __future__ import annotations

import itertools
import os
from typing import Dict, Iterator, Tuple

import pytest

import support

KINDS: Dict[str, Tuple[bool, bool]] = {  # name -> (unix, key)
    "tcp-key": (False, True),
    "tcp-nokey": (False, False),
    "unix-key": (True, True),
    "unix-nokey": (True, False),
}

_counter = itertools.count()


@pytest.fixture(scope="session")
def servers() -> Iterator[Dict[str, support.Server]]:
    started: Dict[str, support.Server] = {}
    try:
        for name, (unix, key) in KINDS.items():
            started[name] = support.Server(unix=unix, key=key)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(params=list(KINDS))
def server(request: pytest.FixtureRequest, servers: Dict[str, support.Server]) -> support.Server:
    return servers[request.param]


@pytest.fixture
def tcp(servers: Dict[str, support.Server]) -> support.Server:
    return servers["tcp-key"]


@pytest.fixture
def cid(request: pytest.FixtureRequest) -> str:
    """A client id no other test uses."""
    return f"py-{os.getpid()}-{next(_counter)}"
