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

from aiohttp import web

from pushgate.protocol.stomp.destinations import Destinations
from pushgate.protocol.stomp.heartbeat import HeartbeatWheel
from pushgate.protocol.stomp.session import StompSession, StompSettings, StompWriter
from pushgate.protocol.stomp.transactions import TransactionLimits
from pushgate.transport.ws_accept import Opened, accept
from pushgate.transport.ws_connection import OpenSockets, WebSocketConnection
from pushgate.transport.ws_frames import build_frame

if TYPE_CHECKING:
    from pushgate.config import Config
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
            transactions=TransactionLimits(
                max_open=config.stomp.max_transactions,
                max_frames=config.stomp.max_transaction_frames,
                max_bytes=config.stomp.max_transaction_bytes,
            ),
            rpc_prefix=config.stomp.rpc_destination_prefix,
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


class StompWebSocketWriter(WebSocketConnection):
    """A WebSocketConnection that takes STOMP frames: one WebSocket text message each."""

    __slots__ = ()

    def send(self, frame: bytes) -> None:
        self.write(build_frame(frame))

    def send_parts(self, head: bytes, tail: bytes) -> None:
        self.writelines((_ws_header(len(head) + len(tail)), head, tail))

    def send_heartbeat(self) -> None:
        self.write(_WS_HEARTBEAT)


class StompWebSocket:
    """``/stomp`` and ``/ws``: the version a client names by subprotocol only is the
    session's default."""

    label = "STOMP websocket"
    log = log

    @staticmethod
    def negotiate(request: web.Request) -> tuple[None, tuple[str, ...]]:
        return None, SUBPROTOCOLS

    @staticmethod
    def connection(terms: None, sockets: OpenSockets, config: Config) -> StompWebSocketWriter:
        return StompWebSocketWriter(
            sockets, config.client.queue_max_bytes, config.stomp.max_frame_bytes + 4096
        )

    @staticmethod
    def open(
        request: web.Request,
        connection: StompWebSocketWriter,
        terms: None,
        subprotocol: str | None,
    ) -> Opened:
        session = request.app[STOMP].session(connection, "stomp_websocket")
        if subprotocol:
            # a client that names its version by subprotocol only
            session.default_version = subprotocol[1] + "." + subprotocol[2]
        return Opened(session.client, session.feed, session.closed)


STOMP_WEBSOCKET = StompWebSocket()


async def stomp_websocket_handler(request: web.Request) -> web.StreamResponse:
    return await accept(request, STOMP_WEBSOCKET)
