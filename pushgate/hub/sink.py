"""What the hub needs from a connection's dialect and transport: a place to push.

A sink turns hub events into the connection's own wire bytes and queues them without
blocking. Every method is synchronous: the hub never awaits a socket. ``cache`` dicts
are shared by every recipient of one event, so each dialect encodes it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from pushgate.engine.base import ClientInfo, Publication
    from pushgate.hub.errors import Disconnect
    from pushgate.hub.results import SubscribeResult


#: what a dialect builds once for all the subscribers told of one join or leave (its
#: frames, and what it parsed from the ClientInfo); each dialect keys its own entries
JoinCache: TypeAlias = dict[object, Any]


class ClientSink(Protocol):
    #: the sink expects pongs to its pings (bidirectional transports)
    wants_pong: bool
    #: the wire protocol (``centrifugo``, ``stomp``, ``xmpp``): a direct message may be
    #: addressed to some dialects only
    dialect: str

    def push_publication(self, channel: str, pub: Publication) -> None: ...

    def push_join(self, channel: str, info: ClientInfo, cache: JoinCache) -> None: ...

    def push_leave(self, channel: str, info: ClientInfo, cache: JoinCache) -> None: ...

    def push_subscribe(self, channel: str, result: SubscribeResult) -> None: ...

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None: ...

    def push_message(self, data: bytes) -> None: ...

    def push_refresh(self, expires: bool, ttl: int) -> None: ...

    def send_ping(self) -> None: ...

    def close(self, disconnect: Disconnect) -> None:
        """Close the connection; the transport then reports it closed to the hub."""

    def queued_bytes(self) -> int:
        """Bytes written to the connection and not yet sent (read when Prometheus scrapes)."""


class ClosedSink:
    """The sink of a client whose connection is gone: every push goes nowhere.

    A closed client lets go of its dialect session (which holds the client in turn),
    so the pair is freed by reference counting rather than left to the cyclic GC.
    """

    __slots__ = ()

    wants_pong = False
    dialect = "closed"

    def push_publication(self, channel: str, pub: Publication) -> None:
        pass

    def push_join(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        pass

    def push_leave(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        pass

    def push_subscribe(self, channel: str, result: SubscribeResult) -> None:
        pass

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        pass

    def push_message(self, data: bytes) -> None:
        pass

    def push_refresh(self, expires: bool, ttl: int) -> None:
        pass

    def send_ping(self) -> None:
        pass

    def close(self, disconnect: Disconnect) -> None:
        pass

    def queued_bytes(self) -> int:
        return 0


CLOSED_SINK = ClosedSink()
