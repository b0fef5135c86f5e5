"""A cometbox hook receiver as a plain WSGI app (standard library only).

Point the server at it::

    [hooks]
    url = "http://127.0.0.1:8000/cometbox-hook"
    secret = "change-me"          # the same value as COMETBOX_HOOKS__SECRET below

and run it (``--port N`` listens on another loopback port than 8000)::

    COMETBOX_HOOKS__SECRET=change-me python examples/wsgi_hook.py

Any WSGI server (gunicorn, uWSGI, mod_wsgi) can serve ``app`` instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Set, Tuple

from cometbox import hooks

SECRET = os.environ.get("COMETBOX_HOOKS__SECRET", "change-me")
MAX_BODY = 1024 * 1024

#: Notification ids already handled (delivery is at least once). A real app
#: keeps these in its database, or makes its handling idempotent.
_seen: Set[str] = set()

StartResponse = Callable[[str, List[Tuple[str, str]]], Any]


def decide(event: hooks.HookEvent) -> bytes:
    """Your policy. Return hooks.allow() or hooks.deny(reason)."""
    if event.type == "subscribe" and event.channel is not None and event.channel.startswith("admin:"):
        return hooks.deny("admins only")
    if event.type == "publish" and isinstance(event.data, dict):
        return hooks.allow(data={**event.data, "checked": True})  # replace the payload
    return hooks.allow()


def notice(event: hooks.HookEvent) -> None:
    """Notifications: online, offline, subscribed, unsubscribed."""
    if event.id in _seen:
        return
    _seen.add(event.id)
    print(f"cometbox: {event.client} {event.type} {event.channel or ''}", file=sys.stderr)


def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("REQUEST_METHOD") != "POST":
        return _reply(start_response, "405 Method Not Allowed", b'{"error": "POST only"}')
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_BODY:
        return _reply(start_response, "413 Payload Too Large", b'{"error": "body too large"}')
    body = environ["wsgi.input"].read(length)  # the raw bytes: verify before decoding
    try:
        event = hooks.verify(body, environ.get("HTTP_COMETBOX_SIGNATURE", ""), SECRET)
    except hooks.SignatureError as e:
        status = "400 Bad Request" if e.code == "invalid-body" else "401 Unauthorized"
        return _reply(start_response, status, b'{"error": "bad signature"}')
    if event.cancellable:
        return _reply(start_response, "200 OK", decide(event))
    notice(event)
    return _reply(start_response, "200 OK", hooks.allow())


def _reply(start_response: StartResponse, status: str, body: bytes) -> List[bytes]:
    start_response(status, [("Content-Type", hooks.CONTENT_TYPE), ("Content-Length", str(len(body)))])
    return [body]


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 8000
    with make_server("127.0.0.1", port, app) as httpd:
        print(f"cometbox hooks on http://127.0.0.1:{port}/", file=sys.stderr)
        httpd.serve_forever()
