"""WebSocket transport: ``/connection/websocket`` for the Centrifugo protocol.

aiohttp routes the upgrade request; negotiation.py picks JSON or Protobuf (the
``centrifuge-protobuf`` subprotocol, selected in the 101, or ``cf_protocol``);
ws_handshake answers it and hands the socket to a lean WebSocketConnection
(ws_connection.py; binary frames for Protobuf), which frames writes and reads client
frames for the Centrifugo session. Pushes are pre-built frames written straight to the
asyncio transport: a delivery is one synchronous ``transport.write`` and no await.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.app_keys import HUB, OPEN_SOCKETS
from pushgate.transport.negotiation import Unsupported, refuse, websocket_codec
from pushgate.transport.origin import origin_allowed, refuse_origin
from pushgate.transport.ws_connection import BinaryWebSocketConnection, WebSocketConnection
from pushgate.transport.ws_handshake import Detached, handshake, take_over

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.websocket")


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    config = hub.config
    if not origin_allowed(request, config.server.allowed_origins):
        log.info("websocket refused: origin %s", request.headers.get("Origin"))
        return refuse_origin(request)
    try:
        codec, subprotocol = websocket_codec(request)
    except Unsupported as exc:
        log.info("websocket refused: %s", exc)
        return refuse(exc)
    response, _ = handshake(request, (subprotocol,) if subprotocol else ())
    connection_type = BinaryWebSocketConnection if codec.binary else WebSocketConnection
    connection = connection_type(
        request.app[OPEN_SOCKETS], config.client.queue_max_bytes, config.client.max_frame_bytes
    )
    received = take_over(request, response, connection)
    if received is None:
        return Detached()
    session = CentrifugoSession(hub, connection, "websocket", codec=codec)
    session.client.headers = hub.proxies.pick_headers(request.headers.items())
    connection.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))
    connection.start(session.handle_frame, session.closed, received, session.handle_now)
    return Detached()
