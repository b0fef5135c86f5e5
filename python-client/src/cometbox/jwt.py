"""Mints the HS256 JSON Web Tokens browsers present to ``/poll``, with nothing but :mod:`hmac`.

:meth:`cometbox.Client.token` uses it when the client has a ``secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from .errors import InvalidArgument

__all__ = ["mint", "encode", "claims"]

#: Lifetime of a token when none is given (the server's ``auth.token_ttl`` default).
DEFAULT_TTL = 3600


def mint(
    secret: Union[str, bytes],
    client: str,
    ttl: int = DEFAULT_TTL,
    channels: Iterable[str] = (),
    now: Optional[int] = None,
) -> str:
    """A browser token for ``client``: claims ``sub``, ``iat``, ``exp`` = iat + ttl,
    and ``channels`` when not empty (channel names, or prefixes ending in ``*``,
    that the page may subscribe to with ``/poll?channels=...``).

    ``now`` replaces ``time.time()`` (tests).
    """
    if not isinstance(client, str):
        raise InvalidArgument(f"the client id must be a str, got {type(client).__name__}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise InvalidArgument("token ttl must be a whole number of seconds >= 1")
    iat = int(time.time()) if now is None else int(now)
    body: Dict[str, Any] = {"sub": client, "iat": iat, "exp": iat + ttl}
    names = _channel_list(channels)
    if names:
        body["channels"] = names
    return encode(body, secret)


def encode(claims: Mapping[str, Any], secret: Union[str, bytes]) -> str:
    """Signs any claims with HS256."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or key == b"":
        raise InvalidArgument("the token secret must be a non-empty str or bytes")
    header = {"alg": "HS256", "typ": "JWT"}
    try:
        payload = json.dumps(dict(claims), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"token claims cannot be JSON-encoded: {e}") from None
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + _b64(payload.encode("utf-8"))
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def claims(token: str) -> Optional[Dict[str, Any]]:
    """The claims of a token WITHOUT checking its signature (for display and
    tests; the server is what verifies tokens). None when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _channel_list(channels: Iterable[str]) -> List[str]:
    if isinstance(channels, str):
        channels = [channels]
    names: List[str] = []
    for name in channels:
        if not isinstance(name, str):
            raise InvalidArgument(f"channel names must be str, got {type(name).__name__}")
        names.append(name)
    return names


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
