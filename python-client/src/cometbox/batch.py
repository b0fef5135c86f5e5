"""Collects commands and sends them as one atomic ``<batch>``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Union

from . import _xml

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


class Batch:
    """Commands sent in one request, as one atomic ``<batch>``: the server
    validates all of them before applying any::

        accepted = (client.batch()
                    .send("alice", {"text": "hi"}, "notice")
                    .publish("room:42", {"from": "bob"}, "chat")
                    .subscribe("alice", "room:42")
                    .commit())

    Each method checks and encodes its arguments at once (the call with the
    bad value raises InvalidArgument). :meth:`commit` sends everything and
    empties the batch, so it can be filled again; on an exception it keeps
    its commands. An empty batch commits to 0 without a request.
    """

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._commands: List[_xml.Command] = []

    def send(
        self,
        client: str,
        data: Any,
        event: Optional[str] = None,
        *,
        ttl: Optional[int] = None,
        type: str = "json",  # noqa: A002
    ) -> "Batch":
        """Adds a message to one client's mailbox. See :meth:`Client.send`."""
        self._commands.append(_xml.message("to", client, data, event, ttl, type))
        return self

    def publish(
        self,
        channel: str,
        data: Any,
        event: Optional[str] = None,
        *,
        ttl: Optional[int] = None,
        type: str = "json",  # noqa: A002
    ) -> "Batch":
        """Adds a message to a channel. See :meth:`Client.publish`."""
        self._commands.append(_xml.message("channel", channel, data, event, ttl, type))
        return self

    def subscribe(self, client: str, channels: Union[str, Iterable[str]]) -> "Batch":
        """Adds the client to one channel, or to each of several."""
        self._commands.extend(self._memberships("subscribe", client, channels))
        return self

    def unsubscribe(self, client: str, channels: Union[str, Iterable[str]]) -> "Batch":
        """Removes the client from one channel, or from each of several."""
        self._commands.extend(self._memberships("unsubscribe", client, channels))
        return self

    def disconnect(self, client: str) -> "Batch":
        """Drops the client's mailbox and subscriptions and ends its polls."""
        self._commands.append(_xml.command("disconnect", [("client", client)]))
        return self

    def __len__(self) -> int:
        return len(self._commands)

    def to_xml(self) -> bytes:
        """The document :meth:`commit` would send."""
        return _xml.document(self._commands, as_batch=True)

    def commit(self) -> int:
        """Sends the batch; returns the number of commands the server accepted."""
        if not self._commands:
            return 0
        accepted = self._client.post_xml(self.to_xml())
        self._commands = []
        return accepted

    @staticmethod
    def _memberships(name: str, client: str, channels: Union[str, Iterable[str]]) -> List[_xml.Command]:
        names = [channels] if isinstance(channels, str) else list(channels)
        return [_xml.command(name, [("client", client), ("channel", channel)], required=2) for channel in names]
