"""Shared by the tests that drive pushgate with real processes and real clients.

- ``Recorder``, the ``clients`` fixture and ``subscribed``: centrifuge-python (the
  Centrifugo SDK for Python) connections whose events a test awaits with timeouts;
- ``RedisProcess``: a redis-server of the test's own on a free loopback port;
- ``NodeProcess``: ``python -m pushgate serve`` as a subprocess that can be SIGKILLed;
- ``FailoverProxy``: a loopback TCP proxy that sends each new connection to the first
  node that accepts it, so a client "reconnects to another node" as behind a balancer.

Test modules that want the ``clients`` fixture import ``clients_fixture`` (noqa: F401).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler
from redis.exceptions import RedisError


class Recorder(ClientEventHandler, SubscriptionEventHandler):
    """Records every client and subscription event; tests await the ones they need."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

    def _add(self, kind: str, ctx: Any) -> None:
        self.events.append((kind, ctx))
        self._changed.set()

    async def wait_for(
        self, kind: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for seen_kind, ctx in self.events:
                    if seen_kind == kind and predicate(ctx):
                        return ctx
                self._changed.clear()
                await self._changed.wait()

    def of(self, kind: str) -> list[Any]:
        return [ctx for seen_kind, ctx in self.events if seen_kind == kind]

    async def on_connected(self, ctx):
        self._add("connected", ctx)

    async def on_disconnected(self, ctx):
        self._add("disconnected", ctx)

    async def on_connecting(self, ctx):
        self._add("connecting", ctx)

    async def on_subscribed(self, ctx):
        self._add("subscribed", ctx)

    async def on_subscribing(self, ctx):
        self._add("subscribing", ctx)

    async def on_unsubscribed(self, ctx):
        self._add("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self._add("publication", ctx)

    async def on_join(self, ctx):
        self._add("join", ctx)

    async def on_leave(self, ctx):
        self._add("leave", ctx)

    async def on_error(self, ctx):
        self._add("error", ctx)


@pytest.fixture(name="clients")
async def clients_fixture():
    made: list[Client] = []

    def make(server, user: str = "alice", **kwargs) -> tuple[Client, Recorder]:
        recorder = Recorder()
        kwargs.setdefault("token", server.token(user))
        client = Client(server.ws_url, events=recorder, **kwargs)
        made.append(client)
        return client, recorder

    yield make
    for client in made:
        await client.disconnect()


async def subscribed(client: Client, channel: str, **kwargs):
    recorder = Recorder()
    sub = client.new_subscription(channel, events=recorder, **kwargs)
    await sub.subscribe()
    await sub.ready(timeout=5)
    return sub, recorder


# --- real processes -----------------------------------------------------------------
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.05
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took. For properties that are
    about time (a TTL lapsing, a process coming up), never as a stand-in for an event."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        if await predicate():
            return loop.time() - started
        if loop.time() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(every)


class RedisProcess:
    """A redis-server of the test's own on a free loopback port, in ``directory``.

    ``persistent``: append-only file fsynced on every write, so a SIGKILL loses nothing
    that was acknowledged; otherwise nothing is kept across a restart.
    """

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--save", ""]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        client = aioredis.from_url(self.url)

        async def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, "redis exited"
            try:
                return bool(await client.ping())
            except (RedisError, OSError):
                return False

        try:
            await wait_until(answers, 10, f"redis-server on port {self.port} answers")
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.url)


class NodeProcess:
    """``python -m pushgate serve --config <file> --port N``: a node that can be killed."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pushgate", "serve", "--config", str(self.config_path)),
                *("--port", str(self.port), "--host", "127.0.0.1"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parent.parent,
        )
        log.close()

        async def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(self.url + "/health") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(healthy, 15, f"pushgate node on port {self.port} is up")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Redis."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class FailoverProxy:
    """A loopback TCP proxy: each new connection goes to the first backend port that
    accepts it, as a load balancer that health-checks by connecting. Bounded: at most
    ``max_connections`` at once; ``drop_all()`` cuts every proxied connection."""

    def __init__(self, backends: list[int], max_connections: int = 32) -> None:
        self.backends = backends
        self.max_connections = max_connections
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task] = set()
        #: the backend port each accepted connection went to, in order
        self.routed: list[int] = []

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.writers) >= self.max_connections * 2:
            writer.close()
            return
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 2
                )
            except (OSError, TimeoutError):
                continue
            self.routed.append(port)
            self.writers.update((writer, up_writer))
            pipes = [
                asyncio.ensure_future(self._pipe(reader, up_writer)),
                asyncio.ensure_future(self._pipe(up_reader, writer)),
            ]
            self.tasks.update(pipes)
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in pipes:
                    task.cancel()
                for w in (writer, up_writer):
                    w.close()
                    self.writers.discard(w)
                self.tasks.difference_update(pipes)
            return
        writer.close()  # no backend alive

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def drop_all(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.drop_all()
        for task in list(self.tasks):
            task.cancel()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
