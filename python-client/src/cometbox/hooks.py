"""Receiving cometbox's signed hook requests (docs/hooks.md).

cometbox POSTs each event to the backend as JSON with a header::

    Cometbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with hooks.secret>

:func:`verify` checks that header against the raw body and returns the
event; :func:`allow` and :func:`deny` build the JSON answer to a
cancellable event (``connect``, ``subscribe``, ``publish``)::

    event = hooks.verify(body, environ.get("HTTP_COMETBOX_SIGNATURE", ""), SECRET)
    if event.type == "subscribe" and not may_join(event.client, event.channel):
        return hooks.deny("members only")
    return hooks.allow()

Notifications (``online``, ``offline``, ``subscribed``, ``unsubscribed``)
need only a 200; they are delivered at least once, so drop repeats by
``event.id``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import CometBoxError

__all__ = [
    "HEADER",
    "CONTENT_TYPE",
    "CANCELLABLE",
    "HookEvent",
    "SignatureError",
    "verify",
    "sign",
    "allow",
    "deny",
]

#: The header carrying the signature (WSGI: ``environ["HTTP_COMETBOX_SIGNATURE"]``).
HEADER = "Cometbox-Signature"
#: The content type of hook requests and of the answers built here.
CONTENT_TYPE = "application/json"
#: Events sent before the action, which wait for allow/deny.
CANCELLABLE = frozenset({"connect", "subscribe", "publish"})

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: Longest header read; a real one is about 80 characters.
_MAX_HEADER = 4096


class SignatureError(CometBoxError, ValueError):
    """A hook request that must not be trusted; answer it with 401 or 400.

    Codes: ``malformed-signature`` (no header, or not ``t=...,v1=...``),
    ``stale-signature`` (timestamp outside the tolerance, past or future),
    ``bad-signature`` (no ``v1`` matches), ``invalid-body`` (signed, but not
    a JSON event object).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code, 0)


_NO_DATA: Any = object()


@dataclass(frozen=True)
class HookEvent:
    """One hook event, as cometbox sent it.

    ``raw`` holds the whole decoded body, fields this class does not name
    included.
    """

    #: Unique per event: drop notifications whose id you have already seen.
    id: str
    #: ``connect``, ``subscribe``, ``publish``, ``online``, ``offline``,
    #: ``subscribed``, ``unsubscribed`` (others may come: ignore them).
    type: str
    #: The client id the event is about.
    client: Optional[str]
    #: The channel, for subscribe, publish, subscribed, unsubscribed.
    channel: Optional[str]
    #: When the event happened, Unix milliseconds (from the body).
    ts: Optional[int]
    #: Which cometbox node sent it.
    node: Optional[str]
    #: The signature's timestamp, Unix seconds.
    signed_at: int
    #: The payload of a ``publish``, else None.
    data: Any = None
    #: The Bayeux handshake's ``ext`` on ``connect``, when there is one.
    ext: Any = None
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cancellable(self) -> bool:
        """True for the events that wait for :func:`allow` / :func:`deny`."""
        return self.type in CANCELLABLE


def sign(body: bytes, secret: Union[str, bytes], timestamp: Optional[int] = None) -> str:
    """The ``Cometbox-Signature`` value for ``body`` (for tests and tools:
    it is what the server computes)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_digest(_key(secret), t, body)}"


def verify(
    body: bytes,
    header: Optional[Union[str, bytes]],
    secret: Union[str, bytes],
    tolerance: float = 300,
    now: Optional[float] = None,
) -> HookEvent:
    """Checks a hook request and returns its event.

    :param body: the raw request body, exactly as received (not re-encoded).
    :param header: the ``Cometbox-Signature`` header value.
    :param secret: the server's ``hooks.secret``.
    :param tolerance: seconds the signature's timestamp may differ from
        ``now``, either way (replays older than this are refused).
    :param now: Unix seconds to check against instead of ``time.time()``.
    :raises SignatureError: with code ``malformed-signature``,
        ``stale-signature``, ``bad-signature`` or ``invalid-body``.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("body must be the raw bytes of the request")
    body = bytes(body)
    key = _key(secret)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError("tolerance must be a number of seconds >= 0")
    timestamp, candidates = _parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"the signature's timestamp {timestamp} is {current - timestamp:+.0f} s from now, over the {tolerance:g} s tolerance",
            "stale-signature",
        )
    expected = _digest(key, timestamp, body).encode("ascii")
    matched = False
    for candidate in candidates:  # no early exit: every candidate is compared
        matched |= hmac.compare_digest(expected, candidate.lower().encode("ascii"))
    if not matched:
        raise SignatureError("no v1 signature matches the body and secret", "bad-signature")
    return _event(body, timestamp)


def allow(data: Any = _NO_DATA) -> bytes:
    """The answer that lets the action happen: ``{"allow": true}``.

    For ``publish``, ``data`` replaces the published payload (any
    JSON-serialisable value, ``None`` included).
    """
    answer: Dict[str, Any] = {"allow": True}
    if data is not _NO_DATA:
        answer["data"] = data
    return _json(answer)


def deny(reason: str = "") -> bytes:
    """The answer that refuses it: ``{"allow": false, "reason": ...}``. The
    browser gets the reason (a poll: 403 ``denied``)."""
    if not isinstance(reason, str):
        raise TypeError("reason must be a str")
    return _json({"allow": False, "reason": reason})


def _json(value: Dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _key(secret: Union[str, bytes]) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not key:
        raise ValueError("the hook secret must be a non-empty str or bytes")
    return key


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _parse_header(header: Optional[Union[str, bytes]]) -> Tuple[int, List[str]]:
    """``t=<digits>`` exactly once, ``v1=<64 hex>`` at least once; other
    schemes (``v0=``, a future ``v2=``) are ignored."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        raise SignatureError(f"no {HEADER} header", "malformed-signature")
    if not isinstance(header, str) or len(header) > _MAX_HEADER:
        raise SignatureError(f"the {HEADER} header is not a signature", "malformed-signature")
    timestamps: List[str] = []
    candidates: List[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"the {HEADER} header holds {item.strip()[:40]!r}, not name=value", "malformed-signature")
        name, value = name.strip(), value.strip()
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise SignatureError("a v1 signature is not 64 hex digits", "malformed-signature")
            candidates.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        raise SignatureError(f"the {HEADER} header needs exactly one t=<unix seconds>", "malformed-signature")
    if not candidates:
        raise SignatureError(f"the {HEADER} header holds no v1 signature", "malformed-signature")
    return int(timestamps[0]), candidates


def _event(body: bytes, signed_at: int) -> HookEvent:
    try:
        raw = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("the hook body is not JSON", "invalid-body") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("id"), str):
        raise SignatureError("the hook body is not an event object with a string id and type", "invalid-body")

    def text(name: str) -> Optional[str]:
        value = raw.get(name)
        return value if isinstance(value, str) else None

    ts = raw.get("ts")
    return HookEvent(
        id=raw["id"],
        type=raw["type"],
        client=text("client"),
        channel=text("channel"),
        ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else None,
        node=text("node"),
        signed_at=signed_at,
        data=raw.get("data"),
        ext=raw.get("ext"),
        raw=raw,
    )
