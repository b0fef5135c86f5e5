"""The client against the real cometbox binary: TCP and Unix socket, with an
ingest key and without. What a browser receives is checked by polling the
public listener with a token from token()."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Tuple, Type

import pytest

import cometbox
from cometbox import CometBoxError, InvalidArgument, RawJson, RequestRejected, Unauthorized, Unavailable
from cometbox import jwt
import support
from support import Server


def datas(messages: List[dict]) -> List[Any]:
    return [m["data"] for m in messages]


def test_send_arrives_in_a_poll(server: Server, cid: str) -> None:
    client = server.client()
    assert client.send(cid, {"text": "Your export is ready", "n": [1, 2.5, None, True]}, "notice") == 1
    assert client.send(cid, "plain text", type="text", ttl=60) == 1
    token = client.token(cid)
    messages = server.messages(token)
    assert datas(messages) == [{"text": "Your export is ready", "n": [1, 2.5, None, True]}, "plain text"]
    assert messages[0]["event"] == "notice"
    assert "event" not in messages[1]


def test_raw_json_is_sent_as_is(server: Server, cid: str) -> None:
    client = server.client()
    client.send(cid, RawJson('{"already": ["encoded", 1]}'))
    assert datas(server.messages(client.token(cid))) == [{"already": ["encoded", 1]}]


def test_subscribe_publish_unsubscribe(server: Server, cid: str) -> None:
    client = server.client()
    room, other = f"room:{cid}", f"/chat/{cid}"
    assert client.subscribe(cid, room) == 1
    assert client.subscribe(cid, [other, f"{room}-b"]) == 2
    assert client.subscribe(cid, []) == 0
    assert client.publish(room, {"from": "bob"}, "chat") == 1
    assert client.publish(other, "hi", type="text") == 1
    assert client.unsubscribe(cid, [room, f"{room}-b"]) == 2
    client.publish(room, "after unsubscribe")
    assert client.unsubscribe(cid, other) == 1
    client.publish(other, "after unsubscribe")
    messages = server.messages(client.token(cid))
    assert datas(messages) == [{"from": "bob"}, "hi"]
    assert [m.get("channel") for m in messages] == [room, other]
    assert messages[0]["event"] == "chat"


def test_disconnect_drops_the_mailbox(server: Server, cid: str) -> None:
    client = server.client()
    client.send(cid, 1)
    client.subscribe(cid, f"room:{cid}")
    assert client.presence(cid) is not None
    assert client.disconnect(cid) == 1
    assert client.presence(cid) is None
    client.publish(f"room:{cid}", "not for a disconnected client")
    assert server.messages(client.token(cid)) == []


def test_batch_is_applied_in_order(server: Server, cid: str) -> None:
    client = server.client()
    room = f"room:{cid}"
    batch = (
        client.batch()
        .send(cid, {"text": "You joined"}, "notice")
        .subscribe(cid, room)
        .publish(room, {"from": "system"}, "chat", ttl=30)
        .unsubscribe(cid, "lobby")
        .disconnect(f"{cid}-other")
    )
    assert len(batch) == 5
    assert batch.to_xml().startswith(b"<batch>")
    assert batch.commit() == 5
    assert len(batch) == 0
    assert batch.commit() == 0  # empty: no request
    assert datas(server.messages(client.token(cid))) == [{"text": "You joined"}, {"from": "system"}]


def test_an_empty_batch_sends_nothing() -> None:
    # Pointed at a closed port: a request would raise Unavailable.
    client = cometbox.Client("http://127.0.0.1:9", timeout=1)
    assert client.batch().commit() == 0
    assert client.subscribe("a", []) == 0


def test_batch_is_atomic(server: Server, cid: str) -> None:
    client = server.client()
    room = f"room:{cid}"
    batch = (
        client.batch()
        .send(cid, "first")
        .subscribe(cid, room)
        .send(cid, RawJson('{"broken": '))
        .send(cid, "fourth")
    )
    with pytest.raises(RequestRejected) as caught:
        batch.commit()
    assert caught.value.code == "invalid-json"
    assert caught.value.line == 3  # one command per line: the third
    assert len(batch) == 4  # kept after a failure
    assert server.messages(client.token(cid)) == []
    presence = client.presence(cid)
    assert presence is None or room not in presence.get("channels", [])
    # a bad id in the last command: still nothing
    with pytest.raises(RequestRejected) as caught:
        client.batch().send(cid, 1).subscribe(cid, room).send("bad id", 2).commit()
    assert caught.value.code == "invalid-id"
    assert caught.value.line == 3
    assert server.messages(client.token(cid)) == []


def test_tokens_from_the_server_and_minted_locally(server: Server, cid: str) -> None:
    remote = server.client()
    local = server.client(secret=support.SECRET)
    room = f"room:{cid}"
    remote.send(cid, "queued")
    for client in (remote, local):
        token = client.token(cid, 120, [f"room:{cid}*"])
        claims = jwt.claims(token)
        assert claims is not None
        assert claims["sub"] == cid
        assert claims["channels"] == [f"room:{cid}*"]
        assert 115 <= claims["exp"] - time.time() <= 125
        status, body = server.poll(token, timeout="1", channels=room)
        assert status == 200, body
        assert datas(body["messages"]) == ["queued"]
    # both subscribed the client through ?channels=
    remote.publish(room, "to the room")
    assert "to the room" in datas(server.messages(local.token(cid)))
    # a single str is one channel; the default ttl is an hour
    claims = jwt.claims(local.token(cid, channels="room:*"))
    assert claims is not None and claims["channels"] == ["room:*"]
    assert 3590 <= claims["exp"] - claims["iat"] <= 3600
    claims = jwt.claims(remote.token(cid))
    assert claims is not None and "channels" not in claims
    assert 3590 <= claims["exp"] - time.time() <= 3610


def test_a_token_does_not_grant_other_channels(tcp: Server, cid: str) -> None:
    token = tcp.client().token(cid, channels=["room:a"])
    status, body = tcp.poll(token, timeout="1", channels="room:b")
    assert status == 403 and body["error"] == "channel-forbidden"
    forged = jwt.mint("not-the-secret", cid)
    status, body = tcp.poll(forged, timeout="1")
    assert status == 401 and body["error"] == "invalid-token"


def test_stats_presence_health(server: Server, cid: str) -> None:
    client = server.client()
    assert client.health() is True
    assert client.presence(cid) is None
    client.send(cid, 1)
    client.subscribe(cid, f"room:{cid}")
    presence = client.presence(cid)
    assert presence is not None
    assert presence["pending_messages"] == 1
    assert presence["channels"] == [f"room:{cid}"]
    assert presence["online"] is False
    stats = client.stats()
    for name in ("clients", "open_polls", "queued_messages", "messages_in", "messages_out", "uptime_s"):
        assert isinstance(stats[name], int), name
    assert stats["clients"] >= 1 and stats["messages_in"] >= 1


HOSTILE = [
    'quotes " and \' here',
    "<message to=\"mallory\">{}</message>",
    "a & b &amp; &#x41; &lt;",
    "]]> and <![CDATA[x]]>",
    "non-ASCII: é ü ß 中文 🎉 \u2028 \u00a0",
    "whitespace: \t tab \n newline \r\n crlf \r cr  ",
    "  leading and trailing  ",
    "<!DOCTYPE x [<!ENTITY e \"boom\">]>&e;",
    "\x7f DEL and \u0085 NEL and \ufffd",
]


def test_hostile_strings_arrive_intact(server: Server, cid: str) -> None:
    client = server.client()
    for s in HOSTILE:
        client.send(cid, {"s": s, s: [s]}, event="e")
        client.send(cid, s, type="text")
    # events: anything printable (the server refuses control characters there)
    client.send(cid, 1, event='ev "<&]]>é')
    client.batch().send(cid, HOSTILE).send(cid, "\n".join(HOSTILE), type="text").commit()
    messages = server.messages(client.token(cid))
    expected: List[Any] = []
    for s in HOSTILE:
        expected += [{"s": s, s: [s]}, s]
    expected += [1, HOSTILE, "\n".join(HOSTILE)]
    assert datas(messages) == expected
    assert messages[2 * len(HOSTILE)]["event"] == 'ev "<&]]>é'


def test_control_characters_in_payloads_still_arrive(server: Server, cid: str) -> None:
    """JSON escapes them; a text payload holding them is sent as a JSON string."""
    client = server.client()
    nasty = "nul \x00 bell \x07 esc \x1b vt \x0b ff \x0c us \x1f noncharacters \ufffe \uffff"
    client.send(cid, {"k": nasty})
    client.send(cid, nasty, type="text")
    client.send(cid, ["\ufffe"])
    assert datas(server.messages(client.token(cid))) == [{"k": nasty}, nasty, ["\ufffe"]]


CANNOT_CARRY: List[Tuple[str, Callable[[cometbox.Client], Any]]] = [
    ("client id", lambda c: c.send("a\x01b", 1)),
    ("channel", lambda c: c.publish("room\x00", 1)),
    ("event", lambda c: c.send("a", 1, event="e\x1b")),
    ("event U+FFFE", lambda c: c.send("a", 1, event="e\ufffe")),
    ("subscribe channel", lambda c: c.subscribe("a", ["ok", "bad\x0c"])),
    ("disconnect", lambda c: c.disconnect("\x08")),
    ("raw json", lambda c: c.send("a", RawJson('"\x01"'))),
    ("lone surrogate, json", lambda c: c.send("a", "\ud800")),
    ("lone surrogate, text", lambda c: c.send("a", "x\udfff", type="text")),
    ("text that is not a str", lambda c: c.send("a", b"bytes", type="text")),
    ("unknown type", lambda c: c.send("a", 1, type="xml")),
    ("not JSON-serialisable", lambda c: c.send("a", {1, 2})),
    ("NaN", lambda c: c.send("a", float("nan"))),
    ("ttl 0", lambda c: c.send("a", 1, ttl=0)),
    ("ttl float", lambda c: c.send("a", 1, ttl=1.5)),  # type: ignore[arg-type]
    ("ttl bool", lambda c: c.send("a", 1, ttl=True)),
    ("client id not a str", lambda c: c.send(42, 1)),  # type: ignore[arg-type]
    ("client id None", lambda c: c.send(None, 1)),  # type: ignore[arg-type]
    ("channel None", lambda c: c.publish(None, 1)),  # type: ignore[arg-type]
    ("subscribe client None", lambda c: c.subscribe(None, "room")),  # type: ignore[arg-type]
    ("subscribe channel None", lambda c: c.subscribe("a", [None])),  # type: ignore[list-item]
    ("disconnect None", lambda c: c.disconnect(None)),  # type: ignore[arg-type]
    ("presence None", lambda c: c.presence(None)),  # type: ignore[arg-type]
    ("token client None", lambda c: c.token(None)),  # type: ignore[arg-type]
    ("token ttl 0", lambda c: c.token("a", ttl=0)),
    ("token channel not a str", lambda c: c.token("a", channels=[1])),  # type: ignore[list-item]
    ("batch", lambda c: c.batch().send("a", 1).publish("b\x02", 2)),
    ("bad header", lambda c: c.request("GET", "/stats", None, {"X-A": "b\r\nc: d"})),
    ("bad path", lambda c: c.request("GET", "/a b")),
]


@pytest.mark.parametrize("name,call", CANNOT_CARRY, ids=[n for n, _ in CANNOT_CARRY])
def test_what_xml_cannot_carry_is_refused_before_sending(name: str, call: Callable[[cometbox.Client], Any]) -> None:
    # Nothing listens on port 9 here: had the client sent anything, it
    # would raise Unavailable, not InvalidArgument.
    client = cometbox.Client("http://127.0.0.1:9", timeout=1)
    with pytest.raises(InvalidArgument) as caught:
        call(client)
    assert caught.value.code == "invalid-argument"
    assert isinstance(caught.value, ValueError)


def _wrong_key(server: Server) -> Callable[[], Any]:
    return lambda: server.client(key="wrong").send("a", 1)


def test_server_errors_are_typed_exceptions(server: Server, cid: str) -> None:
    client = server.client()
    cases: List[Tuple[str, Callable[[], Any], Type[CometBoxError], str, int]] = [
        ("invalid client id", lambda: client.send("bad id with spaces", 1), RequestRejected, "invalid-id", 400),
        ("invalid channel", lambda: client.subscribe(cid, "no spaces allowed"), RequestRejected, "invalid-id", 400),
        ("id too long", lambda: client.send("a" * 129, 1), RequestRejected, "invalid-id", 400),
        ("empty event", lambda: client.send(cid, 1, event=""), RequestRejected, "invalid-request", 400),
        (
            "payload over max_payload_bytes",
            lambda: client.send(cid, "x" * (support.MAX_PAYLOAD_BYTES + 10)),
            RequestRejected, "too-large", 413,
        ),
        (
            "body over max_body_bytes",
            lambda: client.post_xml(client.batch().send(cid, "x" * 4000).to_xml() * 300),
            RequestRejected, "too-large", 413,
        ),
        (
            "body over max_body_bytes, a real batch",
            lambda: _big_batch(client, cid).commit(),
            RequestRejected, "too-large", 413,
        ),
        ("ttl of 0", lambda: client.post_xml(f'<message to="{cid}" ttl="0">1</message>'), RequestRejected, "invalid-request", 400),
        ("invalid json", lambda: client.send(cid, RawJson('{"unterminated": ')), RequestRejected, "invalid-json", 400),
        ("malformed xml", lambda: client.post_xml('<message to="a">1'), RequestRejected, "malformed-xml", 400),
        (
            "doctype",
            lambda: client.post_xml('<!DOCTYPE m [<!ENTITY x "y">]><message to="a">&x;</message>'),
            RequestRejected, "malformed-xml", 400,
        ),
        ("unknown element", lambda: client.post_xml('<frobnicate client="a"/>'), RequestRejected, "invalid-request", 400),
        (
            "not xml",
            lambda: client.request("POST", "/", b'{"to":"a"}', {"Content-Type": "application/json"}),
            RequestRejected, "unsupported-media-type", 415,
        ),
        ("token for an invalid id", lambda: client.token("bad id"), RequestRejected, "invalid-id", 400),
        ("unknown endpoint", lambda: client.request("GET", "/nope"), CometBoxError, "not-found", 404),
    ]
    if server.key:
        cases += [
            ("wrong key", _wrong_key(server), Unauthorized, "unauthorized", 401),
            ("no key", lambda: server.client(key=None).stats(), Unauthorized, "unauthorized", 401),
            ("no key, presence", lambda: server.client(key=None).presence(cid), Unauthorized, "unauthorized", 401),
            ("no key, token", lambda: server.client(key=None).token(cid), Unauthorized, "unauthorized", 401),
        ]
    for name, call, cls, code, status in cases:
        with pytest.raises(CometBoxError) as caught:
            call()
        e = caught.value
        assert type(e) is cls, f"{name}: {e!r}"
        assert (e.code, e.status) == (code, status), f"{name}: {e}"
        assert str(e).startswith(f"cometbox: {status} {code}"), name
    # nothing of the above reached the mailbox
    assert server.messages(server.client().token(cid)) == []


def _big_batch(client: cometbox.Client, cid: str) -> cometbox.Batch:
    batch = client.batch()
    for _ in range(300):  # 300 x 4000 bytes > 1 MiB
        batch.send(cid, "x" * 4000)
    return batch


def test_invalid_json_names_the_line(tcp: Server) -> None:
    xml = '<batch>\n<message to="a">1</message>\n<message to="a">{bad</message>\n</batch>'
    with pytest.raises(RequestRejected) as caught:
        tcp.client().post_xml(xml)
    assert caught.value.code == "invalid-json"
    assert caught.value.line == 3
    assert caught.value.details["code"] == "invalid-json"


def test_message_ttl_expires(tcp: Server, cid: str) -> None:
    client = tcp.client()
    client.send(cid, "short-lived", ttl=1)
    client.send(cid, "long-lived", ttl=60)
    token = client.token(cid)
    assert datas(tcp.messages(token)) == ["short-lived", "long-lived"]
    support.wait_for(lambda: datas(tcp.messages(token)) == ["long-lived"], 10, "the 1 s message to expire", 0.1)


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_a_stopped_server_is_unavailable_at_once(unix: bool) -> None:
    server = Server(unix=unix, key=True)
    try:
        client = server.client(timeout=1.5)
        retrying = server.client(timeout=1.5, retries=2, retry_delay=0.05)
        assert client.send("doomed", 1) == 1
    finally:
        server.stop()  # SIGTERM, waits for the exit
    for c, bound in ((client, 1.0), (retrying, 1.5)):
        start = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            c.send("doomed", 2)
        elapsed = time.monotonic() - start
        assert caught.value.code == "connection-failed", str(caught.value)
        assert caught.value.safe_to_retry
        assert caught.value.status == 0
        assert elapsed < bound, f"took {elapsed:.2f} s"
        assert c.health() is False


def test_a_missing_socket_is_unavailable() -> None:
    client = cometbox.Client("unix:///nonexistent/cometbox.sock", timeout=1)
    with pytest.raises(Unavailable) as caught:
        client.stats()
    assert caught.value.code == "connection-failed"
    assert "unix:/nonexistent/cometbox.sock" in str(caught.value)
