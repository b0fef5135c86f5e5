"""The :class:`Client`: what a Python backend calls to push to browsers."""

from __future__ import annotations

import json
import platform
import re
import time
import urllib.parse
import warnings
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from . import _xml, jwt
from ._transport import Endpoint, Response, exchange
from .batch import Batch
from .errors import CometBoxError, InvalidArgument, RequestRejected, Unauthorized, Unavailable

__version__ = "0.2.0"

_METHOD = re.compile(r"[A-Z]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")

_UNSET: Any = object()


def _token_arguments(args: tuple, ttl: Any, channels: Any) -> tuple:
    """``(ttl, channels)`` from :meth:`Client.token`'s arguments after the
    client id: ``(ttl, channels)`` positionally and/or by keyword, or the
    version 0.1 order ``(channels, ttl)`` when the first positional one is
    a channel name or an iterable of them (not a number)."""
    if len(args) > 2:
        raise TypeError(f"token() takes at most 3 positional arguments ({len(args) + 1} given)")
    positional = list(args)
    legacy = bool(positional) and (
        isinstance(positional[0], str) or
        (not isinstance(positional[0], (int, float)) and positional[0] is not None and _iterable(positional[0]))
    )
    if legacy:
        warnings.warn(
            "token(client, channels, ttl) is the order of cometbox 0.1; "
            "the order is now token(client, ttl, channels), as in the PHP client "
            "(or pass keywords: token(client, ttl=..., channels=...))",
            DeprecationWarning,
            stacklevel=3,
        )
        positional = positional[1:2] + positional[:1]   # [ttl?, channels]
        if len(positional) == 1:
            positional = [_UNSET] + positional
    names = ("ttl", "channels")
    values = {"ttl": ttl, "channels": channels}
    for name, value in zip(names, positional):
        if value is _UNSET:
            continue
        if values[name] is not _UNSET:
            raise TypeError(f"token() got multiple values for argument '{name}'")
        values[name] = value
    return (
        None if values["ttl"] is _UNSET else values["ttl"],
        () if values["channels"] is _UNSET else values["channels"],
    )


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


#: The code a status implies when the reply does not name one.
_DEFAULT_CODES = {
    400: "invalid-request",
    401: "unauthorized",
    404: "not-found",
    413: "too-large",
    415: "unsupported-media-type",
    429: "overloaded",
    503: "overloaded",
}


class Client:
    """Talks to the ingest listener of a cometbox server::

        client = cometbox.Client("http://127.0.0.1:8481", key=os.environ.get("COMETBOX_INGEST__KEY"))
        client.send("alice", {"text": "Your export is ready"}, "notice")

    Every call is one short HTTP request (``Connection: close``); the
    constructor never connects. Failures raise a :class:`CometBoxError`
    subclass. Nothing is retried unless ``retries`` is set, and then only
    when the protocol guarantees nothing was applied (the connection could
    not be made, or the server answered 503).

    :param ingest: ``http://host:port[/prefix]``, ``https://...``, or a Unix
        socket, ``unix:/run/cometbox/ingest.sock`` (``unix:///...`` too).
    :param key: the server's ``ingest.key``, sent as ``Authorization: Bearer``;
        ``None`` or ``""`` mean none.
    :param secret: the server's ``auth.secret``: :meth:`token` then mints
        tokens locally instead of asking the server.
    :param timeout: seconds to wait for the server at each step (connecting,
        sending, each read of the reply).
    :param connect_timeout: seconds to connect; defaults to ``timeout``.
    :param retries: extra attempts when nothing was applied.
    :param retry_delay: seconds before the first retry, doubled for each next one.
    """

    def __init__(
        self,
        ingest: str = "http://127.0.0.1:8481",
        *,
        key: Optional[str] = None,
        secret: Optional[Union[str, bytes]] = None,
        timeout: float = 2.0,
        connect_timeout: Optional[float] = None,
        retries: int = 0,
        retry_delay: float = 0.2,
        user_agent: Optional[str] = None,
    ) -> None:
        self._endpoint = Endpoint.parse(ingest)
        self._key = _optional_header_value(key, "key")
        if secret is not None and not isinstance(secret, (str, bytes)):
            raise InvalidArgument("secret must be a str or bytes")
        self._secret = secret if secret else None
        self._timeout = _positive(timeout, "timeout")
        self._connect_timeout = self._timeout if connect_timeout is None else _positive(connect_timeout, "connect_timeout")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise InvalidArgument("retries must be an int from 0 to 10")
        self._retries = retries
        if retry_delay != 0:
            _positive(retry_delay, "retry_delay")
        self._retry_delay = float(retry_delay)
        self._user_agent = _optional_header_value(user_agent, "user_agent") or (
            f"cometbox-python/{__version__} Python/{platform.python_version()}"
        )

    def __repr__(self) -> str:
        return f"cometbox.Client({self._endpoint.describe()!r})"

    # ------------------------------------------------------------ commands

    def send(
        self,
        client: str,
        data: Any,
        event: Optional[str] = None,
        *,
        ttl: Optional[int] = None,
        type: str = "json",  # noqa: A002
    ) -> int:
        """Queues a message in one client's mailbox; returns 1.

        :param data: any JSON-serialisable value (or a :class:`RawJson`); with
            ``type="text"``, a str delivered to the browser as a JSON string.
        :param event: a name the page can dispatch on.
        :param ttl: seconds (>= 1) the message may wait undelivered, capped
            by the server's ``limits.message_ttl``.
        """
        return self.post_xml(_xml.document([_xml.message("to", client, data, event, ttl, type)]))

    def publish(
        self,
        channel: str,
        data: Any,
        event: Optional[str] = None,
        *,
        ttl: Optional[int] = None,
        type: str = "json",  # noqa: A002
    ) -> int:
        """Queues a message for every client subscribed to ``channel`` now; returns 1."""
        return self.post_xml(_xml.document([_xml.message("channel", channel, data, event, ttl, type)]))

    def subscribe(self, client: str, channels: Union[str, Iterable[str]]) -> int:
        """Adds the client to one channel, or to several in one batch; returns the count."""
        return self.batch().subscribe(client, channels).commit()

    def unsubscribe(self, client: str, channels: Union[str, Iterable[str]]) -> int:
        """Removes the client from one channel, or from several in one batch."""
        return self.batch().unsubscribe(client, channels).commit()

    def disconnect(self, client: str) -> int:
        """Drops the client's mailbox and subscriptions and ends its open polls (logout, ban)."""
        return self.post_xml(_xml.document([_xml.command("disconnect", [("client", client)])]))

    def batch(self) -> Batch:
        """A builder that sends many commands in one atomic request."""
        return Batch(self)

    # -------------------------------------------------------------- tokens

    def token(
        self,
        client: str,
        *args: Any,
        ttl: Optional[int] = _UNSET,
        channels: Union[str, Iterable[str]] = _UNSET,
    ) -> str:
        """A token for the page to hand to ``/poll`` (the JS client's ``token``).

        ``token(client, ttl=None, channels=())``: the same order as the PHP
        client's ``token($clientId, $ttl, $channels)`` and as
        :func:`cometbox.jwt.mint`. Keywords work in any order
        (``token(client, channels=[...], ttl=60)``).

        With a ``secret``, minted locally (HS256; claims ``sub``, ``iat``,
        ``exp``, ``channels``); otherwise asked from the server with
        ``POST /token``, which signs with its own secret and caps the ttl.

        :param ttl: lifetime in seconds; ``None`` (the default) means 3600.
        :param channels: channel names, or prefixes ending in ``*``, the page
            may subscribe to by itself (a single str is one channel).

        The order of version 0.1 (``token(client, channels, ttl)``) is still
        understood, with a :class:`DeprecationWarning`, when the second
        positional argument is a channel name or a list of them rather
        than a number.
        """
        ttl, channels = _token_arguments(args, ttl, channels)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise InvalidArgument("token ttl must be a whole number of seconds >= 1")
        if not isinstance(client, str):
            raise InvalidArgument(f"the client id must be a str, got {type(client).__name__}")
        names = [channels] if isinstance(channels, str) else list(channels)
        if self._secret is not None:
            return jwt.mint(self._secret, client, jwt.DEFAULT_TTL if ttl is None else ttl, names)
        pairs = [("client", client)]
        if ttl is not None:
            pairs.append(("ttl", str(ttl)))
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgument(f"channel names must be str, got {type(name).__name__}")
            pairs.append(("channel", name))
        body = urllib.parse.urlencode(pairs).encode("ascii")
        response = self.request("POST", "/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
        root = _parse_xml(response.body)
        if root is None or root.tag != "token" or not (root.text or "").strip():
            raise CometBoxError(f"unexpected reply to POST /token: {_excerpt(response.body)}", "unexpected-response", response.status)
        return (root.text or "").strip()

    # ---------------------------------------------------------- inspection

    def stats(self) -> Dict[str, Any]:
        """The server's counters (``GET /stats``): ``clients``, ``open_polls``,
        ``queued_messages``, ``messages_in``, ``messages_out``, ``uptime_s``, ..."""
        return _json_object(self.request("GET", "/stats"))

    def presence(self, client: str) -> Optional[Dict[str, Any]]:
        """``GET /clients/<id>``: ``online``, ``open_polls``, ``pending_messages``,
        ``channels``, ...; ``None`` when the server does not know the client."""
        if not isinstance(client, str):
            raise InvalidArgument(f"the client id must be a str, got {type(client).__name__}")
        response = self._exchange("GET", "/clients/" + urllib.parse.quote(client, safe=":@"), None, {})
        if response.status == 404:
            return None
        _check(response)
        return _json_object(response)

    def health(self) -> bool:
        """True when ``GET /health`` answers 200; False otherwise, a down server included."""
        try:
            return self._exchange("GET", "/health", None, {}).status == 200
        except Unavailable:
            return False

    # ----------------------------------------------------------- low level

    def post_xml(self, xml: Union[str, bytes]) -> int:
        """Posts an ingest document as it is; returns the ``accepted`` count."""
        body = xml.encode("utf-8") if isinstance(xml, str) else xml
        response = self.request("POST", "/", body, {"Content-Type": "application/xml"})
        root = _parse_xml(response.body)
        accepted = None if root is None else root.get("accepted", "")
        if root is None or root.tag != "ok" or accepted is None or not accepted.isdigit():
            raise CometBoxError(f"unexpected reply to an ingest request: {_excerpt(response.body)}", "unexpected-response", response.status)
        return int(accepted)

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """Any request to the ingest listener, the key added; a status other
        than 2xx is raised as the matching exception."""
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise InvalidArgument(f"invalid HTTP method {method!r}")
        if not isinstance(path, str) or not path.startswith("/") or _BAD_PATH.search(path) or not path.isascii():
            raise InvalidArgument("the path must start with '/' and hold only printable ASCII without spaces")
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.fullmatch(name) or _CONTROL.search(value):
                raise InvalidArgument(f"invalid request header {name!r}")
        if body is not None and not isinstance(body, bytes):
            raise InvalidArgument("the body must be bytes")
        response = self._exchange(method, path, body, dict(headers or {}))
        _check(response)
        return response

    @staticmethod
    def exception_for(response: Response) -> CometBoxError:
        """The exception for a non-2xx reply: 400/413/415 RequestRejected, 401
        Unauthorized, 429/503 Unavailable, anything else CometBoxError; with
        the code, line and text of the server's ``<error>`` (or JSON error)."""
        status = response.status
        details: Dict[str, str] = {}
        text = ""
        stripped = response.body.lstrip()
        if stripped.startswith(b"<"):
            root = _parse_xml(response.body)
            if root is not None and root.tag == "error":
                details = {str(k): str(v) for k, v in root.attrib.items()}
                text = "".join(root.itertext()).strip()
            else:  # not cometbox's (a proxy's HTML page)
                text = _excerpt(response.body)
        elif stripped.startswith(b"{"):
            try:
                decoded = json.loads(response.body)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                if isinstance(decoded.get("error"), str):
                    details["code"] = decoded["error"]
                if isinstance(decoded.get("message"), str):
                    text = decoded["message"]
        elif stripped:
            text = _excerpt(response.body)
        code = details.get("code") or _DEFAULT_CODES.get(status, "unexpected-response")
        message = f"cometbox: {status} {code}" + (f": {text}" if text else "")
        if status in (400, 413, 415):
            return RequestRejected(message, code, status, details)
        if status == 401:
            return Unauthorized(message, code, status, details)
        if status in (429, 503):
            return Unavailable(message, code, status, details)
        return CometBoxError(message, code, status, details)

    def _exchange(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str]) -> Response:
        """One request, retried (``retries`` times at most) only when nothing was applied."""
        headers = dict(headers)
        headers["User-Agent"] = self._user_agent
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        attempt = 0
        while True:
            try:
                response = exchange(self._endpoint, method, path, headers, body, self._connect_timeout, self._timeout)
                if response.status != 503 or attempt >= self._retries:
                    return response
            except Unavailable as e:
                if not e.safe_to_retry or attempt >= self._retries:
                    raise
            delay = self._retry_delay * (2**attempt)
            if delay > 0:
                time.sleep(delay)
            attempt += 1


def _check(response: Response) -> None:
    if not 200 <= response.status < 300:
        raise Client.exception_for(response)


def _parse_xml(body: bytes) -> Optional[ET.Element]:
    """The root of a reply, or None. Replies with a DTD are refused outright
    (no entity of any kind is expanded)."""
    if not body.strip() or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return None
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


def _json_object(response: Response) -> Dict[str, Any]:
    try:
        value = json.loads(response.body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CometBoxError(f"expected a JSON object from the server, got: {_excerpt(response.body)}", "unexpected-response", response.status)
    return value


def _excerpt(body: bytes) -> str:
    text = re.sub(r"[^\x20-\x7e]+", " ", body[:200].decode("latin-1")).strip()
    return text or "(empty body)"


def _optional_header_value(value: Optional[str], name: str) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a str")
    if _CONTROL.search(value) or not value.isascii():
        raise InvalidArgument(f"{name} must be printable ASCII")
    return value


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise InvalidArgument(f"{name} must be a number of seconds > 0")
    return float(value)
