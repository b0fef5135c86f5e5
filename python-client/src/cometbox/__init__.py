"""cometbox: the Python backend client of the cometbox server-push relay.

::

    import cometbox
    client = cometbox.Client("http://127.0.0.1:8481")
    client.send("user:42", {"text": "Your export is ready"}, "notice")

Standard library only. See README.md for the whole tour; ``cometbox.hooks``
verifies the signed hook requests the server sends to backends.
"""

from ._transport import Response
from ._xml import RawJson
from .batch import Batch
from .client import Client, __version__
from .errors import CometBoxError, InvalidArgument, RequestRejected, Unauthorized, Unavailable

__all__ = [
    "Client",
    "Batch",
    "RawJson",
    "Response",
    "CometBoxError",
    "RequestRejected",
    "Unauthorized",
    "Unavailable",
    "InvalidArgument",
    "__version__",
]
