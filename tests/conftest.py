"""Shared fixtures: a real pushgate server on a loopback port, tokens, API calls.

``server`` runs the aiohttp application in the test's event loop, bound to an
ephemeral port on 127.0.0.1, with a configuration the test may extend. In CI
(``CI=true``) a skipped test fails the run: every service the suite needs is there.
"""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pushgate.auth import mint_connection_token, mint_subscription_token
from pushgate.config import Config, load_config
from pushgate.hub.hub import Hub
from pushgate.server import create_app
from pushgate.transport.app_keys import HUB

SECRET = "test-secret-0123456789abcdef0123456789"
API_KEY = "test-api-key"

BASE_CONFIG = f"""
[token]
hmac_secret = "{SECRET}"
[api]
key = "{API_KEY}"
[engine]
type = "memory"
[client]
ping_interval = "25s"
pong_timeout = "8s"
[presence]
# a user is offline as soon as their last connection closes (no reload grace), unless a
# test asks for one
offline_delay = 0
[[namespace]]
name = "board"
presence = true
join_leave = true
force_push_join_leave = true
history_size = 1000
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
allow_user_limited_channels = true
[[namespace]]
name = "private"
presence = true
history_size = 10
history_ttl = "60s"
force_recovery = true
allow_user_limited_channels = true
[[namespace]]
name = "notifications"
history_size = 100
history_ttl = "600s"
force_recovery = true
allow_user_limited_channels = true
[[namespace]]
name = "nohistory"
allow_subscribe_for_client = true
"""

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_config(tmp_path: Path, extra: str = "", **overrides: object) -> Config:
    path = tmp_path / "pushgate.toml"
    path.write_text(BASE_CONFIG + textwrap.dedent(extra))
    return load_config(
        str(path), env={}, overrides={k.replace("__", "."): v for k, v in overrides.items()}
    )


@dataclass
class Server:
    url: str
    config: Config
    hub: Hub
    session: aiohttp.ClientSession

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/connection/websocket"

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def token(self, user: str, ttl: float | None = 3600, **claims: object) -> str:
        return mint_connection_token(SECRET, user, ttl=ttl, **claims)

    def sub_token(self, user: str, channel: str, ttl: float | None = 3600, **claims) -> str:
        return mint_subscription_token(SECRET, user, channel, ttl=ttl, **claims)

    async def api(self, method: str, params: dict | None = None, key: str = API_KEY) -> dict:
        async with self.session.post(
            f"{self.api_url}/{method}", json=params or {}, headers={"X-API-Key": key}
        ) as response:
            body = await response.json(content_type=None)
            body["_status"] = response.status
            return body

    async def publish(self, channel: str, data: object) -> dict:
        reply = await self.api("publish", {"channel": channel, "data": data})
        assert "result" in reply, reply
        return reply["result"]


async def start_server(config: Config) -> tuple[web.AppRunner, Hub, str]:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, app[HUB], f"http://127.0.0.1:{port}"


REDIS_URL = os.environ.get("PUSHGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of the test's own on the local Redis; its keys are removed after.

    Skips (with the reason) only where no Redis answers: in CI that skip fails the run.
    """
    import uuid

    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    prefix = f"pgtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def redis_config(tmp_path: Path, redis_prefix: str) -> Callable[..., Config]:
    """Like ``server_config``, with the redis engine on the test's own prefix."""

    def make(extra: str = "", **overrides: object) -> Config:
        overrides = {
            "engine__type": "redis",
            "engine__redis_url": REDIS_URL,
            "engine__redis_prefix": redis_prefix,
            "engine__node_heartbeat": "0.5s",
            "engine__node_ttl": "2s",
            **overrides,
        }
        return make_config(tmp_path, extra, **overrides)

    return make


@pytest.fixture
def server_config(tmp_path: Path) -> Callable[..., Config]:
    return lambda extra="", **overrides: make_config(tmp_path, extra, **overrides)


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[[Config], asyncio.Future]]:
    started: list[tuple[web.AppRunner, aiohttp.ClientSession]] = []

    async def make(config: Config) -> Server:
        runner, hub, url = await start_server(config)
        session = aiohttp.ClientSession()
        started.append((runner, session))
        return Server(url, config, hub, session)

    yield make
    for runner, session in started:
        await session.close()
        await runner.cleanup()


@pytest.fixture
async def server(make_server, server_config) -> Server:
    return await make_server(server_config())


# --- CI: nothing may skip ---------------------------------------------------------------
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and session.exitstatus == 0:
        reporter.write_line(
            f"CI: {len(skipped)} test(s) skipped; in CI every service is present, so "
            "a skip is a failure",
            red=True,
        )
        session.exitstatus = 1
