"""cometbox.hooks: signatures computed here independently (hmac by hand,
and a vector computed with openssl), never with the module under test."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import importlib.util
import io
import json
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Tuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from cometbox import hooks
from cometbox.hooks import HookEvent, SignatureError

SECRET = "whsec-test"
NOW = 1763712000
BODY = b'{"id":"evt-1","type":"subscribe","client":"alice","channel":"room:42","ts":1763712000123,"node":"n1"}'
# printf '%s' "1763712000.$BODY" | openssl dgst -sha256 -hmac whsec-test
VECTOR = "db1a4fd54f8f549afdca1dd6705b6f6822dc1eef24b73aae61f7979792979849"


def signature(body: bytes, t: int = NOW, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def header(body: bytes, t: int = NOW, secret: str = SECRET) -> str:
    return f"t={t},v1={signature(body, t, secret)}"


def test_the_openssl_vector() -> None:
    assert signature(BODY) == VECTOR  # the test's own helper agrees with openssl
    event = hooks.verify(BODY, f"t={NOW},v1={VECTOR}", SECRET, now=NOW)
    assert event == HookEvent(
        id="evt-1", type="subscribe", client="alice", channel="room:42", ts=1763712000123, node="n1", signed_at=NOW
    )
    assert event.cancellable
    assert event.raw["node"] == "n1"
    assert hooks.sign(BODY, SECRET, NOW) == f"t={NOW},v1={VECTOR}"


def test_every_event_type() -> None:
    for kind, cancellable in [("connect", True), ("subscribe", True), ("publish", True), ("online", False),
                              ("offline", False), ("subscribed", False), ("unsubscribed", False)]:
        body = json.dumps({"id": f"e-{kind}", "type": kind, "client": "c", "channel": "x", "data": {"k": [1]},
                           "ext": {"auth": "t"}, "ts": 5, "future": 1}).encode()
        event = hooks.verify(body, header(body), SECRET, now=NOW)
        assert (event.type, event.cancellable, event.data, event.ext, event.raw["future"]) == (
            kind, cancellable, {"k": [1]}, {"auth": "t"}, 1)


def test_secret_as_bytes_and_non_ascii_body() -> None:
    body = json.dumps({"id": "é", "type": "publish", "data": "ü 🎉"}, ensure_ascii=False).encode()
    event = hooks.verify(body, header(body, secret="sécret"), "sécret".encode(), now=NOW)
    assert event.data == "ü 🎉"
    assert event.client is None and event.channel is None and event.ts is None


@pytest.mark.parametrize(
    "value",
    [
        f"t={NOW},v1={'0' * 64},v1={VECTOR}",  # rotated secrets: any v1 may match
        f"t={NOW},v1={VECTOR},v1={'f' * 64}",
        f"v1={VECTOR},t={NOW}",  # order does not matter
        f" t={NOW} , v1={VECTOR} ",  # spaces around items
        f"t={NOW},v1={VECTOR.upper()}",
        f"t={NOW},v0=whatever,v2=future-scheme,v1={VECTOR}",  # other schemes are ignored
        f"t={NOW},v1={VECTOR}".encode(),  # bytes, as some frameworks give headers
    ],
)
def test_accepted_headers(value: Any) -> None:
    assert hooks.verify(BODY, value, SECRET, now=NOW).id == "evt-1"


@pytest.mark.parametrize(
    "value,code",
    [
        (None, "malformed-signature"),
        ("", "malformed-signature"),
        ("garbage", "malformed-signature"),
        (VECTOR, "malformed-signature"),
        (f"v1={VECTOR}", "malformed-signature"),  # no t
        (f"t={NOW}", "malformed-signature"),  # no v1
        (f"t={NOW},t={NOW},v1={VECTOR}", "malformed-signature"),  # two t
        (f"t=-{NOW},v1={VECTOR}", "malformed-signature"),
        (f"t={NOW}.5,v1={VECTOR}", "malformed-signature"),
        (f"t=,v1={VECTOR}", "malformed-signature"),
        (f"t={NOW},v1={VECTOR[:-1]}", "malformed-signature"),  # 63 digits
        (f"t={NOW},v1={VECTOR[:-1]}g", "malformed-signature"),  # not hex
        (f"t={NOW},v1={VECTOR[:-1]}é", "malformed-signature"),
        (f"t={NOW},v1={VECTOR};x", "malformed-signature"),
        (f"t={NOW},v1=sha256={VECTOR}", "malformed-signature"),
        (f"t={NOW},v1={VECTOR}," + "x=1," * 2000, "malformed-signature"),  # too long
        (f"t={NOW},v1={'0' * 64}", "bad-signature"),
        (f"t={NOW + 1},v1={VECTOR}", "bad-signature"),  # the timestamp is signed too
        (f"t={NOW},v1={signature(BODY, secret='other')}", "bad-signature"),
        (f"t={NOW},v1={signature(BODY + b' ')}", "bad-signature"),
    ],
)
def test_refused_headers(value: Any, code: str) -> None:
    with pytest.raises(SignatureError) as caught:
        hooks.verify(BODY, value, SECRET, now=NOW)
    assert caught.value.code == code


def test_a_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"alice", b"mallo")
    with pytest.raises(SignatureError) as caught:
        hooks.verify(tampered, header(BODY), SECRET, now=NOW)
    assert caught.value.code == "bad-signature"


def test_timestamps_outside_the_tolerance() -> None:
    for t, now, tolerance, ok in [
        (NOW, NOW + 300, 300, True),
        (NOW, NOW - 300, 300, True),
        (NOW, NOW + 301, 300, False),  # stale: a replay
        (NOW, NOW - 301, 300, False),  # from the future
        (NOW, NOW + 10, 5, False),
        (NOW, NOW, 0, True),
        (NOW, NOW + 0.5, 0, False),
    ]:
        value = header(BODY, t)
        if ok:
            hooks.verify(BODY, value, SECRET, tolerance=tolerance, now=now)
        else:
            with pytest.raises(SignatureError) as caught:
                hooks.verify(BODY, value, SECRET, tolerance=tolerance, now=now)
            assert caught.value.code == "stale-signature"


def test_the_clock_is_used_by_default() -> None:
    import time

    t = int(time.time())
    assert hooks.verify(BODY, header(BODY, t), SECRET).signed_at == t
    with pytest.raises(SignatureError):
        hooks.verify(BODY, header(BODY, t - 3600), SECRET)


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"type":"x"}', b'{"id":1,"type":"x"}', b"\xff\xfe", b""])
def test_signed_bodies_that_are_not_events(body: bytes) -> None:
    with pytest.raises(SignatureError) as caught:
        hooks.verify(body, header(body), SECRET, now=NOW)
    assert caught.value.code == "invalid-body"


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        hooks.verify(BODY.decode(), header(BODY), SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        hooks.verify(BODY, header(BODY), "", now=NOW)
    with pytest.raises(ValueError):
        hooks.verify(BODY, header(BODY), SECRET, tolerance=-1, now=NOW)


def test_answers() -> None:
    assert json.loads(hooks.allow()) == {"allow": True}
    assert json.loads(hooks.deny("members only")) == {"allow": False, "reason": "members only"}
    assert json.loads(hooks.deny()) == {"allow": False, "reason": ""}
    assert json.loads(hooks.allow(data={"text": "rewritten", "é": 1})) == {"allow": True, "data": {"text": "rewritten", "é": 1}}
    assert json.loads(hooks.allow(data=None)) == {"allow": True, "data": None}
    assert hooks.deny('"<é>"') == '{"allow":false,"reason":"\\"<é>\\""}'.encode()
    with pytest.raises(ValueError):
        hooks.allow(data=float("nan"))


# ------------------------------------------------------------ the example

def load_example() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "examples" / "wsgi_hook.py"
    spec = importlib.util.spec_from_file_location("wsgi_hook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(app: Any, body: bytes, signature_header: str, method: str = "POST") -> Tuple[str, Any]:
    seen: Dict[str, Any] = {}

    def start_response(status: str, headers: List[Tuple[str, str]]) -> None:
        seen["status"] = status

    environ = {
        "REQUEST_METHOD": method,
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_COMETBOX_SIGNATURE": signature_header,
        "wsgi.input": io.BytesIO(body),
    }
    reply = b"".join(app(environ, start_response))
    return seen["status"], json.loads(reply)


def test_the_wsgi_example_in_process() -> None:
    example = load_example()
    secret = example.SECRET
    event = {"id": "e1", "type": "subscribe", "client": "alice", "channel": "admin:1", "ts": 1}
    body = json.dumps(event).encode()
    import time

    t = int(time.time())
    assert call(example.app, body, header(body, t, secret)) == ("200 OK", {"allow": False, "reason": "admins only"})
    body = json.dumps({**event, "channel": "room:1"}).encode()
    assert call(example.app, body, header(body, t, secret)) == ("200 OK", {"allow": True})
    body = json.dumps({"id": "e2", "type": "publish", "client": "a", "channel": "c", "data": {"x": 1}}).encode()
    assert call(example.app, body, header(body, t, secret)) == ("200 OK", {"allow": True, "data": {"x": 1, "checked": True}})
    body = json.dumps({"id": "e3", "type": "online", "client": "a"}).encode()
    assert call(example.app, body, header(body, t, secret)) == ("200 OK", {"allow": True})
    assert call(example.app, body, header(body, t, secret))[0] == "200 OK"  # a repeat: acknowledged again
    assert call(example.app, body, header(body, t, "wrong"))[0] == "401 Unauthorized"
    assert call(example.app, body, "")[0] == "401 Unauthorized"
    assert call(example.app, body, header(body, t, secret), "GET")[0] == "405 Method Not Allowed"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_the_wsgi_example_over_http() -> None:
    example = load_example()
    import time

    with make_server("127.0.0.1", 0, example.app, handler_class=_QuietHandler) as httpd:
        httpd.timeout = 10
        thread = threading.Thread(target=httpd.handle_request, daemon=True)
        thread.start()
        body = json.dumps({"id": "e9", "type": "connect", "client": "bob"}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=10)
        try:
            conn.request("POST", "/cometbox-hook", body, {
                "Content-Type": "application/json",
                "Cometbox-Signature": header(body, int(time.time()), example.SECRET),
            })
            reply = conn.getresponse()
            assert reply.status == 200
            assert reply.getheader("Content-Type") == "application/json"
            assert json.loads(reply.read()) == {"allow": True}
        finally:
            conn.close()
        thread.join(10)
        assert not thread.is_alive()
