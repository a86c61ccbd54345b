"""Events survive what products live through: a backend down for 30 s while pushgate
restarts, a worker killed while notifications are due, and RabbitMQ as the sink.

Redis engine (the durable log). The webhook endpoint is tests/event_sink.py; RabbitMQ
is the real one on 127.0.0.1:5672, read with aio-pika.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import aio_pika
import pytest
import redis.asyncio as aioredis

from tests.centrifuge_helpers import clients_fixture, free_port, subscribed  # noqa: F401
from tests.conftest import REDIS_URL, Server, start_server
from tests.e2e.test_workers import Cluster, worker_pid
from tests.engines.test_no_ghosts import cluster_config
from tests.event_sink import WEBHOOK_SECRET, EventSink

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def webhook(url: str, extra: str = "") -> str:
    return f"""
[events]
enabled = true
webhook_url = "{url}"
webhook_secret = "{WEBHOOK_SECRET}"
retry_min_delay = "0.2s"
retry_max_delay = "2s"
lease = "2s"
{extra}
"""


async def visit(server: Server, user: str, clients) -> None:
    client, _ = clients(server, user)
    await client.connect()
    await subscribed(client, "board:outage")
    await client.disconnect()


async def test_a_backend_down_for_30_s_gets_everything_after_in_order_across_a_restart(
    redis_config, clients
):
    import aiohttp

    sink = EventSink()
    sink.port = free_port()  # nothing listens there yet: the backend is down
    config = redis_config(webhook(sink.url), presence__offline_delay="0.2s")
    runner, hub, url = await start_server(config)
    session = aiohttp.ClientSession()
    try:
        first = Server(url, config, hub, session)
        started = time.monotonic()
        for n in range(3):
            await visit(first, f"early{n}", clients)
        await asyncio.sleep(10)  # the outage goes on
        await runner.cleanup()  # pushgate restarts meanwhile (its shutdown events too)
        runner, hub, url = await start_server(config)
        second = Server(url, config, hub, session)
        for n in range(3):
            await visit(second, f"late{n}", clients)
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - started)))
        assert sink.requests == 0
        await sink.start()  # the backend is back after 30 s
        users = [f"early{n}" for n in range(3)] + [f"late{n}" for n in range(3)]
        await sink.wait_for(
            lambda s: all(s.of("user_offline", user=u) for u in users),
            timeout=10,
            what="every event of the outage",
        )
        for user in users:
            assert [e["type"] for e in sink.of(user=user)] == [
                "connect",
                "user_online",
                "disconnect",
                "user_offline",
            ], user
        board = [e["type"] for e in sink.of(channel="board:outage")]
        assert board == ["channel_occupied", "channel_vacated"] * 6
        # in the log's order, none twice
        assert [e["id"] for e in sink.events] == [e["id"] for e in sink.unique()]
        assert sink.bad_signatures == 0
    finally:
        await runner.cleanup()
        await session.close()
        await sink.stop()


async def test_a_worker_killed_while_notifications_are_due_hands_each_off_once(
    tmp_path, redis_prefix
):
    sink = EventSink()
    await sink.start()
    path = cluster_config(tmp_path, redis_prefix)
    path.write_text(path.read_text() + webhook(sink.url, 'types = ["notification_handoff"]'))
    cluster = Cluster(path, 2, tmp_path / "serve.log")
    redis = aioredis.from_url(REDIS_URL)
    try:
        nodes = await cluster.wait_nodes(lambda nodes: len(nodes) == 2)
        offsets = []
        for n in range(20):
            reply = await cluster.api(
                "publish",
                {"channel": "notifications:#bob", "data": {"n": n}, "handoff": 1.0 + n * 0.05},
            )
            offsets.append(reply["offset"])
        # kill whichever worker delivers events, while the hand-offs fall due
        await sink.wait_for(lambda s: s.events, timeout=5, what="the first hand-off")
        leader = (await redis.get(f"{redis_prefix}:events:lock:webhook")).decode()
        victim = next(node for node in nodes if node["uid"] == leader)
        os.kill(worker_pid(victim), signal.SIGKILL)
        await sink.wait_for(
            lambda s: len(s.unique()) == 20, timeout=15, what="every hand-off, once"
        )
        await asyncio.sleep(1.5)  # past the last TTL: nothing more may come
        handed = sink.unique()
        assert sorted(e["offset"] for e in handed) == offsets
        assert all(e["type"] == "notification_handoff" for e in handed)
        # a batch cut short by the kill is sent again with the same ids (documented):
        # the product drops ids it has seen; each notification has exactly one id
        assert len({e["offset"] for e in sink.events}) == 20
        per_offset = {}
        for event in sink.events:
            per_offset.setdefault(event["offset"], set()).add(event["id"])
        assert all(len(ids) == 1 for ids in per_offset.values())
    finally:
        await redis.aclose()
        await cluster.close()
        await sink.stop()


async def test_events_go_to_rabbitmq_in_order(server_config, make_server, clients):
    try:
        connection = await aio_pika.connect_robust(AMQP_URL)
    except Exception as exc:  # pragma: no cover - RabbitMQ is part of the test setup
        pytest.skip(f"no RabbitMQ at {AMQP_URL}: {exc}")
    exchange_name = f"pushgate-events-{uuid.uuid4().hex[:8]}"
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        server = await make_server(
            server_config(
                f"""
[events]
enabled = true
amqp_url = "{AMQP_URL}"
amqp_exchange = "{exchange_name}"
"""
            )
        )
        await visit(server, "fran", clients)
        received = []
        async with queue.iterator() as messages:
            async with asyncio.timeout(10):
                async for message in messages:
                    async with message.process():
                        received.append(
                            (message.routing_key, message.message_id, json.loads(message.body))
                        )
                    if sum(1 for r in received if r[0] == "user_offline") == 1:
                        break
        types = [body["type"] for _, _, body in received]
        assert types == [
            "connect",
            "user_online",
            "channel_occupied",
            "channel_vacated",  # a closing connection leaves its channels first
            "disconnect",
            "user_offline",
        ]
        assert all(key == body["type"] and mid == body["id"] for key, mid, body in received)
        await channel.exchange_delete(exchange_name)
    finally:
        await connection.close()
