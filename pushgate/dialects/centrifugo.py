"""The Centrifugo protocol on every transport it has (docs/transports.md).

WebSocket (bidirectional and unidirectional), SSE and HTTP streaming with
``/emulation`` for the client's commands, unidirectional SSE and HTTP streaming, and
pushgate's long and short polling. Emulation commands that reach another node than the
one holding their session come back to it as ``emulation`` control messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushgate.dialects.base import Dialect
from pushgate.protocol.centrifugo.session import CentrifugoSession
from pushgate.transport.cors import preflight_only
from pushgate.transport.emulation import (
    SESSIONS,
    EmulationSessions,
    emulation_handler,
    http_stream_handler,
    sse_handler,
)
from pushgate.transport.polling import POLLING, PollingSessions, longpoll_handler, poll_handler
from pushgate.transport.uni import (
    uni_http_stream_handler,
    uni_sse_handler,
    uni_websocket_handler,
)
from pushgate.transport.websocket import websocket_handler

if TYPE_CHECKING:
    from aiohttp import web

    from pushgate.hub.hub import Hub


class Centrifugo(Dialect):
    name = CentrifugoSession.dialect

    def __init__(self, app: web.Application, hub: Hub) -> None:
        super().__init__(app, hub)
        self.emulation = app[SESSIONS] = EmulationSessions()
        self.polling = app[POLLING] = PollingSessions(hub.config.polling.session_timeout)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/connection/websocket", websocket_handler)
        router.add_post("/connection/http_stream", http_stream_handler)
        router.add_get("/connection/sse", sse_handler)
        router.add_post("/emulation", emulation_handler)
        router.add_get("/connection/uni_websocket", uni_websocket_handler)
        router.add_get("/connection/uni_sse", uni_sse_handler)
        router.add_post("/connection/uni_sse", uni_sse_handler)
        router.add_post("/connection/uni_http_stream", uni_http_stream_handler)
        router.add_post("/connection/longpoll", longpoll_handler)
        router.add_post("/connection/poll", poll_handler)
        for path in ("/connection/{transport}", "/emulation"):
            router.add_route("OPTIONS", path, preflight_only)

    async def start(self) -> None:
        self.polling.start()
        self.hub.emulation = self.emulation.forwarded

    async def stop(self) -> None:
        await self.polling.stop()
