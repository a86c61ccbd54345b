"""One connection's subscription to one channel.

A subscription is *active* once its subscribe reply has been written; publications
that arrive before that (while history is read for recovery) wait in ``pending`` and
are flushed right after the reply, skipping any the reply already carried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushgate.config import ChannelOptions
    from pushgate.engine.base import Publication
    from pushgate.hub.client import Client


class Subscription:
    __slots__ = (
        "active",
        "chan_info",
        "channel",
        "client",
        "expires_at",
        "join_leave",
        "offset",
        "options",
        "pending",
        "present",
        "server_side",
    )

    def __init__(
        self,
        client: Client,
        channel: str,
        options: ChannelOptions,
        *,
        server_side: bool,
        join_leave: bool,
        chan_info: bytes | None = None,
        expires_at: float = 0.0,
    ) -> None:
        self.client = client
        self.channel = channel
        self.options = options
        self.server_side = server_side
        self.join_leave = join_leave
        self.chan_info = chan_info
        self.expires_at = expires_at
        self.active = False
        #: counted in presence (False while subscribed but announced as gone: XMPP)
        self.present = True
        self.pending: list[Publication] | None = []
        # highest offset the client has been given (reply or push)
        self.offset = 0

    def deliver(self, pub: Publication) -> None:
        if self.active:
            # the subscribe reply gave position ``offset``: a publication at or below it
            # (read from the stream before its broadcast reached this node) is not news
            if pub.offset > self.offset or not pub.offset:
                self.client.sink.push_publication(self.channel, pub)
        elif self.pending is not None:
            self.pending.append(pub)

    def activate(self) -> None:
        """The subscribe reply is written: flush what arrived meanwhile, in order."""
        pending, self.pending = self.pending or [], None
        self.active = True
        sink = self.client.sink
        for pub in pending:
            if pub.offset and pub.offset <= self.offset:
                continue
            sink.push_publication(self.channel, pub)
