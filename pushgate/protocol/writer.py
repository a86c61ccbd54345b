"""The interface a transport offers a dialect session: frame and queue bytes, close."""

from __future__ import annotations

from typing import Protocol


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

    def frame(self, payload: bytes) -> bytes:
        """One message as it goes on the wire (built once, written to many)."""

    def write(self, data: bytes) -> None:
        """Queue framed bytes without blocking; a full queue closes as slow."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a code and reason."""

    @property
    def closed(self) -> bool: ...
