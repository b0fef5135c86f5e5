"""The README's Python examples run as written, against the real server.

Blocks that need a web framework (Flask, Django) are only compiled. The
addresses in the examples are swapped for the test servers' (keyless, as
the examples have no key), and the few names an example leaves to the
reader (user_id, payload, ...) are given values.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Dict, List

import support
from support import Server

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> List[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_examples_run(servers: Dict[str, Server]) -> None:
    tcp, unix = servers["tcp-nokey"], servers["unix-nokey"]
    blocks = python_blocks()
    assert len(blocks) >= 8
    secret = "hook-secret"
    body = b'{"id":"evt-1","type":"subscribe","client":"user:42","channel":"room:42"}'
    namespace: Dict[str, Any] = {
        "user_id": "user:42",
        "payload": {"text": "hi"},
        "log": logging.getLogger("readme"),
        "cached_json_string": '{"cached": true}',
        "raw_body_bytes": body,
        "signature_header": support.signature_header(body, secret, int(time.time())),
        "secret": secret,
        "ingest": tcp.ingest_url,
    }
    ran = 0
    for block in blocks:
        compile(block, str(README), "exec")
        if re.search(r"^\s*(from|import) (flask|django)\b", block, re.M):
            continue  # compiled above; needs a framework to run
        block = block.replace('"http://127.0.0.1:8481"', repr(tcp.ingest_url))
        block = block.replace('"unix:/run/cometbox/ingest.sock"', repr(unix.ingest_url))
        exec(compile(block, str(README), "exec"), namespace)
        ran += 1
    assert ran >= 6
    # what the examples sent reached the browser of user:42 (on the Unix
    # socket server after the example that switches to it)
    data = [m["data"] for s in (tcp, unix) for m in s.messages(s.client().token("user:42"))]
    assert {"text": "Your export is ready"} in data
    assert {"text": "hello over a Unix socket"} in data
    assert "Backup finished" in data and {"cached": True} in data and {"text": "hi"} in data
    assert namespace["accepted"] == 5
    assert namespace["answer"] == b'{"allow":true,"data":{"text":"\xe2\x80\xa6"}}'
