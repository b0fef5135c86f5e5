"""cometbox.hooks against the real server: the example WSGI receiver
(examples/wsgi_hook.py, which verifies with cometbox.hooks) answers a real
cometbox's hook requests; what it accepted is recorded here."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Dict, Iterator, List, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

import support
from cometbox import hooks

HOOK_SECRET = "python-hook-secret"


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture()
def receiver() -> Iterator[Tuple[str, List[hooks.HookEvent]]]:
    path = Path(__file__).resolve().parent.parent / "examples" / "wsgi_hook.py"
    spec = importlib.util.spec_from_file_location("wsgi_hook_live", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.SECRET = HOOK_SECRET
    example.notice = lambda event: None  # quiet
    accepted: List[hooks.HookEvent] = []

    def app(environ: Dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        # Recorded only when the module under test accepts the server's signature.
        accepted.append(hooks.verify(body, environ.get("HTTP_COMETBOX_SIGNATURE", ""), HOOK_SECRET))
        environ["wsgi.input"] = __import__("io").BytesIO(body)
        return example.app(environ, start_response)

    httpd = make_server("127.0.0.1", 0, app, server_class=_Threaded, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/cometbox-hook", accepted
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_servers_requests_verify_and_its_denials_reach_the_browser(
    receiver: Tuple[str, List[hooks.HookEvent]],
) -> None:
    url, accepted = receiver
    server = support.Server(
        unix=False,
        key=False,
        extra_env={
            "COMETBOX_HOOKS__URL": url,
            "COMETBOX_HOOKS__SECRET": HOOK_SECRET,
            "COMETBOX_HOOKS__OFFLINE_AFTER": "500ms",
            "COMETBOX_HOOKS__NODE": "py-test",
        },
    )
    try:
        token = server.client(secret=support.SECRET).token("hooked", channels=["room:*", "admin:*"])
        status, body = server.poll(token, timeout="0", channels="room:1")
        assert status == 200, body
        status, body = server.poll(token, timeout="0", channels="room:1,admin:1")
        assert (status, body["error"], body["message"]) == (403, "denied", "admins only")

        def settled() -> Any:
            kinds = [(e.type, e.channel) for e in accepted]
            return kinds if ("offline", None) in kinds else None

        kinds = support.wait_for(settled, 10, "the offline notification")
        # Asks and notifications travel apart: compare each in its order.
        asks = [k for k in kinds if k[0] in hooks.CANCELLABLE]
        notes = [k for k in kinds if k[0] not in hooks.CANCELLABLE]
        # The re-poll asks only for the channel it does not hold.
        assert asks == [("connect", None), ("subscribe", "room:1"), ("subscribe", "admin:1")]
        assert notes == [("online", None), ("subscribed", "room:1"), ("offline", None)]
        for event in accepted:
            assert event.client == "hooked" and event.node == "py-test"
            assert event.id.startswith("evt-") and isinstance(event.ts, int)
        assert len({e.id for e in accepted}) == len(accepted)
    finally:
        server.stop()
