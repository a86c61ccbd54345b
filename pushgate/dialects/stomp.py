"""STOMP 1.0-1.2 over WebSocket (``/stomp``, ``/ws``) and plain TCP (``stomp.tcp_port``),
with the AMQP ingress (``amqp.enabled``), which maps RabbitMQ routing keys to channels
with the same destination map (docs/stomp.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushgate.dialects.base import Dialect
from pushgate.protocol.stomp.session import DIALECT
from pushgate.transport.stomp_tcp import StompTcpListener
from pushgate.transport.stomp_ws import STOMP, StompEndpoint, stomp_websocket_handler

if TYPE_CHECKING:
    from aiohttp import web

    from pushgate.api.amqp import AmqpIngress
    from pushgate.hub.hub import Hub


class Stomp(Dialect):
    name = DIALECT

    def __init__(self, app: web.Application, hub: Hub) -> None:
        super().__init__(app, hub)
        config = hub.config
        self.endpoint = app[STOMP] = StompEndpoint(hub)
        self.tcp = (
            StompTcpListener(self.endpoint, config.server.host, config.stomp.tcp_port)
            if config.stomp.tcp_port
            else None
        )
        self.ingress: AmqpIngress | None = None
        if config.amqp.enabled:
            from pushgate.api.amqp import AmqpIngress  # aio-pika only when it is used

            self.ingress = AmqpIngress(hub, config.amqp, self.endpoint.destinations)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/stomp", stomp_websocket_handler)
        router.add_get("/ws", stomp_websocket_handler)

    async def start(self) -> None:
        self.endpoint.start()
        if self.tcp is not None:
            await self.tcp.start()
        if self.ingress is not None:
            self.ingress.start()

    async def stop_accepting(self) -> None:
        if self.ingress is not None:
            await self.ingress.stop()  # unacknowledged messages go back to the queue
        if self.tcp is not None:
            self.tcp.close()

    async def stop(self) -> None:
        await self.endpoint.stop()
