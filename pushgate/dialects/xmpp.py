"""XMPP over BOSH (``/http-bind``, ``/bosh``) and over WebSocket (``/xmpp-websocket``),
for strophe.js and other XMPP clients (docs/xmpp.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushgate.dialects.base import Dialect
from pushgate.protocol.xmpp.session import DIALECT
from pushgate.transport.bosh import XMPP, XmppEndpoint, bosh_handler, bosh_preflight
from pushgate.transport.xmpp_ws import xmpp_websocket_handler

if TYPE_CHECKING:
    from aiohttp import web

    from pushgate.hub.hub import Hub


class Xmpp(Dialect):
    name = DIALECT

    def __init__(self, app: web.Application, hub: Hub) -> None:
        super().__init__(app, hub)
        self.endpoint = app[XMPP] = XmppEndpoint(hub)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for path in ("/http-bind", "/bosh"):
            router.add_post(path, bosh_handler)
            router.add_get(path, bosh_handler)
            router.add_route("OPTIONS", path, bosh_preflight)
        router.add_get("/xmpp-websocket", xmpp_websocket_handler)

    async def start(self) -> None:
        self.endpoint.start()

    async def stop(self) -> None:
        await self.endpoint.stop()
