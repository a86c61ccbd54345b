"""Closed connections' goodbyes start a pass at a time, the loop running between; the
gauge of those waiting."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client.core import Metric

from pushgate.auth import TokenVerifier
from pushgate.engine.memory import MemoryEngine
from pushgate.hub.departures import Departures
from pushgate.hub.hub import Hub
from pushgate.hub.metrics_collector import HubCollector
from tests.conftest import make_config


async def test_goodbyes_start_in_order_a_pass_per_loop_iteration():
    departures = Departures(per_pass=100)
    started: list[int] = []
    for n in range(350):
        departures.add(lambda n=n: started.append(n))
    assert len(departures) == 350 and started == []
    seen = []
    for _ in range(4):
        await asyncio.sleep(0)  # one iteration of the loop: what else is due runs too
        seen.append(len(started))
    assert seen == [100, 200, 300, 350]
    assert started == list(range(350))
    assert len(departures) == 0


async def test_a_lone_goodbye_starts_at_the_next_iteration():
    departures = Departures()
    started = asyncio.Event()
    departures.add(started.set)
    await asyncio.sleep(0)
    assert started.is_set()
    departures.add(started.clear)  # the queue drained: a later one starts as promptly
    await asyncio.sleep(0)
    assert not started.is_set()


async def test_a_failing_goodbye_is_logged_and_the_others_still_start(caplog):
    departures = Departures(per_pass=10)
    started: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    departures.add(lambda: started.append(1))
    departures.add(broken)
    departures.add(lambda: started.append(3))
    with caplog.at_level(logging.ERROR, logger="pushgate.hub"):
        await asyncio.sleep(0)
    assert started == [1, 3]
    assert "goodbye failed" in caplog.text


async def test_goodbyes_waiting_is_a_gauge(tmp_path):
    config = make_config(tmp_path)
    hub = Hub(config, MemoryEngine(), TokenVerifier(config.token))
    hub.departures.per_pass = 2

    def waiting() -> float:
        metrics: list[Metric] = list(HubCollector(hub).collect())
        (gauge,) = [m for m in metrics if m.name == "pushgate_goodbyes_waiting"]
        return gauge.samples[0].value

    for _ in range(5):
        hub.departures.add(lambda: None)
    assert waiting() == 5
    await asyncio.sleep(0)
    assert waiting() == 3
    for _ in range(2):
        await asyncio.sleep(0)
    assert waiting() == 0
