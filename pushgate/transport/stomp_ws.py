"""STOMP over WebSocket: ``/stomp`` (and ``/ws``, the path of RabbitMQ Web-STOMP).

Subprotocols ``v12.stomp``, ``v11.stomp`` and ``v10.stomp`` are offered; frames may come
in text or binary messages, several to a message or one split over several (the
codec is streaming). Frames go out as text messages, one frame each, written straight
to the asyncio transport like the Centrifugo WebSocket: a MESSAGE is the WebSocket
header, the subscription's own bytes and the publication's shared bytes, handed to
``writelines`` without joining them.

``StompEndpoint`` is what every STOMP transport (this one and the TCP listener) shares:
settings, the destination map and the one heart-beat wheel with its one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.stomp.destinations import Destinations
from pushgate.protocol.stomp.heartbeat import HeartbeatWheel
from pushgate.protocol.stomp.session import StompSession, StompSettings, StompWriter
from pushgate.transport.app_keys import HUB
from pushgate.transport.origin import origin_allowed, refuse_origin
from pushgate.transport.websocket import WebSocketWriter
from pushgate.transport.ws_frames import build_frame

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.stomp")

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
WHEEL_TICK = 0.5
_WS_HEARTBEAT = build_frame(b"\n")


class StompEndpoint:
    """Shared by every STOMP connection of one server."""

    def __init__(self, hub: Hub) -> None:
        config = hub.config
        self.hub = hub
        self.settings = StompSettings(
            heartbeat_send_ms=config.stomp.heartbeat_send,
            heartbeat_receive_ms=config.stomp.heartbeat_receive,
            max_frame_bytes=config.stomp.max_frame_bytes,
            server=f"pushgate/{hub.version}",
        )
        self.destinations = Destinations(
            config.stomp.exchanges,
            namespace_boundary=config.channel.namespace_boundary,
            user_boundary=config.channel.user_boundary,
        )
        self.wheel = HeartbeatWheel(WHEEL_TICK)
        self._timer: asyncio.Task | None = None

    def session(self, writer: StompWriter, transport: str) -> StompSession:
        return StompSession(
            self.hub, writer, transport, self.settings, self.destinations, self.wheel
        )

    def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.create_task(self._run(), name="pushgate-stomp-heartbeats")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WHEEL_TICK)
            try:
                self.wheel.run(time.monotonic())
            except Exception:
                log.exception("STOMP heart-beat tick failed")


STOMP = web.AppKey("stomp", StompEndpoint)


def _ws_header(length: int) -> bytes:
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class StompWebSocketWriter(WebSocketWriter):
    """A WebSocketWriter that takes STOMP frames: one WebSocket text message each."""

    __slots__ = ()

    def send(self, frame: bytes) -> None:
        self.write(build_frame(frame))

    def send_parts(self, head: bytes, tail: bytes) -> None:
        if self.closed:
            return
        self._transport.writelines((_ws_header(len(head) + len(tail)), head, tail))
        self._check_queue()

    def send_heartbeat(self) -> None:
        self.write(_WS_HEARTBEAT)

    def _check_queue(self) -> None:
        if self._transport.get_write_buffer_size() > self._max_queue:
            log.warning("slow STOMP client: write queue over %d bytes", self._max_queue)
            if self._on_slow is not None:
                self._on_slow()
            else:
                self.close(DISCONNECT_SLOW.code, DISCONNECT_SLOW.reason)


async def stomp_websocket_handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    endpoint = request.app[STOMP]
    config = hub.config
    if not origin_allowed(request, config.server.allowed_origins):
        log.info("STOMP websocket refused: origin %s", request.headers.get("Origin"))
        return refuse_origin(request)
    ws = web.WebSocketResponse(
        protocols=SUBPROTOCOLS,
        compress=False,
        max_msg_size=config.stomp.max_frame_bytes + 4096,
        autoping=True,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    writer = StompWebSocketWriter(ws, transport, config.client.queue_max_bytes)
    session = endpoint.session(writer, "stomp_websocket")
    if ws.ws_protocol:
        # a client that names its version by subprotocol only
        session.default_version = ws.ws_protocol[1] + "." + ws.ws_protocol[2]
    writer.on_slow(lambda: session.client.disconnect(DISCONNECT_SLOW))
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await session.feed(message.data)
            elif message.type == WSMsgType.ERROR:
                log.info("STOMP websocket error client=%s: %s", session.client.id, ws.exception())
                break
            if writer.closed:
                break
    finally:
        await session.closed()
    return ws
