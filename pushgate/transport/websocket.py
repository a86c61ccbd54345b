"""WebSocket transport: ``/connection/websocket`` for the Centrifugo protocol.

aiohttp does the handshake and reads client frames. Writes bypass its coroutine API:
pushes are pre-built frames written straight to the asyncio transport, so a delivery
is one synchronous ``transport.write`` and no await. The transport's write buffer is
the connection's bounded queue; past ``client.queue_max_bytes`` the connection is
closed with the "slow" code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.metrics import LIMIT_HITS
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB
from pushgate.transport.origin import origin_allowed, refuse_origin
from pushgate.transport.ws_frames import build_frame, close_frame

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.websocket")

ABORT_AFTER = 5.0


class WebSocketWriter:
    """FrameWriter over an established aiohttp WebSocket."""

    __slots__ = ("_closed", "_max_queue", "_on_slow", "_transport", "_ws", "bidirectional")

    framing = "ws"
    close_carries_code = True
    pings = True

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        max_queue: int,
        bidirectional: bool = True,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._max_queue = max_queue
        self._closed = False
        self._on_slow = None
        self.bidirectional = bidirectional

    def on_slow(self, callback) -> None:
        self._on_slow = callback

    @property
    def closed(self) -> bool:
        return self._closed or self._transport.is_closing()

    frame = staticmethod(build_frame)

    def queued_bytes(self) -> int:
        return 0 if self._transport.is_closing() else self._transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._max_queue:
            log.warning("slow client: write queue over %d bytes", self._max_queue)
            if self._on_slow is not None:
                self._on_slow()
            else:
                self.close(DISCONNECT_SLOW.code, DISCONNECT_SLOW.reason)

    def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport.is_closing():
            return
        # The close frame queues behind what is already buffered; a peer that never
        # reads would hold the socket open, so it is aborted after a grace period.
        transport.write(close_frame(code, reason))
        transport.close()
        asyncio.get_running_loop().call_later(ABORT_AFTER, transport.abort)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    config = hub.config
    if not origin_allowed(request, config.server.allowed_origins):
        log.info("websocket refused: origin %s", request.headers.get("Origin"))
        return refuse_origin(request)
    if request.query.get("cf_protocol", "json") != "json":
        return web.json_response(
            {"error": "only the JSON protocol is supported (cf_protocol=json)"}, status=400
        )
    ws = web.WebSocketResponse(
        compress=False, max_msg_size=config.client.max_frame_bytes, autoping=True
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    writer = WebSocketWriter(ws, transport, config.client.queue_max_bytes)
    session = CentrifugoSession(hub, writer, "websocket")
    writer.on_slow(lambda: session.client.disconnect(DISCONNECT_SLOW))
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await session.handle_frame(message.data)
            elif message.type == WSMsgType.ERROR:
                error = ws.exception()
                if getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    LIMIT_HITS.labels("frame_size").inc()
                log.info("websocket error from client=%s: %s", session.client.id, error)
                break
            if writer.closed:
                break
    finally:
        await session.closed()
    return ws
