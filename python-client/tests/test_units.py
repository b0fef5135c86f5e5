"""Pure parts: XML building (checked with an independent parser), JSON
encoding, JWT minting (a vector computed with openssl), address parsing,
options."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

import cometbox
from cometbox import InvalidArgument, RawJson, _xml, jwt
from cometbox._transport import Endpoint

HOSTILE_ATTR = 'a"b\'c<d>e&f]]>g\th\ni\rj é 🎉  k'


def test_attributes_and_text_survive_an_xml_parser() -> None:
    text = 'x]]>y<z>&amp;"\'\r\n\r\t  end é'
    doc = _xml.document([_xml.command("message", [("to", HOSTILE_ATTR), ("event", None)], text)])
    root = ET.fromstring(doc)
    assert root.tag == "message"
    assert root.attrib == {"to": HOSTILE_ATTR}  # tab, LF, CR not normalised away
    assert root.text == text  # CR kept, ]]> harmless
    assert b"]]>" not in doc and b"\r" not in doc and b"\n" not in doc


def test_one_command_per_line() -> None:
    commands = [
        _xml.message("to", "a", "multi\nline\r\ntext", None, None, "text"),
        _xml.command("subscribe", [("client", "a"), ("channel", "c\nd")]),
        _xml.command("disconnect", [("client", "a")]),
    ]
    doc = _xml.document(commands)
    lines = doc.decode().split("\n")
    assert len(lines) == 3
    assert lines[0].startswith("<batch><message ")
    assert lines[1].startswith("<subscribe ") and lines[2].startswith("<disconnect ")
    assert [el.tag for el in ET.fromstring(doc)] == ["message", "subscribe", "disconnect"]
    assert _xml.document(commands[:1]).startswith(b"<message")
    assert _xml.document(commands[:1], as_batch=True).startswith(b"<batch><message")


def test_message_attributes() -> None:
    cmd = _xml.message("channel", "room:1", "t", "ev", 30, "text")
    assert _xml.document([cmd]) == b'<message channel="room:1" event="ev" type="text" ttl="30">t</message>'
    cmd = _xml.message("to", "a", None, None, None, "json")
    assert _xml.document([cmd]) == b'<message to="a">null</message>'
    cmd = _xml.message("to", "a", "", None, None, "text")
    assert _xml.document([cmd]) == b'<message to="a" type="text"/>'


@pytest.mark.parametrize(
    "data,text",
    [
        ({"a": [1, 2.5, None, True, "é"]}, '{"a":[1,2.5,null,true,"é"]}'),
        ("\x00\x1f", '"\\u0000\\u001f"'),
        ("\ufffe é", '"\\ufffe \\u00e9"'),  # a noncharacter: every non-ASCII escaped
        ("</message>", '"</message>"'),  # escaped by the XML layer, not here
        (1.0, "1.0"),
        ("🎉", '"🎉"'),
    ],
)
def test_json_encoding(data: Any, text: str) -> None:
    assert _xml.json_encode(data) == text
    assert json.loads(text) == data


@pytest.mark.parametrize("data", [float("inf"), float("nan"), {1, 2}, object(), "\ud83d", {"k": "\udfff"}, b"bytes"])
def test_json_encoding_refusals(data: Any) -> None:
    with pytest.raises(InvalidArgument):
        _xml.json_encode(data)


def test_deep_nesting_is_refused_not_crashing() -> None:
    deep: Any = []
    for _ in range(100000):
        deep = [deep]
    with pytest.raises(InvalidArgument):
        _xml.json_encode(deep)


def test_text_payloads() -> None:
    assert _xml.encode_payload("plain\ttext\n", "text") == ("plain\ttext\n", "text")
    assert _xml.encode_payload("bell \x07", "text") == ('"bell \\u0007"', "json")
    assert _xml.encode_payload(RawJson(' {"a": 1} '), "json") == (' {"a": 1} ', "json")
    with pytest.raises(InvalidArgument):
        RawJson(b"{}")  # type: ignore[arg-type]
    assert repr(RawJson("1")) == "RawJson('1')" and str(RawJson("1")) == "1"


def test_the_jwt_vector() -> None:
    # header and claims with base64url, signature with
    # openssl dgst -sha256 -hmac s3cret -binary | basenc --base64url
    expected = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwLCJjaGFubmVscyI6WyJyb29tOioiXX0."
        "JxwPV0WDI3k8ncXIL3au8zj6sKsqWTm4bp1-PoLgw5U"
    )
    assert jwt.mint("s3cret", "alice", 3600, ["room:*"], now=1700000000) == expected
    assert jwt.claims(expected) == {"sub": "alice", "iat": 1700000000, "exp": 1700003600, "channels": ["room:*"]}


def test_jwt_signature_checked_independently() -> None:
    token = jwt.mint(b"k\x00\xff", "user:42", 60, (), now=10)
    head, claims, sig = token.split(".")
    expected = hmac.new(b"k\x00\xff", f"{head}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=") == expected
    assert jwt.claims(token) == {"sub": "user:42", "iat": 10, "exp": 70}
    assert jwt.claims("not.a.jwt") is None and jwt.claims("x") is None
    with pytest.raises(InvalidArgument):
        jwt.mint("", "a")
    with pytest.raises(InvalidArgument):
        jwt.mint("s", "a", ttl=0)


@pytest.mark.parametrize(
    "url,parsed",
    [
        ("http://127.0.0.1:8481", Endpoint("http", "127.0.0.1", 8481, "", None)),
        ("http://localhost", Endpoint("http", "localhost", 80, "", None)),
        ("https://ingest.internal:9000/prefix/", Endpoint("https", "ingest.internal", 9000, "/prefix", None)),
        ("http://[::1]:8481", Endpoint("http", "::1", 8481, "", None)),
        ("unix:/run/cometbox/ingest.sock", Endpoint("unix", "localhost", 0, "", "/run/cometbox/ingest.sock")),
        ("unix:///run/cometbox/ingest.sock", Endpoint("unix", "localhost", 0, "", "/run/cometbox/ingest.sock")),
        ("UNIX:relative.sock", Endpoint("unix", "localhost", 0, "", "relative.sock")),
    ],
)
def test_addresses(url: str, parsed: Endpoint) -> None:
    assert Endpoint.parse(url) == parsed


@pytest.mark.parametrize(
    "url",
    ["", "127.0.0.1:8481", "ftp://x", "http://", "http://h:99999", "http://u:p@h", "http://h/?q=1", "http://h/#f", "unix:", "unix:/a\0b", "http://h/a b"],
)
def test_bad_addresses(url: str) -> None:
    with pytest.raises(InvalidArgument):
        cometbox.Client(url)


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0}, {"timeout": -1}, {"timeout": float("inf")}, {"timeout": "2"}, {"connect_timeout": 0},
        {"retries": -1}, {"retries": 11}, {"retries": True}, {"retry_delay": -0.1},
        {"key": "a\nb"}, {"key": 5}, {"user_agent": "x\ry"}, {"secret": 5},
    ],
)
def test_bad_options(options: Any) -> None:
    with pytest.raises(InvalidArgument):
        cometbox.Client("http://127.0.0.1:8481", **options)


def test_the_constructor_never_connects() -> None:
    client = cometbox.Client("unix:/nonexistent.sock", key="", secret="")
    assert repr(client) == "cometbox.Client('unix:/nonexistent.sock')"


def test_local_tokens_need_no_server() -> None:
    client = cometbox.Client("http://127.0.0.1:9", secret="s")
    claims = jwt.claims(client.token("a", 5, ["x", "y*"]))
    assert claims is not None and claims["channels"] == ["x", "y*"] and claims["exp"] - claims["iat"] == 5


def _ttl_and_channels(token: str) -> Any:
    claims = jwt.claims(token)
    assert claims is not None
    return claims["exp"] - claims["iat"], claims.get("channels")


@pytest.mark.parametrize("call", [
    lambda c: c.token("a", 5, ["x", "y*"]),                 # the PHP order: token($client, $ttl, $channels)
    lambda c: c.token("a", 5, channels=["x", "y*"]),
    lambda c: c.token("a", ttl=5, channels=["x", "y*"]),
    lambda c: c.token("a", channels=["x", "y*"], ttl=5),    # keywords, any order
    lambda c: c.token(client="a", channels=("x", "y*"), ttl=5),
])
def test_token_arguments_in_the_php_order_or_by_keyword(call: Any) -> None:
    import warnings
    client = cometbox.Client("http://127.0.0.1:9", secret="s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ttl_and_channels(call(client)) == (5, ["x", "y*"])
        assert _ttl_and_channels(client.token("a")) == (3600, None)
        assert _ttl_and_channels(client.token("a", 60)) == (60, None)
        assert _ttl_and_channels(client.token("a", None, "x")) == (3600, ["x"])


@pytest.mark.parametrize("call, expected", [
    (lambda c: c.token("a", ["x", "y*"], ttl=5), (5, ["x", "y*"])),   # what the 0.1 README showed
    (lambda c: c.token("a", ["x", "y*"], 5), (5, ["x", "y*"])),
    (lambda c: c.token("a", ("x",)), (3600, ["x"])),
    (lambda c: c.token("a", "x*"), (3600, ["x*"])),
])
def test_token_still_understands_the_old_order_with_a_warning(call: Any, expected: Any) -> None:
    client = cometbox.Client("http://127.0.0.1:9", secret="s")
    with pytest.deprecated_call(match="token\\(client, ttl, channels\\)"):
        assert _ttl_and_channels(call(client)) == expected


@pytest.mark.parametrize("call", [
    lambda c: c.token("a", 5, ["x"], 6),
    lambda c: c.token("a", 5, ttl=6),
    lambda c: c.token("a", 5, ["x"], channels=["y"]),
    lambda c: c.token("a", ["x"], channels=["y"]),
])
def test_token_arguments_given_twice_are_refused(call: Any) -> None:
    import warnings
    client = cometbox.Client("http://127.0.0.1:9", secret="s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError):
            call(client)
