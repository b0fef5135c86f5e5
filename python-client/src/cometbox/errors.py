"""The exceptions the client raises, one class per thing the caller can do about it.

Every exception is a :class:`CometBoxError` and carries:

- ``code``: the server's error code (``invalid-json``, ``unauthorized``,
  ``overloaded``, ...) or one of the client's own (``connection-failed``,
  ``timeout``, ``connection-lost``, ``invalid-argument``,
  ``unexpected-response``);
- ``status``: the HTTP status of the reply, ``0`` when there was none;
- ``details``: every attribute of the server's ``<error>`` element
  (``{"code": "invalid-json", "line": "3"}``);
- ``line``: the ``line`` the server pointed at, as an int, or ``None``.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

__all__ = [
    "CometBoxError",
    "RequestRejected",
    "Unauthorized",
    "Unavailable",
    "InvalidArgument",
]


class CometBoxError(Exception):
    """Base class of every exception this package raises."""

    code: str
    status: int
    details: Dict[str, str]
    message: str

    def __init__(
        self,
        message: str,
        code: str,
        status: int = 0,
        details: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = dict(details or {})

    @property
    def line(self) -> Optional[int]:
        """The line of the request document the server pointed at, or None."""
        value = self.details.get("line", "")
        return int(value) if value.isdigit() else None


class RequestRejected(CometBoxError):
    """400, 413, 415: the request is wrong; sending it again fails again.

    Nothing was applied. Codes: ``malformed-xml``, ``invalid-json``,
    ``invalid-id``, ``invalid-request``, ``too-large``,
    ``unsupported-media-type``.
    """


class Unauthorized(CometBoxError):
    """401: the ingest key is missing or wrong (code ``unauthorized``)."""


class Unavailable(CometBoxError):
    """The server could not be reached, or asked to come back later.

    - ``connection-failed``: could not connect. Nothing was sent.
    - ``timeout``: sent, but no reply in time. The server MAY have applied it.
    - ``connection-lost``: the connection broke while sending or reading.
      The server MAY have applied it.
    - ``overloaded``, ``shutting-down`` (503; 429 also maps here): nothing
      was applied.
    """

    @property
    def safe_to_retry(self) -> bool:
        """True when the protocol guarantees that nothing was applied."""
        return self.status == 503 or self.code == "connection-failed"


class InvalidArgument(CometBoxError, ValueError):
    """Raised locally, before anything is sent (code ``invalid-argument``).

    A bad option, a payload that cannot be JSON-encoded, a string holding
    characters XML 1.0 cannot carry.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid-argument", 0)
