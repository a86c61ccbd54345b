"""pushgate and the team board in one process and on one port.

``build_app`` takes pushgate's own aiohttp application (``pushgate.server.create_app``)
and mounts the demo backend beside it at ``/demo/``. The two still talk the way two
separate services would: pushgate asks the demo over HTTP through its proxies (who
connects, who may follow a board, card moves: ``demo/proxy.py``), and the demo publishes
over HTTP to pushgate's ``/api/publish`` with the API key, so moving the demo to another
process or machine changes only URLs.

``with_demo_proxies`` points pushgate's proxies at this process and turns them on: the
``[[proxies]]`` entries whose endpoint is under ``/demo/proxy/`` (``pushgate.toml``
declares them) are moved to the port actually listened on, missing ones are added (a
test's configuration has none), and the connect proxy, the board namespace's subscribe
proxy and the rpc proxy are switched on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from demo import proxy
from demo.app import Settings, create_demo_app
from pushgate.config import Config, ProxyConfig
from pushgate.server import bind_socket, create_app

log = logging.getLogger("demo")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = Path(__file__).resolve().parent / "data" / "demo.sqlite3"
DB_ENV = "DEMO_DB"


#: where pushgate's proxies reach the demo (its app is mounted at /demo/)
PROXY_PATH = "/demo/proxy/"


def demo_proxies(config: Config) -> list[ProxyConfig]:
    return [p for p in config.proxies if urlsplit(p.endpoint).path.startswith(PROXY_PATH)]


def proxy_key(config: Config) -> str:
    """The ``X-Proxy-Key`` the demo's proxies send (their ``static_headers``)."""
    for entry in demo_proxies(config):
        for header in entry.static_headers:
            name, _, value = header.partition(":")
            if name.strip().lower() == proxy.KEY_HEADER.lower():
                return value.strip()
    return ""


#: what the demo answers: (endpoint under PROXY_PATH, the name it gets when the
#: configuration does not declare it, HTTP headers it needs)
DEMO_PROXIES = (
    ("connect", "demo-connect", ["Cookie"]),
    ("subscribe", "demo-board", []),
    ("rpc", "demo-rpc", []),
)


def with_demo_proxies(config: Config, url: str) -> Config:
    """``config`` with the demo's connect, board subscribe and rpc proxies on, pointing
    at ``url``: declared ones (endpoints under /demo/proxy/) moved there, missing ones
    added with the declared ones' key (a random one if none)."""
    key = proxy_key(config) or secrets.token_urlsafe(16)
    base = urlsplit(url)
    proxies, names = [], {}
    for entry in config.proxies:
        parts = urlsplit(entry.endpoint)
        if parts.path.startswith(PROXY_PATH):
            moved = urlunsplit(parts._replace(scheme=base.scheme, netloc=base.netloc))
            entry = dataclasses.replace(entry, endpoint=moved)
            names.setdefault(parts.path[len(PROXY_PATH) :], entry.name)
        proxies.append(entry)
    for kind, name, headers in DEMO_PROXIES:
        if kind not in names:
            names[kind] = name
            proxies.append(
                ProxyConfig(
                    name=name,
                    endpoint=url + PROXY_PATH + kind,
                    http_headers=list(headers),
                    static_headers=[f"{proxy.KEY_HEADER}: {key}"],
                )
            )
    client = dataclasses.replace(
        config.client, connect_proxy_enabled=True, connect_proxy_name=names["connect"]
    )
    rpc = dataclasses.replace(config.rpc, proxy_enabled=True, proxy_name=names["rpc"])
    namespaces = [
        dataclasses.replace(
            ns, subscribe_proxy_enabled=True, subscribe_proxy_name=names["subscribe"]
        )
        if ns.name == "board"
        else ns
        for ns in config.namespaces
    ]
    log.info("demo: pushgate's connect, board subscribe and rpc proxies call %s", url)
    return dataclasses.replace(
        config, proxies=proxies, client=client, rpc=rpc, namespaces=namespaces
    )


def settings_for(config: Config, pushgate_url: str, **overrides: object) -> Settings:
    """The demo's settings; ``config`` already ``with_demo_proxies``."""
    values: dict = {
        "db_path": os.environ.get(DB_ENV) or str(DEFAULT_DB),
        "pushgate_url": pushgate_url,
        "api_key": config.api.key,
        "proxy_key": proxy_key(config),
        "status_namespace": config.presence.status_namespace,
        "webhook_secret": config.events.webhook_secret,
        **overrides,
    }
    return Settings(**values)


HOOK_PATH = "/demo/hooks/pushgate"


def build_app(config: Config, settings: Settings) -> web.Application:
    """pushgate (``config`` already ``with_demo_proxies``) with the demo at /demo/."""
    if config.events.enabled and not config.events.webhook_url:
        # pushgate's events go to the demo backend, at its own address (any port)
        config.events.webhook_url = settings.pushgate_url + HOOK_PATH
    app = create_app(config)

    async def to_demo(request: web.Request) -> web.Response:
        raise web.HTTPFound("/demo/" + (f"?{request.query_string}" if request.query_string else ""))

    app.router.add_get("/", to_demo)
    app.router.add_get("/demo", to_demo)
    demo = create_demo_app(settings)
    proxy.add_routes(demo)
    app.add_subapp("/demo/", demo)
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
    config = with_demo_proxies(config, url)
    app = build_app(config, settings_for(config, url, **overrides))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return Running(url, runner, app)
