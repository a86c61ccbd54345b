"""STOMP over plain TCP: the listener on ``stomp.tcp_port`` (off by default).

The same session as STOMP over WebSocket; only the framing differs (none: STOMP frames
are self-delimiting). Writes go straight to the asyncio transport, whose buffer is the
connection's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from pushgate.hub.backlog import Backlog
from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.stomp.codec import HEARTBEAT
from pushgate.transport.cut_off import close_or_cut_off
from pushgate.transport.stomp_ws import StompEndpoint

log = logging.getLogger("pushgate.stomp")

READ_SIZE = 65536
BACKLOG = 1024


class StompTcpWriter:
    __slots__ = ("_backlog", "_closed", "_max_queue", "_on_slow", "_transport")

    def __init__(self, transport: asyncio.Transport, max_queue: int, backlog: Backlog) -> None:
        self._transport = transport
        self._backlog = backlog
        self._max_queue = max_queue
        self._closed = False
        self._on_slow = None

    def on_slow(self, callback) -> None:
        self._on_slow = callback

    @property
    def closed(self) -> bool:
        return self._closed or self._transport.is_closing()

    def queued_bytes(self) -> int:
        return 0 if self._transport.is_closing() else self._transport.get_write_buffer_size()

    def send(self, frame: bytes) -> None:
        if not self.closed:
            self._transport.write(frame)
            self._check_queue()

    def send_parts(self, head: bytes, tail: bytes) -> None:
        if not self.closed:
            self._transport.writelines((head, tail))
            self._check_queue()

    def send_heartbeat(self) -> None:
        self.send(HEARTBEAT)

    def _check_queue(self) -> None:
        queued = self._transport.get_write_buffer_size()
        if queued:
            self._backlog.add(self)
        if queued > self._max_queue:
            log.warning("slow STOMP client: write queue over %d bytes", self._max_queue)
            on_slow, self._on_slow = self._on_slow, None  # reported once
            if on_slow is not None:
                on_slow()
            else:
                self.close(DISCONNECT_SLOW.code, DISCONNECT_SLOW.reason)

    def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport.is_closing():
            return
        close_or_cut_off(transport)


class StompTcpListener:
    def __init__(self, endpoint: StompEndpoint, host: str, port: int) -> None:
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, backlog=BACKLOG, limit=READ_SIZE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("STOMP listening on tcp://%s:%d", self.host, self.port)

    def close(self) -> None:
        """Stop accepting; open connections end with the hub's shutdown."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        hub = self.endpoint.hub
        out = StompTcpWriter(transport, hub.config.client.queue_max_bytes, hub.backlog)  # type: ignore[arg-type]  # a TCP stream: an asyncio.Transport
        session = self.endpoint.session(out, "stomp_tcp")
        out.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))
        try:
            while not out.closed:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                await session.feed(data)
        except (ConnectionError, OSError) as exc:
            log.info("STOMP tcp client=%s: %s", session.client.id, exc)
        finally:
            await session.closed()
            if not transport.is_closing():
                # a peer that half-closed and never reads what is queued is cut off
                close_or_cut_off(transport)
