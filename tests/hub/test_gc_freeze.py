"""The node's GC freeze policy (pushgate/gc_freeze.py): connections' objects are frozen
out of full collections as connections open, are still freed when their connections
close, and frozen cyclic garbage is reclaimed when the node empties."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from pushgate.gc_freeze import Freezer
from tests.centrifuge_helpers import NodeProcess, wait_until
from tests.conftest import BASE_CONFIG, make_config, start_server
from tests.hub.test_gc_cycles import EXTRA_CONFIG, centrifugo, make_token, run, wait_for


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Counts:
    def __init__(self) -> None:
        self.now = 0
        self.opened = 0

    def open(self, count: int) -> None:
        self.now += count
        self.opened += count

    def close(self, count: int) -> None:
        self.now -= count


class Cyclic:
    """An object only the cyclic collector can free once dropped."""

    def __init__(self) -> None:
        self.me = self


def test_a_ramp_freezes_every_tenth_and_small_changes_do_not() -> None:
    counts = Counts()
    freezer = Freezer(lambda: counts.now, lambda: counts.opened, min_growth=100)
    counts.open(99)
    freezer.check()
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0
    counts.open(1)
    freezer.check()
    assert freezer.freezes == 1 and gc.get_freeze_count() > 0
    counts.open(5000)  # a ramp: frozen again
    freezer.check()
    assert (freezer.freezes, freezer.frozen_at) == (2, 5100)
    counts.open(400)  # under 10% of 5,500: not yet
    freezer.check()
    assert freezer.freezes == 2


def test_churn_at_a_steady_count_freezes_too() -> None:
    counts = Counts()
    freezer = Freezer(lambda: counts.now, lambda: counts.opened, min_growth=100)
    counts.open(1000)
    freezer.check()
    for _ in range(10):  # ten times 12 replaced: 120 opened, the count never moves
        counts.close(12)
        counts.open(12)
        freezer.check()
    assert freezer.freezes == 2 and counts.now == 1000


def test_when_connections_halve_frozen_cycles_are_collected() -> None:
    counts = Counts()
    freezer = Freezer(lambda: counts.now, lambda: counts.opened, min_growth=10)
    leaked = Cyclic()
    ref = weakref.ref(leaked)
    counts.open(100)
    freezer.check()
    del leaked
    gc.collect()
    assert ref() is not None  # frozen: no collection sees it
    counts.close(40)
    freezer.check()
    assert ref() is not None and freezer.thaws == 0
    counts.close(20)  # 40 of the 100 left: under half
    freezer.check()
    assert freezer.thaws == 1 and ref() is None
    assert gc.get_freeze_count() > 0  # what is alive is frozen again


async def frozen_then_closed(tmp_path: Path, count: int) -> tuple[int, int, list]:
    config = make_config(tmp_path, EXTRA_CONFIG)
    runner, hub, url = await start_server(config)
    try:
        freezer = Freezer(lambda: len(hub.clients), lambda: hub.registered, min_growth=count)
        sockets = [await centrifugo(url, make_token, f"freeze-{i}") for i in range(count)]
        await wait_for(lambda: len(hub.clients) == count, "every connection is registered")
        clients = [weakref.ref(client) for client in hub.clients.values()]
        freezer.check()
        assert freezer.freezes == 1
        frozen = gc.get_freeze_count()
        await asyncio.gather(*(ws.close() for ws in sockets))
        del sockets
        await wait_for(lambda: not hub.clients, "the hub has forgotten every connection")
        await wait_for(lambda: all(ref() is None for ref in clients), "closed clients are freed")
        return frozen, gc.get_freeze_count(), clients
    finally:
        await runner.cleanup()


def test_frozen_connections_are_freed_when_they_close_without_a_collection(tmp_path) -> None:
    gc.disable()  # nothing but reference counting may free them
    try:
        frozen, after, clients = run("uvloop", frozen_then_closed(tmp_path, 100))
    finally:
        gc.enable()
    assert all(ref() is None for ref in clients)
    # each connection's objects left the permanent generation with it
    assert frozen - after >= 100 * 20, (frozen, after)


class ServedNode:
    """``pushgate serve`` with the test configuration (plus ``extra`` TOML) and an HTTP
    session to read its /metrics."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        (tmp_path / "pushgate.toml").write_text(BASE_CONFIG + extra)
        self.node = NodeProcess(tmp_path / "pushgate.toml", tmp_path / "node.log")
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ServedNode:
        await self.node.start()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        self.node.kill()

    async def metrics(self) -> str:
        assert self.http is not None
        async with self.http.get(f"{self.node.url}/metrics") as response:
            return await response.text()

    async def frozen(self) -> float:
        for line in (await self.metrics()).splitlines():
            if line.startswith("pushgate_gc_frozen_objects "):
                return float(line.split()[1])
        raise AssertionError("no pushgate_gc_frozen_objects in /metrics")

    async def connect(self, count: int) -> list:
        return [await centrifugo(self.node.url, make_token, f"u{i}") for i in range(count)]


async def test_a_served_node_freezes_its_connections_and_lets_them_go(tmp_path) -> None:
    """``pushgate serve`` with ``server.gc_freeze = true``: 300 connections are frozen
    within seconds of opening (the policy runs every second; 256 opened is the least
    growth), and leave the frozen set again when they close."""
    async with ServedNode(tmp_path, "[server]\ngc_freeze = true\n") as served:
        at_start = await served.frozen()
        sockets = await served.connect(300)

        async def all_frozen() -> bool:
            return await served.frozen() >= at_start + 300 * 20

        await wait_until(all_frozen, 10, "the connections' objects are frozen")
        peak = await served.frozen()
        await asyncio.gather(*(ws.close() for ws in sockets))

        async def let_go() -> bool:
            # most of it: the node keeps a little per user by design (last seen)
            return await served.frozen() <= peak - 0.75 * (peak - at_start)

        await wait_until(let_go, 10, "closed connections leave the frozen set")


async def test_by_default_a_served_node_does_not_freeze_its_connections(tmp_path) -> None:
    async with ServedNode(tmp_path) as served:
        at_start = await served.frozen()  # the startup objects (server.tune_gc)
        sockets = await served.connect(300)

        async def counted() -> bool:
            line = 'pushgate_connections{dialect="centrifugo",transport="websocket"} 300.0'
            return line in await served.metrics()

        await wait_until(counted, 10, "the 300 connections are counted")
        # a freeze would have happened within a second of the 256th connection
        await asyncio.sleep(1.5)
        assert await served.frozen() == at_start
        await asyncio.gather(*(ws.close() for ws in sockets))
