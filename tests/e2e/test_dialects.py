"""Dialects as plug-ins (pushgate/dialects/): a dialect added to ``DIALECTS`` is served
with its routes, starts after the hub, stops taking work while its connections are still
open and stops once they are closed; one that is not ``enabled`` is not served at all."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web

from pushgate import server as pushgate_server
from pushgate.auth import mint_connection_token
from pushgate.dialects import DIALECTS, Dialect
from tests.conftest import SECRET, start_server


class Echo(Dialect):
    """The smallest dialect: one route, and a record of what the hub held at each hook."""

    name = "echo"
    served: list[Echo] = []

    def __init__(self, app: web.Application, hub) -> None:
        super().__init__(app, hub)
        self.hooks: list[tuple[str, int]] = []
        Echo.served.append(self)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/echo", self.echo)

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response([hook for hook, _ in self.hooks])

    def _saw(self, hook: str) -> None:
        self.hooks.append((hook, len(self.hub.clients)))

    async def start(self) -> None:
        self._saw("start")

    async def stop_accepting(self) -> None:
        self._saw("stop_accepting")

    async def stop(self) -> None:
        self._saw("stop")


class Off(Echo):
    name = "off"

    @staticmethod
    def enabled(config) -> bool:
        return False

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/off", self.echo)


async def test_a_dialect_plugs_in_with_its_routes_and_lifetime(monkeypatch, server_config):
    monkeypatch.setattr(pushgate_server, "DIALECTS", (*DIALECTS, Echo, Off))
    Echo.served.clear()
    runner, _, url = await start_server(server_config())
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/echo") as response:
            assert await response.json() == ["start"]
        async with session.get(url + "/off") as response:
            assert response.status == 404
        # the built-in dialects are served beside it
        ws = await session.ws_connect(url.replace("http", "ws") + "/connection/websocket")
        token = mint_connection_token(SECRET, "alice")
        await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
        assert "connect" in orjson.loads((await ws.receive(timeout=5)).data)
        await runner.cleanup()
        await ws.close()
    [echo] = Echo.served  # Off was never built
    # no more work taken while its connections are still there; stopped once they are gone
    assert echo.hooks == [("start", 0), ("stop_accepting", 1), ("stop", 0)]
