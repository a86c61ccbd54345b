"""Long HTTP responses that carry a connection: HTTP streaming and Server-Sent Events.

The response is prepared by aiohttp (status, headers, chunked encoding); from then on
messages are written as pre-built chunks straight to the asyncio transport, so a
delivery is one synchronous write, as on WebSocket. The transport's write buffer is the
bounded queue. Closing ends the handler, and aiohttp writes the final chunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from pushgate.hub.backlog import Backlog
from pushgate.transport.cut_off import cut_off_later

log = logging.getLogger("pushgate.streaming")

SSE_RETRY_MS = 1000


def chunk(data: bytes) -> bytes:
    """One chunk of HTTP/1.1 chunked transfer coding."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def sse_event(payload: bytes, event_id: str = "") -> bytes:
    # A JSON payload has no raw newlines, so one data line is one event.
    if event_id:
        return chunk(b"id: %b\ndata: %b\n\n" % (event_id.encode(), payload))
    return chunk(b"data: " + payload + b"\n\n")


def line(payload: bytes) -> bytes:
    return chunk(payload + b"\n")


#: framings of a streamed response: Server-Sent Events, newline-delimited JSON, and
#: binary messages that delimit themselves (length-prefixed Protobuf), one chunk each
FRAMES: dict[str, Callable[[bytes], bytes]] = {
    "sse": sse_event,
    "stream": line,
    "stream-binary": chunk,
}


class StreamWriter:
    """FrameWriter over a prepared chunked response (``framing`` one of ``FRAMES``)."""

    __slots__ = (
        "_backlog",
        "_done",
        "_held",
        "_max_queue",
        "_on_slow",
        "_transport",
        "bidirectional",
        "event_ids",
        "frame",
        "framing",
    )

    close_carries_code = False
    pings = True  # they also keep proxies from closing an idle stream

    def __init__(
        self,
        transport: asyncio.Transport,
        framing: str,
        max_queue: int,
        *,
        bidirectional: bool,
        backlog: Backlog,
    ) -> None:
        self._transport = transport
        self._backlog = backlog
        self.framing = framing
        self.frame = FRAMES[framing]
        self.bidirectional = bidirectional
        #: unidirectional SSE events of publications carry an ``id:`` naming their stream
        #: position, which a reconnecting browser EventSource sends back as Last-Event-ID
        self.event_ids = framing == "sse" and not bidirectional
        self._max_queue = max_queue
        self._done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._on_slow = None
        # writes wait here until the response headers are out (see ``start``)
        self._held: list[bytes] | None = []

    def start(self) -> None:
        """The headers are sent: write what waited, and write directly from now on."""
        held, self._held = self._held or [], None
        if self.framing == "sse":
            # a browser EventSource that loses the stream comes back after this long
            held.insert(0, chunk(b"retry: %d\n\n" % SSE_RETRY_MS))
        for data in held:
            self.write(data)

    def on_slow(self, callback) -> None:
        self._on_slow = callback

    @property
    def closed(self) -> bool:
        return self._done.done()

    @property
    def started(self) -> bool:
        return self._held is None and not self._done.done()

    def queued_bytes(self) -> int:
        return 0 if self._transport.is_closing() else self._transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            return
        if self._done.done():
            return
        transport = self._transport
        if transport.is_closing():
            # the peer went away: nothing more to write, the handler may end
            self._done.set_result(None)
            return
        transport.write(data)
        queued = transport.get_write_buffer_size()
        if queued:
            self._backlog.add(self)
        if queued > self._max_queue and self._on_slow is not None:
            # reported once: the callback closes the stream, and its last message
            # (the disconnect push) comes back through this very write
            on_slow, self._on_slow = self._on_slow, None
            log.warning("slow client: write queue over %d bytes", self._max_queue)
            on_slow()

    def close(self, code: int, reason: str) -> None:
        if self._held is not None:
            # closed before the stream started: the handler answers with a status
            self._held = None
            if not self._done.done():
                self._done.set_result(None)
            return
        if not self._done.done():
            self._done.set_result(None)
            # a peer that never reads would hold the response open for ever
            cut_off_later(self._transport)

    def lost(self) -> None:
        """The peer went away (connection_loss.watch_loss): the handler may end now."""
        if not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        await self._done


async def open_stream(request: web.Request, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer a stream
        }
    )
    response.enable_chunked_encoding()
    # the connection ends with the stream: never reused for another request, so a
    # peer that stopped reading can be aborted without harm
    response.force_close()
    await response.prepare(request)
    return response
