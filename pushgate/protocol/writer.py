"""The interface a transport offers a dialect session: frame and queue bytes, close."""

from __future__ import annotations

from typing import Protocol, TypeGuard


class FrameWriter(Protocol):
    #: names the framing (``ws``, ``sse``, ``stream``…) for the encode-once cache key
    framing: str
    #: the transport can carry pongs from the client (a bidirectional connection)
    bidirectional: bool
    #: the close itself carries a code and reason (WebSocket close frame); otherwise
    #: the dialect sends its own disconnect message first
    close_carries_code: bool
    #: the server should ping this connection (not polling: its requests show liveness)
    pings: bool
    #: a publication's frame may carry its stream position as an event id (unidirectional
    #: SSE: a reconnecting EventSource sends it back); such a writer is an
    #: ``EventIdWriter``, whose ``frame`` takes the id
    event_ids: bool

    def frame(self, payload: bytes) -> bytes:
        """One message as it goes on the wire (built once, written to many)."""

    def write(self, data: bytes) -> None:
        """Queue framed bytes without blocking; a full queue closes as slow."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a code and reason."""

    def queued_bytes(self) -> int:
        """Bytes written and not yet sent (the ``pushgate_write_queue_bytes`` gauge)."""

    @property
    def closed(self) -> bool: ...


class EventIdWriter(FrameWriter, Protocol):
    """A FrameWriter whose frames can name the event they carry (``event_ids`` is True)."""

    def frame(self, payload: bytes, event_id: str = "") -> bytes:
        """One message, with ``event_id`` as its id when there is one."""


def carries_event_ids(writer: FrameWriter) -> TypeGuard[EventIdWriter]:
    """True when ``writer``'s frames can carry event ids: ``frame(payload, event_id)``."""
    return writer.event_ids
