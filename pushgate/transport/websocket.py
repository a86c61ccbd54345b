"""WebSocket transport: ``/connection/websocket`` for the Centrifugo protocol.

aiohttp routes the upgrade request; negotiation.py picks JSON or Protobuf (the
``centrifuge-protobuf`` subprotocol, selected in the 101, or ``cf_protocol``);
ws_accept answers it and hands the socket to a lean WebSocketConnection
(ws_connection.py; binary frames for Protobuf), which frames writes and reads client
frames for the Centrifugo session. Pushes are pre-built frames written straight to the
asyncio transport: a delivery is one synchronous ``transport.write`` and no await.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate.protocol.centrifugo.codecs import Codec
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB
from pushgate.transport.negotiation import websocket_codec
from pushgate.transport.ws_accept import Opened, accept
from pushgate.transport.ws_connection import (
    BinaryWebSocketConnection,
    OpenSockets,
    WebSocketConnection,
)

if TYPE_CHECKING:
    from pushgate.config import Config

log = logging.getLogger("pushgate.websocket")


class CentrifugoWebSocket:
    """``/connection/websocket``: the codec comes from the request, and selects the
    binary connection for Protobuf (uni.py's ``UniWebSocket`` is the same but one-way)."""

    label = "websocket"
    log = log
    bidirectional = True

    @staticmethod
    def negotiate(request: web.Request) -> tuple[Codec, tuple[str, ...]]:
        codec, subprotocol = websocket_codec(request)
        return codec, (subprotocol,) if subprotocol else ()

    def connection(self, codec: Codec, sockets: OpenSockets, config: Config) -> WebSocketConnection:
        connection_type = BinaryWebSocketConnection if codec.binary else WebSocketConnection
        client = config.client
        return connection_type(
            sockets,
            client.queue_max_bytes,
            client.max_frame_bytes,
            bidirectional=self.bidirectional,
        )

    def open(
        self,
        request: web.Request,
        connection: WebSocketConnection,
        codec: Codec,
        subprotocol: str | None,
    ) -> Opened:
        session = CentrifugoSession(request.app[HUB], connection, "websocket", codec=codec)
        return Opened(
            session.client, session.handle_frame, session.closed, handle_now=session.handle_now
        )


WEBSOCKET = CentrifugoWebSocket()


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    return await accept(request, WEBSOCKET)
