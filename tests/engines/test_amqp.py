"""AMQP ingress against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

An aio-pika publisher sends to an exchange of the test's own; pushgate consumes its own
queue bound to it and publishes to the mapped channels; stomp.js and centrifuge-js
subscribers see the messages. The broker cuts pushgate's connection mid-stream and
nothing is lost or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import aio_pika
import aiohttp
import pytest

from tests.conftest import Server, start_server
from tests.e2e.test_centrifuge_js import js, publication  # noqa: F401
from tests.e2e.test_stompjs import stomp_message, stompjs  # noqa: F401

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBITMQCTL = shutil.which("rabbitmqctl")


@pytest.fixture
async def rabbit():
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:
        pytest.skip(f"no RabbitMQ at {AMQP_URL}: {exc}")
    yield connection
    await connection.close()


@pytest.fixture
async def amqp_setup(rabbit, server_config):
    """A server consuming queue pgtest-q-<id> bound to exchange pgtest-ex-<id>."""
    tag = uuid.uuid4().hex[:10]
    exchange, queue, name = f"pgtest-ex-{tag}", f"pgtest-q-{tag}", f"pgtest-node-{tag}"
    config = server_config(
        f"""
        [stomp]
        exchanges = ["{exchange}/board.* = board:{{1}}"]
        [amqp]
        enabled = true
        url = "{AMQP_URL}"
        exchange = "{exchange}"
        queue = "{queue}"
        bindings = ["board.*", "nowhere.*"]
        prefetch = 10
        reconnect_delay = "0.2s"
        """,
        server__name=name,
    )
    runner, hub, url = await start_server(config)
    session = aiohttp.ClientSession()
    server = Server(url, config, hub, session)
    await wait_for_consumer(rabbit, queue)
    channel = await rabbit.channel()
    ex = await channel.get_exchange(exchange)
    try:
        yield server, ex, queue, name
    finally:
        await session.close()
        await runner.cleanup()  # stops consuming: unacknowledged messages go back
    with_cleanup = await rabbit.channel()
    await with_cleanup.queue_delete(queue)
    await with_cleanup.exchange_delete(exchange)


async def wait_for_consumer(connection, queue: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            if declared.declaration_result.consumer_count:
                return
        except aio_pika.exceptions.AMQPError:
            pass  # not declared yet (and this channel is closed)
        finally:
            if not channel.is_closed:
                await channel.close()
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"pushgate did not start consuming {queue}")
        await asyncio.sleep(0.1)


def message(data: object, message_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(data).encode(),
        message_id=message_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def history(server, channel: str) -> list:
    reply = await server.api("history", {"channel": channel, "limit": 1000})
    return [p["data"] for p in reply["result"]["publications"]]


async def wait_history(server, channel: str, count: int, timeout: float = 15.0) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await history(server, channel)
        if len(got) >= count or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_amqp_messages_reach_stompjs_and_centrifuge_js(amqp_setup, stompjs, js):  # noqa: F811
    server, exchange, _, _ = amqp_setup
    stomp_client = await stompjs("stomp")
    cent = await js("centrifuge")
    url = server.url.replace("http://", "ws://") + "/ws"
    await stomp_client.stomp_connect(url, server.token("alice"))
    # the page keeps its RabbitMQ destination
    await stomp_client.stomp_subscribe(f"/exchange/{exchange.name}/board.7", "s")
    await cent.connect(server.ws_url, token=server.token("bob"))
    await cent.subscribe("board:7")

    sent = [{"n": n} for n in range(20)]
    for n, data in enumerate(sent):
        await exchange.publish(message(data, f"m-{n}"), routing_key="board.7")
    await stomp_client.wait(stomp_message(sent[-1]), timeout=10)
    await cent.wait(publication("board:7", sent[-1]), timeout=10)
    via_stomp = [json.loads(m["body"]) for m in stomp_client.messages("s")]
    via_cent = [p["data"] for p in cent.publications("board:7")]
    assert via_stomp == via_cent == sent
    assert stomp_client.messages("s")[0]["headers"]["destination"] == (
        f"/exchange/{exchange.name}/board.7"
    )


async def test_redelivered_message_id_is_published_once_and_bad_ones_are_dropped(amqp_setup):
    server, exchange, _, _ = amqp_setup
    await exchange.publish(message("first", "same-id"), routing_key="board.dup")
    await exchange.publish(message("again", "same-id"), routing_key="board.dup")
    # maps to no channel, then not text: both rejected without blocking what follows
    await exchange.publish(message("lost", "x1"), routing_key="nowhere.1")
    await exchange.publish(aio_pika.Message(b"\xff\xfe", message_id="x2"), routing_key="board.dup")
    await exchange.publish(
        aio_pika.Message(b"plain text", message_id="t1", content_type="text/plain"),
        routing_key="board.dup",
    )
    got = await wait_history(server, "board:dup", 2)
    assert got == ["first", "plain text"]


@pytest.mark.skipif(RABBITMQCTL is None, reason="needs rabbitmqctl")
async def test_connection_cut_mid_stream_loses_nothing(amqp_setup, rabbit):
    server, exchange, queue, name = amqp_setup
    total = 300

    async def publish_all() -> None:
        for n in range(total):
            await exchange.publish(message(n, f"cut-{n}"), routing_key="board.cut")
            if n % 20 == 0:
                await asyncio.sleep(0.01)

    publisher = asyncio.create_task(publish_all())
    await wait_history(server, "board:cut", 30)
    await close_connection(name)  # pushgate's connection, from the broker side
    await publisher
    got = await wait_history(server, "board:cut", total, timeout=30)
    assert got == list(range(total))  # all there, in order, none twice
    # and the consumer is back
    await wait_for_consumer(rabbit, queue)


async def close_connection(connection_name: str) -> None:
    listing = await run(RABBITMQCTL, "-q", "-s", "list_connections", "pid", "client_properties")
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","pushgate {connection_name}"}}' in line
    ]
    assert pids, f"no connection named {connection_name}: {listing[:500]}"
    for pid in pids:
        await run(RABBITMQCTL, "close_connection", pid, "pushgate test: connection cut")


async def run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()
