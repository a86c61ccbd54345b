"""pushgate and the team board in one process and on one port.

``build_app`` takes pushgate's own aiohttp application (``pushgate.server.create_app``)
and mounts the demo backend beside it at ``/demo/``. The two still talk the way two
separate services would: the demo signs JWTs with the shared HMAC secret and publishes
over HTTP to pushgate's ``/api/publish`` with the API key (to its own address), so moving
the demo to another process or machine changes only ``Settings.pushgate_url``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from demo.app import Settings, create_demo_app
from pushgate.config import Config
from pushgate.server import bind_socket, create_app

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = Path(__file__).resolve().parent / "data" / "demo.sqlite3"
DB_ENV = "DEMO_DB"


def settings_for(config: Config, pushgate_url: str, **overrides: object) -> Settings:
    values: dict = {
        "db_path": os.environ.get(DB_ENV) or str(DEFAULT_DB),
        "pushgate_url": pushgate_url,
        "api_key": config.api.key,
        "hmac_secret": config.token.hmac_secret,
        "status_namespace": config.presence.status_namespace,
        "webhook_secret": config.events.webhook_secret,
        **overrides,
    }
    return Settings(**values)


HOOK_PATH = "/demo/hooks/pushgate"


def build_app(config: Config, settings: Settings) -> web.Application:
    if config.events.enabled and not config.events.webhook_url:
        # pushgate's events go to the demo backend, at its own address (any port)
        config.events.webhook_url = settings.pushgate_url + HOOK_PATH
    app = create_app(config)

    async def to_demo(request: web.Request) -> web.Response:
        raise web.HTTPFound("/demo/" + (f"?{request.query_string}" if request.query_string else ""))

    app.router.add_get("/", to_demo)
    app.router.add_get("/demo", to_demo)
    app.add_subapp("/demo/", create_demo_app(settings))
    return app


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass
class Running:
    """A started server (tests, the screenshot script): ``url``, then ``await close()``."""

    url: str
    runner: web.AppRunner
    app: web.Application

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(
    config: Config, host: str = "127.0.0.1", port: int = 0, **overrides: object
) -> Running:
    """Start pushgate + demo in the running event loop (port 0: any free port)."""
    sock = bind_socket(host, port)
    url = url_of(sock)
    app = build_app(config, settings_for(config, url, **overrides))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return Running(url, runner, app)
