"""One connection's subscription to one channel.

A subscription is *active* once its subscribe reply has been written; publications
that arrive before that (while history is read for recovery) wait in ``pending`` and
are flushed right after the reply, skipping any the reply already carried. A
subscription with a tags filter skips the publications its filter rejects: it writes
nothing for them, so the bytes every other subscriber shares are never re-encoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushgate.config import ChannelOptions
    from pushgate.engine.base import Publication
    from pushgate.hub.client import Client
    from pushgate.hub.tags_filter import TagsFilter


class Subscription:
    __slots__ = (
        "active",
        "allow",
        "chan_info",
        "channel",
        "client",
        "delta",
        "expires_at",
        "join_leave",
        "offset",
        "options",
        "pending",
        "positioned",
        "present",
        "recoverable",
        "server_side",
        "source",
        "tags_filter",
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
        recoverable: bool = False,
        positioned: bool = False,
        tags_filter: TagsFilter | None = None,
        allow: frozenset[str] = frozenset(),
        source: str = "",
        delta: bool = False,
    ) -> None:
        self.client = client
        self.channel = channel
        self.options = options
        self.server_side = server_side
        self.join_leave = join_leave
        self.chan_info = chan_info
        self.expires_at = expires_at
        #: missed publications are recovered on resubscribe (implies ``positioned``)
        self.recoverable = recoverable
        #: the client tracks its stream position: a gap makes it resubscribe (or reconnect)
        self.positioned = positioned or recoverable
        #: only publications whose tags it accepts are delivered
        self.tags_filter = tags_filter
        #: fossil delta compression negotiated (the dialect sends deltas where it can)
        self.delta = delta
        #: operations the subscription token granted in this channel (pub, prs, hst)
        self.allow = allow
        #: how a client-side subscription was allowed (hub.access), "" for server-side
        self.source = source
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
            if (pub.offset > self.offset or not pub.offset) and (
                self.tags_filter is None or self.tags_filter(pub.tags)
            ):
                self.client.sink.push_publication(self.channel, pub)
        elif self.pending is not None:
            self.pending.append(pub)

    def activate(self) -> None:
        """The subscribe reply is written: flush what arrived meanwhile, in order."""
        if self.pending is None:
            return  # retired before its reply went out
        pending, self.pending = self.pending, None
        self.active = True
        sink = self.client.sink
        accepts = self.tags_filter
        for pub in pending:
            if pub.offset and pub.offset <= self.offset:
                continue
            if accepts is None or accepts(pub.tags):
                sink.push_publication(self.channel, pub)

    def retire(self) -> None:
        """The subscription is being ended by the server: nothing more is delivered."""
        self.active = False
        self.pending = None
