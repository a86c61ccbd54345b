"""What a dialect is to the server: its state, its routes, its part of start and shutdown.

``server.create_app`` builds every dialect of ``DIALECTS`` that is ``enabled`` for the
configuration, once per application, after the hub. The constructor puts the state
the dialect's handlers read into the application (``web.AppKey``s); ``add_routes``
adds its endpoints. Around the node's life:

- ``start``: once the hub has started (timers, sweepers, listeners, ingress);
- ``stop_accepting``: at shutdown, before the hub disconnects everyone — listeners and
  ingress close so nothing new comes in;
- ``stop``: once every connection is closed and every WebSocket has flushed its close
  frame — what ``start`` began ends.

Every hook does nothing unless the dialect says otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from aiohttp import web

    from pushgate.config import Config
    from pushgate.hub.hub import Hub


class Dialect:
    #: the wire protocol, as its sessions' ``ClientSink.dialect`` names it
    name: ClassVar[str]

    @staticmethod
    def enabled(config: Config) -> bool:
        """Whether this configuration serves the dialect (every dialect is on today)."""
        return True

    def __init__(self, app: web.Application, hub: Hub) -> None:
        self.hub = hub

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The dialect's endpoints."""

    async def start(self) -> None:
        """The hub has started."""

    async def stop_accepting(self) -> None:
        """Shutdown begins: take no new connections or messages."""

    async def stop(self) -> None:
        """Every connection is closed."""
