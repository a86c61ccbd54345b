"""XMPP over WebSocket (RFC 7395): ``/xmpp-websocket``, subprotocol ``xmpp``.

Each WebSocket text message is one complete element: ``<open/>`` and ``<close/>`` of the
framing namespace, or a stanza. The element is parsed with the hardened XML codec
under ``xmpp.max_stanza_bytes`` and ``xmpp.max_depth``; whatever it refuses ends the
stream with the matching stream error. Writes go straight to the asyncio transport
like the Centrifugo WebSocket's, so one publication's frame is built once for every
XMPP WebSocket recipient.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate.hub.errors import DISCONNECT_SLOW
from pushgate.protocol.xmpp import stanzas as st
from pushgate.protocol.xmpp.session import Mark, StreamError, XmppSession
from pushgate.protocol.xmpp.xml import XmlError
from pushgate.transport.app_keys import HUB, OPEN_SOCKETS
from pushgate.transport.bosh import XMPP
from pushgate.transport.origin import origin_allowed, refuse_origin
from pushgate.transport.ws_connection import WebSocketConnection
from pushgate.transport.ws_frames import build_frame
from pushgate.transport.ws_handshake import Detached, handshake, take_over

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.xmpp")

NORMAL_CLOSE = 1000


class XmppWebSocketWriter(WebSocketConnection):
    """StanzaWriter over a WebSocket: one stanza per text message."""

    __slots__ = ("positions",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.positions: dict[str, tuple[int, str]] = {}

    def write(self, data: bytes, mark: Mark | None = None) -> None:
        super().write(data)
        if mark is not None:
            channel, offset, epoch = mark
            self.positions[channel] = (offset, epoch)

    def end(self, condition: str, text: str = "") -> None:
        if self.closed:
            return
        if condition:
            WebSocketConnection.write(self, build_frame(st.stream_error(condition, text)))
        WebSocketConnection.write(self, build_frame(st.WS_CLOSE))
        self.close(NORMAL_CLOSE, condition)


async def xmpp_websocket_handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    endpoint = request.app[XMPP]
    config = hub.config
    if not origin_allowed(request, config.server.allowed_origins):
        log.info("XMPP websocket refused: origin %s", request.headers.get("Origin"))
        return refuse_origin(request)
    response, _ = handshake(request, ("xmpp",))
    writer = XmppWebSocketWriter(
        request.app[OPEN_SOCKETS], config.client.queue_max_bytes, config.xmpp.max_stanza_bytes * 4
    )
    received = take_over(request, response, writer)
    if received is None:
        return Detached()
    session = XmppSession(hub, writer, "xmpp_websocket", endpoint.settings, endpoint.resume)
    session.client.headers = hub.proxies.pick_headers(request.headers.items())
    writer.on_slow(partial(session.client.disconnect, DISCONNECT_SLOW))

    async def on_message(data: bytes) -> None:
        try:
            element = endpoint.parse(data)
            if element.ns == st.NS_FRAMING and element.name == "open":
                session.check_domain(element.get("to"))
                writer.write(build_frame(st.ws_open(endpoint.settings.domain, session.stream_id)))
                session.open_stream()
            elif element.ns == st.NS_FRAMING and element.name == "close":
                writer.end("")
            else:
                await session.handle(element)
        except XmlError as exc:
            log.info("XMPP websocket client=%s sent bad XML: %s", session.client.id, exc)
            writer.end(exc.condition, str(exc))
        except StreamError as exc:
            log.info("XMPP websocket client=%s: stream error %s", session.client.id, exc)
            writer.end(exc.condition, exc.text)

    writer.start(on_message, session.closed, received)
    return Detached()
