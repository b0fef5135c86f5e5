"""Builds ingest XML documents, and checks that XML 1.0 can carry every string.

Escaping is done here by hand, for text and attributes separately, because
the standard library's helpers each miss a case (``xml.sax.saxutils.escape``
leaves ``\\r`` as is, which parsers turn into ``\\n``; ElementTree writes
``\\n`` in attributes raw, which parsers turn into a space):

- text: ``&``, ``<``, ``>`` (so ``]]>`` cannot appear), and ``\\r`` and
  ``\\n`` as character references (kept exactly; one command per line);
- attributes (always double-quoted): the same, plus ``"`` and tab.

Characters XML 1.0 cannot carry at all, even escaped (C0 controls other
than tab, LF and CR; lone surrogates; U+FFFE and U+FFFF), raise
:class:`~cometbox.errors.InvalidArgument`, except inside JSON payloads,
where JSON's own ``\\uXXXX`` escapes carry them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .errors import InvalidArgument

#: One character XML 1.0 cannot hold.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "&#10;"}
_ATTR_ESCAPES = dict(_TEXT_ESCAPES, **{'"': "&quot;", "\t": "&#9;"})
_TEXT_SPECIAL = re.compile("[&<>\r\n]")
_ATTR_SPECIAL = re.compile('[&<>\r"\t\n]')


class Command(NamedTuple):
    """One ingest command: element name, attributes (None = omitted), text."""

    name: str
    attributes: Tuple[Tuple[str, Optional[str]], ...]
    text: Optional[str]


class RawJson:
    """A payload that is already JSON text, sent as it is (not encoded again).

    The server checks that it parses (``RequestRejected`` with code
    ``invalid-json`` otherwise)::

        client.send("alice", RawJson('{"n": 1}'))
    """

    __slots__ = ("json",)

    def __init__(self, json: str) -> None:  # noqa: A002 - mirrors PHP's RawJson::$json
        if not isinstance(json, str):
            raise InvalidArgument(f"RawJson takes a str, got {type(json).__name__}")
        self.json = json

    def __str__(self) -> str:
        return self.json

    def __repr__(self) -> str:
        return f"RawJson({self.json!r})"


def assert_xml_safe(value: str, what: str) -> None:
    """Raises InvalidArgument when ``value`` holds a character XML 1.0 cannot carry."""
    match = _NOT_XML_CHAR.search(value)
    if match is not None:
        raise InvalidArgument(f"{what} holds U+{ord(match.group()):04X}, which XML 1.0 cannot carry")


def escape_text(value: str) -> str:
    """Escapes element text (``&``, ``<``, ``>``, ``\\r``, ``\\n``)."""
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group()], value)


def escape_attribute(value: str) -> str:
    """Escapes a double-quoted attribute value (also ``"`` and tab)."""
    return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES[m.group()], value)


def json_encode(data: Any) -> str:
    """Compact JSON for a payload; InvalidArgument when it cannot be encoded.

    Non-ASCII is written as is, control characters as ``\\u`` escapes (json
    always does); a value holding U+FFFE/U+FFFF is written with every
    non-ASCII character escaped; one holding a lone surrogate is refused
    (the server would refuse the escape anyway).
    """
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidArgument(f"the payload cannot be JSON-encoded: {e}") from None
    if _NOT_XML_CHAR.search(text) is not None:
        if _SURROGATE.search(text) is not None:
            raise InvalidArgument("the payload holds a lone surrogate, which is not valid Unicode")
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text


def encode_payload(data: Any, type: str) -> Tuple[str, str]:  # noqa: A002
    """The text of a ``<message>`` and the type to send it as.

    - ``json``: ``data`` JSON-encoded; a :class:`RawJson` is sent verbatim.
    - ``text``: ``data`` must be a str. When it holds characters XML cannot
      carry, it is sent as ``type="json"`` holding the JSON string instead:
      the browser receives exactly the same string.
    """
    if type == "text":
        if not isinstance(data, str):
            raise InvalidArgument(f"a type='text' payload must be a str, got {type_name(data)}")
        if _SURROGATE.search(data) is not None:
            raise InvalidArgument("the text payload holds a lone surrogate, which is not valid Unicode")
        if _NOT_XML_CHAR.search(data) is not None:
            return json_encode(data), "json"
        return data, "text"
    if type != "json":
        raise InvalidArgument(f"message type must be 'json' or 'text', got {type!r}")
    if isinstance(data, RawJson):
        assert_xml_safe(data.json, "the RawJson payload")
        return data.json, "json"
    return json_encode(data), "json"


def type_name(value: Any) -> str:
    return type(value).__name__


def command(
    name: str,
    attributes: Sequence[Tuple[str, Optional[str]]],
    text: Optional[str] = None,
    required: int = 1,
) -> Command:
    """One command, every string checked now; the first ``required``
    attributes (the client id or channel) may not be None."""
    for attr, value in attributes[:required]:
        if not isinstance(value, str):
            raise InvalidArgument(f"the {attr} of <{name}> must be a str, got {type_name(value)}")
    for attr, value in attributes:
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"the {attr} of <{name}> must be a str, got {type_name(value)}")
        assert_xml_safe(value, f"the {attr} attribute of <{name}>")
    if text is not None:
        assert_xml_safe(text, f"the text of <{name}>")
    return Command(name, tuple(attributes), text)


def message(target_attr: str, target: str, data: Any, event: Optional[str], ttl: Optional[int], type: str) -> Command:  # noqa: A002
    """A checked ``<message>`` command (``target_attr`` is ``to`` or ``channel``)."""
    text, sent_type = encode_payload(data, type)
    ttl_text: Optional[str] = None
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise InvalidArgument(f"ttl must be a whole number of seconds (int), got {type_name(ttl)}")
        if ttl < 1:
            raise InvalidArgument("ttl must be at least 1 second")
        ttl_text = str(ttl)
    attributes: List[Tuple[str, Optional[str]]] = [
        (target_attr, target),
        ("event", event),
        ("type", None if sent_type == "json" else sent_type),
        ("ttl", ttl_text),
    ]
    return command("message", attributes, text)


def _element(cmd: Command) -> str:
    attrs = "".join(f' {name}="{escape_attribute(value)}"' for name, value in cmd.attributes if value is not None)
    if cmd.text:
        return f"<{cmd.name}{attrs}>{escape_text(cmd.text)}</{cmd.name}>"
    return f"<{cmd.name}{attrs}/>"


def document(commands: Sequence[Command], as_batch: bool = False) -> bytes:
    """The UTF-8 document: one command as its element, else a ``<batch>``.

    Each command takes exactly one line (newlines in values are escaped),
    the first one sharing line 1 with ``<batch>``, so the ``line`` of a
    server error is the 1-based position of the command it names.
    """
    body = "\n".join(_element(c) for c in commands)
    if as_batch or len(commands) != 1:
        body = f"<batch>{body}</batch>"
    return body.encode("utf-8")

