"""What operators rely on: /metrics, /health, /ready."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pushgate import server as pushgate_server
from tests.centrifuge_helpers import RedisProcess


async def scrape(server) -> dict[tuple[str, tuple], float]:
    async with server.session.get(server.url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_connections_commands_and_deliveries(server):
    before = await scrape(server)
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("m")}}).decode())
    await ws.receive(timeout=5)
    await ws.send_str(orjson.dumps({"id": 2, "subscribe": {"channel": "board:m"}}).decode())
    await ws.receive(timeout=5)
    for n in range(3):
        await server.publish("board:m", n)
    received = 0
    async with asyncio.timeout(5):
        while received < 3:
            message = await ws.receive()
            received += message.data.count('"pub"')
    await server.api("publish", {"channel": "nope:1", "data": 1})
    after = await scrape(server)
    assert value(after, "pushgate_connections", transport="websocket", dialect="centrifugo") == 1
    assert value(after, "pushgate_subscriptions") == 1
    assert value(after, "pushgate_users_online") == 1
    grew = [
        value(after, name, **labels) - value(before, name, **labels)
        for name, labels in (
            ("pushgate_commands_total", {"method": "subscribe", "result": "ok"}),
            ("pushgate_deliveries_total", {}),
            ("pushgate_publications_total", {}),
            ("pushgate_api_requests_total", {"method": "publish", "result": "ok"}),
            ("pushgate_api_requests_total", {"method": "publish", "result": "error"}),
            ("pushgate_engine_operation_duration_seconds_count", {"operation": "publish"}),
        )
    ]
    assert grew == [1, 3, 3, 3, 1, 3]
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_open_fds") > 0
    await ws.close()
    # the gauges are kept as connections go, not counted at the scrape: they come back
    async with asyncio.timeout(5):
        while True:
            gone = await scrape(server)
            if not value(gone, "pushgate_users_online"):
                break
            await asyncio.sleep(0.02)
    assert value(gone, "pushgate_connections", transport="websocket", dialect="centrifugo") == 0
    assert value(gone, "pushgate_subscriptions") == 0


async def test_disconnects_are_counted_by_code(server):
    before = await scrape(server)
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str("{not json")
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.CLOSE
    after = await scrape(server)
    code = {"code": "3501"}
    assert (
        value(after, "pushgate_disconnects_total", **code)
        - value(before, "pushgate_disconnects_total", **code)
        == 1
    )


@pytest.fixture
def gc_timer():
    timer = pushgate_server.watch_gc()
    yield timer
    gc.callbacks.remove(timer)


async def test_gc_pauses_are_a_histogram_by_generation(server, gc_timer):
    before = await scrape(server)
    gc.collect(0)
    gc.collect()
    after = await scrape(server)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for generation in ("0", "2"):
        assert grew("pushgate_gc_pause_seconds_count", generation=generation) >= 1
        assert grew("pushgate_gc_pause_seconds_sum", generation=generation) > 0
        assert value(after, "pushgate_gc_pause_seconds_count", generation=generation) == value(
            after, "pushgate_gc_pause_seconds_bucket", generation=generation, le="+Inf"
        )
    assert ("pushgate_gc_pause_seconds_count", (("generation", "1"),)) in after


async def test_a_slow_full_collection_is_logged(gc_timer, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="pushgate.server")
    gc.collect(0)  # not a full collection: never logged
    monkeypatch.setattr(pushgate_server, "SLOW_FULL_COLLECTION", 0.0)
    gc.collect()

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "pushgate.server"]

    async with asyncio.timeout(5):
        while not logged():  # logged from the loop, after the collection
            await asyncio.sleep(0.01)
    [record] = logged()
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("full garbage collection paused the node ")
    assert "objects collected" in record.getMessage()


async def test_health_and_ready(server):
    async with server.session.get(server.url + "/health") as response:
        assert (response.status, (await response.json())["status"]) == (200, "ok")
    async with server.session.get(server.url + "/ready") as response:
        assert response.status == 200
        assert (await response.json()) == {"status": "ready", "engine": "memory"}
    server.hub.draining = True
    async with server.session.get(server.url + "/ready") as response:
        assert response.status == 503
    server.hub.draining = False


async def test_ready_reports_an_unreachable_redis(make_server, server_config, tmp_path):
    redis = RedisProcess(tmp_path)
    await redis.start()
    try:
        server = await make_server(server_config(engine__type="redis", engine__redis_url=redis.url))
        async with server.session.get(server.url + "/ready") as response:
            assert response.status == 200
        redis.kill()
        async with server.session.get(server.url + "/ready") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "engine unreachable"
    finally:
        redis.kill()


def test_grafana_dashboard_only_uses_metrics_that_exist():
    """The dashboard in docs/ cannot drift from the metrics the server exports."""
    import json
    import re
    from pathlib import Path

    from pushgate import metrics
    from pushgate.hub import metrics_collector

    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(pushgate_[a-z_]+)", target["expr"])
    }
    source = Path(metrics.__file__).read_text() + Path(metrics_collector.__file__).read_text()
    exported = set(re.findall(r'"(pushgate_[a-z_]+)"', source))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    unknown = {
        name
        for name in used
        if name not in exported
        and not any(name.endswith(s) and name[: -len(s)] in exported for s in suffixes)
        and name.removesuffix("_total") not in exported
    }
    assert not unknown, unknown


async def test_client_chosen_names_never_become_metric_labels(server):
    """An attacker's command names must not grow /metrics (20,000 names once made it
    79 MiB and a scrape took a second of the event loop)."""
    before = await scrape(server)
    ws = await server.session.ws_connect(server.ws_url)
    await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": server.token("m")}}).decode())
    await ws.receive(timeout=5)
    names = [f"bogus_{n}" for n in range(150)]  # within the default command burst
    frame = "\n".join(
        orjson.dumps({"id": n + 2, name: {}}).decode() for n, name in enumerate(names)
    )
    await ws.send_str(frame)
    errors = 0
    async with asyncio.timeout(5):
        while errors < len(names):
            message = await ws.receive()
            errors += message.data.count('"code":104')
    await server.session.post(server.api_url + "/bogus_api_method", json={})
    after = await scrape(server)
    labels = {dict(labels).get("method") for _, labels in after}
    assert not any(str(label).startswith("bogus") for label in labels)
    unknown = {"method": "unknown", "result": "error"}
    assert value(after, "pushgate_commands_total", **unknown) - value(
        before, "pushgate_commands_total", **unknown
    ) == len(names)
    await ws.close()


async def test_a_blocked_event_loop_is_measured_and_logged(server, caplog):
    """pushgate_event_loop_lag_*: how long the loop that serves every connection was kept
    from running; a stretch over 100 ms is logged (the c1m target is none)."""
    await scrape(server)  # resets the since-last-scrape maximum
    with caplog.at_level(logging.WARNING, logger="pushgate.loop"):
        time.sleep(0.3)  # the test blocks the server's own loop, as a slow callback would
        async with asyncio.timeout(5):
            while not any("event loop blocked" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
    samples = await scrape(server)
    assert value(samples, "pushgate_event_loop_lag_max_seconds") >= 0.25
    assert value(samples, "pushgate_event_loop_lag_seconds_bucket", le="+Inf") >= 1
    assert value(samples, "pushgate_event_loop_lag_seconds_bucket", le="0.1") < value(
        samples, "pushgate_event_loop_lag_seconds_bucket", le="+Inf"
    )
    # the loop's thread slept: the block is not the node's own work
    assert value(samples, "pushgate_event_loop_lag_max_cpu_seconds") < 0.1


async def test_a_busy_loop_is_told_from_a_waiting_one(server, caplog):
    """A block the loop's own thread spent computing is reported as running, so an
    operator can tell the node's code from an oversubscribed machine."""
    await scrape(server)
    with caplog.at_level(logging.WARNING, logger="pushgate.loop"):
        end = time.thread_time() + 0.3
        while time.thread_time() < end:  # the test keeps the server's own loop computing
            pass
        async with asyncio.timeout(5):
            while not any("event loop blocked" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
    samples = await scrape(server)
    assert value(samples, "pushgate_event_loop_lag_max_seconds") >= 0.25
    assert value(samples, "pushgate_event_loop_lag_max_cpu_seconds") >= 0.2
    line = next(r.getMessage() for r in caplog.records if "blocked" in r.getMessage())
    assert "of it running" in line
