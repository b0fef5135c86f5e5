"""One HTTP/1.1 request to the ingest listener, over TCP or a Unix socket.

The only module that touches sockets. Built on :mod:`http.client`, which
reads no proxy variables and follows no redirects. Every request is sent
with ``Connection: close`` (the ingest listener is local; connecting is
cheap), so no connection outlives the call.

Failures become :class:`~cometbox.errors.Unavailable` with a code that says
whether anything may have reached the server:

- ``connection-failed``: the connection could not be made, nothing was sent;
- ``timeout``: connected, but the server did not answer in time;
- ``connection-lost``: the connection broke after it was made.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from typing import Dict, Mapping, NamedTuple, Optional

from .errors import CometBoxError, InvalidArgument, Unavailable

#: Largest reply read (the server's replies are a few hundred bytes; /stats
#: and presence grow with the number of channels, not without end).
MAX_REPLY_BYTES = 16 * 1024 * 1024


class Response(NamedTuple):
    """A reply: its status, its headers (names in lower case) and its body."""

    status: int
    headers: Dict[str, str]
    body: bytes


class Endpoint(NamedTuple):
    """Where the ingest listener is: ``http``/``https`` host and port, or a Unix socket."""

    scheme: str
    host: str
    port: int
    base_path: str
    socket_path: Optional[str]

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        """Reads ``http://host:port[/prefix]``, ``https://...``,
        ``unix:/path/to.sock`` or ``unix:///path/to.sock``."""
        if not isinstance(url, str):
            raise InvalidArgument(f"the ingest address must be a str, got {type(url).__name__}")
        if url[:5].lower() == "unix:":
            path = url[5:]
            if path.startswith("//"):
                path = path[2:]
            if path == "" or "\0" in path:
                raise InvalidArgument(f"invalid Unix socket address {url!r}")
            return cls("unix", "localhost", 0, "", path)
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise InvalidArgument(f"invalid ingest URL {url!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"invalid ingest address {url!r} (expected http://host:port or unix:/path)")
        if parts.username is not None or parts.query or parts.fragment:
            raise InvalidArgument(f"the ingest URL {url!r} must not hold credentials, a query or a fragment")
        if any(c in url for c in "\r\n\t "):
            raise InvalidArgument(f"the ingest URL {url!r} must not hold whitespace")
        default_port = 443 if scheme == "https" else 80
        return cls(scheme, parts.hostname, port or default_port, parts.path.rstrip("/"), None)

    def describe(self) -> str:
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(endpoint: Endpoint, connect_timeout: float) -> http.client.HTTPConnection:
    if endpoint.socket_path is not None:
        return _UnixHTTPConnection(endpoint.socket_path, connect_timeout)
    if endpoint.scheme == "https":
        return http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=connect_timeout)
    return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=connect_timeout)


def exchange(
    endpoint: Endpoint,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: Optional[bytes],
    connect_timeout: float,
    timeout: float,
) -> Response:
    """Sends one request and reads the whole reply.

    ``connect_timeout`` bounds connecting; ``timeout`` then bounds each wait
    for the socket (sending, and each read of the reply).
    """
    where = endpoint.describe()
    conn = _connection(endpoint, connect_timeout)
    try:
        try:
            conn.connect()
        except socket.timeout:
            raise Unavailable(f"cometbox: could not connect to {where} within {connect_timeout:g} s", "connection-failed") from None
        except OSError as e:
            raise Unavailable(f"cometbox: could not connect to {where}: {_reason(e)}", "connection-failed") from None
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        send_error: Optional[OSError] = None
        try:
            conn.putrequest(method, endpoint.base_path + path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
        except socket.timeout:
            raise Unavailable(f"cometbox: sending to {where} timed out after {timeout:g} s", "timeout") from None
        except OSError as e:
            # The server may have answered and closed before reading the whole
            # body (a 413 for a declared Content-Length over its limit): read
            # that answer if it is there.
            send_error = e
        try:
            reply = conn.getresponse()
            data = reply.read(MAX_REPLY_BYTES + 1)
            if len(data) > MAX_REPLY_BYTES:
                raise CometBoxError(f"cometbox: the reply from {where} is over {MAX_REPLY_BYTES} bytes", "unexpected-response", reply.status)
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
        except socket.timeout:
            raise Unavailable(f"cometbox: no reply from {where} within {timeout:g} s", "timeout") from None
        except (OSError, http.client.RemoteDisconnected, http.client.IncompleteRead) as e:
            cause = send_error if send_error is not None else e
            raise Unavailable(f"cometbox: the connection to {where} was lost: {_reason(cause)}", "connection-lost") from None
        except http.client.HTTPException as e:
            if send_error is not None:
                raise Unavailable(f"cometbox: the connection to {where} was lost: {_reason(send_error)}", "connection-lost") from None
            raise CometBoxError(f"cometbox: {where} did not answer in HTTP: {e!r}", "unexpected-response") from None
    finally:
        conn.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
