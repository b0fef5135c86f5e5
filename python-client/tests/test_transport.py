"""Replies the real server cannot be made to give on demand (503, 429, a
proxy's 502, silence, a dropped connection), from a fake loopback peer; and
the request the client writes."""

from __future__ import annotations

import time
from typing import Iterator, List

import pytest

import cometbox
from cometbox import CometBoxError, RequestRejected, Unauthorized, Unavailable
from support import FakePeer, http_reply

OK = http_reply(200, b'<ok accepted="1"/>')


@pytest.fixture
def peers() -> Iterator[List[FakePeer]]:
    started: List[FakePeer] = []
    yield started
    for peer in started:
        peer.stop()


def fake(peers: List[FakePeer], replies: list, unix: bool = False) -> FakePeer:
    peer = FakePeer(replies, unix=unix)
    peers.append(peer)
    return peer


@pytest.mark.parametrize(
    "reply,cls,code,status",
    [
        (http_reply(503, b'<error code="overloaded">busy</error>'), Unavailable, "overloaded", 503),
        (http_reply(503, b'<error code="shutting-down">bye</error>'), Unavailable, "shutting-down", 503),
        (http_reply(503, b'<error code="storage-unavailable">disk full</error>'), Unavailable, "storage-unavailable", 503),
        (http_reply(429, b""), Unavailable, "overloaded", 429),
        (http_reply(401, b'<error code="unauthorized">no key</error>'), Unauthorized, "unauthorized", 401),
        (http_reply(413, b""), RequestRejected, "too-large", 413),
        (http_reply(415, b"", "text/plain"), RequestRejected, "unsupported-media-type", 415),
        (http_reply(400, b'{"error": "invalid-request", "message": "bad"}', "application/json"), RequestRejected, "invalid-request", 400),
        (http_reply(502, b'<html code="x"><body>Bad Gateway</body></html>', "text/html"), CometBoxError, "unexpected-response", 502),
        (http_reply(500, b"oops", "text/plain"), CometBoxError, "unexpected-response", 500),
        (http_reply(200, b"<html>not cometbox</html>", "text/html"), CometBoxError, "unexpected-response", 200),
        (http_reply(200, b'<ok accepted="many"/>'), CometBoxError, "unexpected-response", 200),
        (b"SSH-2.0-OpenSSH_9.2\r\n", CometBoxError, "unexpected-response", 0),
    ],
    ids=["503-overloaded", "503-shutting-down", "503-storage", "429", "401", "413", "415", "json-error",
         "proxy-502", "500", "200-html", "200-bad-ok", "not-http"],
)
def test_replies_map_to_exceptions(peers: List[FakePeer], reply: bytes, cls: type, code: str, status: int) -> None:
    peer = fake(peers, [reply])
    with pytest.raises(CometBoxError) as caught:
        cometbox.Client(peer.url, timeout=2).send("a", 1)
    assert type(caught.value) is cls, repr(caught.value)
    assert (caught.value.code, caught.value.status) == (code, status), str(caught.value)
    if isinstance(caught.value, Unavailable):
        assert caught.value.safe_to_retry is (status == 503)


def test_error_text_and_details(peers: List[FakePeer]) -> None:
    peer = fake(peers, [http_reply(400, b'<error code="invalid-json" line="7" extra="x">message 7: expected value</error>')])
    with pytest.raises(RequestRejected) as caught:
        cometbox.Client(peer.url).send("a", 1)
    e = caught.value
    assert str(e) == "cometbox: 400 invalid-json: message 7: expected value"
    assert e.line == 7
    assert e.details == {"code": "invalid-json", "line": "7", "extra": "x"}


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_no_reply_is_a_timeout_within_the_bound(peers: List[FakePeer], unix: bool) -> None:
    peer = fake(peers, ["hang"], unix=unix)
    start = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        cometbox.Client(peer.url, timeout=0.5, retries=3, retry_delay=0.01).send("a", 1)
    elapsed = time.monotonic() - start
    assert caught.value.code == "timeout"
    assert not caught.value.safe_to_retry  # the server may have applied it: not retried
    assert 0.4 < elapsed < 2.0
    assert len(peer.requests) == 1


def test_a_dropped_connection_is_lost_and_not_retried(peers: List[FakePeer]) -> None:
    peer = fake(peers, ["close", OK])
    with pytest.raises(Unavailable) as caught:
        cometbox.Client(peer.url, retries=3, retry_delay=0.01).send("a", 1)
    assert caught.value.code == "connection-lost"
    assert not caught.value.safe_to_retry
    assert len(peer.requests) == 1


def test_503_is_retried_when_asked(peers: List[FakePeer]) -> None:
    busy = http_reply(503, b'<error code="overloaded">busy</error>')
    peer = fake(peers, [busy, busy, OK])
    assert cometbox.Client(peer.url, retries=2, retry_delay=0.01).send("a", 1) == 1
    assert len(peer.requests) == 3
    peer = fake(peers, [busy, OK])
    with pytest.raises(Unavailable):
        cometbox.Client(peer.url).send("a", 1)  # retries=0: the default
    assert len(peer.requests) == 1


def test_connection_refused_is_retried_when_asked() -> None:
    client = cometbox.Client("http://127.0.0.1:9", retries=2, retry_delay=0.05, timeout=1)
    start = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        client.send("a", 1)
    elapsed = time.monotonic() - start
    assert caught.value.code == "connection-failed"
    # Waited 0.05 + 0.1 between three attempts; the upper bound (far above,
    # for a loaded machine) says the refusals were not each waited out to
    # the 1 s timeout.
    assert 0.15 - 0.01 <= elapsed < 2.5


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_the_request_on_the_wire(peers: List[FakePeer], unix: bool) -> None:
    peer = fake(peers, [OK], unix=unix)
    url = peer.url if unix else peer.url + "/prefix/"
    cometbox.Client(url, key="k3y", user_agent="test-agent").send("a", {"x": "é"}, "e")
    head, _, body = peer.requests[0].partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == ("POST / HTTP/1.1" if unix else "POST /prefix/ HTTP/1.1")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["authorization"] == "Bearer k3y"
    assert headers["content-type"] == "application/xml"
    assert headers["connection"] == "close"
    assert headers["user-agent"] == "test-agent"
    assert headers["host"] == ("localhost" if unix else f"127.0.0.1:{url.split(':')[2].split('/')[0]}")
    assert int(headers["content-length"]) == len(body)
    assert body == '<message to="a" event="e">{"x":"é"}</message>'.encode()


def test_presence_path_is_escaped(peers: List[FakePeer]) -> None:
    peer = fake(peers, [http_reply(404, b'<error code="not-found">no client</error>')])
    assert cometbox.Client(peer.url).presence("user:42@host/x y") is None
    assert peer.requests[0].startswith(b"GET /clients/user:42@host%2Fx%20y HTTP/1.1\r\n")


def test_form_of_post_token(peers: List[FakePeer]) -> None:
    peer = fake(peers, [http_reply(200, b'<token expires="1">a.b.c</token>')])
    assert cometbox.Client(peer.url).token("user:42", 60, ["room:*", "a&b"]) == "a.b.c"
    body = peer.requests[0].partition(b"\r\n\r\n")[2]
    assert body == b"client=user%3A42&ttl=60&channel=room%3A%2A&channel=a%26b"
