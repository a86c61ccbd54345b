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
from typing import TYPE_CHECKING

from aiohttp import web

from pushgate.protocol.xmpp import stanzas as st
from pushgate.protocol.xmpp.session import Mark, StreamError, XmppSession
from pushgate.protocol.xmpp.xml import XmlError
from pushgate.transport.app_keys import HUB
from pushgate.transport.bosh import XMPP
from pushgate.transport.ws_accept import Opened, accept
from pushgate.transport.ws_connection import OpenSockets, WebSocketConnection
from pushgate.transport.ws_frames import build_frame

if TYPE_CHECKING:
    from pushgate.config import Config

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


class XmppWebSocket:
    """``/xmpp-websocket``: one element per message, the framing's ``<open/>`` and
    ``<close/>`` answered here, stanzas handed to the session."""

    label = "XMPP websocket"
    log = log

    @staticmethod
    def negotiate(request: web.Request) -> tuple[None, tuple[str, ...]]:
        return None, ("xmpp",)

    @staticmethod
    def connection(terms: None, sockets: OpenSockets, config: Config) -> XmppWebSocketWriter:
        return XmppWebSocketWriter(
            sockets, config.client.queue_max_bytes, config.xmpp.max_stanza_bytes * 4
        )

    @staticmethod
    def open(
        request: web.Request,
        writer: XmppWebSocketWriter,
        terms: None,
        subprotocol: str | None,
    ) -> Opened:
        endpoint = request.app[XMPP]
        session = XmppSession(
            request.app[HUB], writer, "xmpp_websocket", endpoint.settings, endpoint.resume
        )

        async def on_message(data: bytes) -> None:
            try:
                element = endpoint.parse(data)
                if element.ns == st.NS_FRAMING and element.name == "open":
                    session.check_domain(element.get("to"))
                    writer.write(
                        build_frame(st.ws_open(endpoint.settings.domain, session.stream_id))
                    )
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

        return Opened(session.client, on_message, session.closed)


XMPP_WEBSOCKET = XmppWebSocket()


async def xmpp_websocket_handler(request: web.Request) -> web.StreamResponse:
    return await accept(request, XMPP_WEBSOCKET)
