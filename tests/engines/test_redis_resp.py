"""The redis engine's own RESP connection (engine/resp.py) and its automatic pipelining
(engine/redis_batch.py), against the real Redis and against a silent fake server."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushgate.engine import resp
from pushgate.engine.redis_batch import AutoPipeline
from pushgate.engine.resp import Address
from tests.conftest import REDIS_URL

SCRIPT = "return redis.call('incrby', KEYS[1], ARGV[1])"
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@pytest.fixture
async def admin(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def batch() -> AsyncIterator[AutoPipeline]:
    address = Address.from_url(REDIS_URL)

    async def connect() -> resp.RespConnection:
        return await resp.connect(address, scripts={SHA: SCRIPT.encode()})

    pipeline = AutoPipeline(connect)
    yield pipeline
    await pipeline.close()


def test_addresses_from_urls() -> None:
    assert Address.from_url("redis://:secret@10.0.0.5:6380/2") == Address(
        host="10.0.0.5", port=6380, password="secret", db=2
    )
    tls = Address.from_url("rediss://user:pw@cache.example/0")
    assert (tls.tls, tls.username, tls.password, tls.port) == (True, "user", "pw", 6379)
    context = tls.tls_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    unverified = Address.from_url("rediss://cache.example/0?ssl_cert_reqs=none").tls_context()
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    assert Address.from_url("redis://cache.example/0").tls_context() is None
    unix = Address.from_url("unix:///run/redis.sock?db=3")
    assert (unix.path, unix.db) == ("/run/redis.sock", 3)


async def test_thousands_of_commands_in_flight_get_their_own_replies_in_order(
    batch: AutoPipeline, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:counter"
    replies = await asyncio.gather(*(batch.run(("INCR", key)) for _ in range(3000)))
    assert replies == list(range(1, 3001))
    # several commands for one caller: the list of their replies
    assert await batch.run(("INCR", key), ("GET", key), ("EXISTS", key)) == [3001, b"3001", 1]


async def test_an_error_reply_fails_only_its_own_caller(
    batch: AutoPipeline, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:text"
    before = batch.run(("SET", key, "abc"))
    wrong = batch.run(("INCR", key))
    group = batch.run(("GET", key), ("INCR", key), ("STRLEN", key))
    after = batch.run(("GET", key))
    assert await before == b"OK"
    with pytest.raises(ResponseError, match="not an integer"):
        await wrong
    with pytest.raises(ResponseError, match="not an integer"):
        await group
    assert await after == b"abc"


async def test_scripts_survive_a_flushed_script_cache(
    batch: AutoPipeline, admin: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:scripted"
    assert await batch.run(("EVALSHA", SHA, 1, key, 5)) == 5
    await admin.script_flush()
    # NOSCRIPT is answered by sending the script itself, in order
    replies = await asyncio.gather(*(batch.run(("EVALSHA", SHA, 1, key, 1)) for _ in range(3)))
    assert replies == [6, 7, 8]


async def test_a_killed_connection_fails_what_was_in_flight_and_the_next_command_reconnects(
    batch: AutoPipeline, admin: aioredis.Redis, redis_prefix: str
) -> None:
    first_id = await batch.run(("CLIENT", "ID"))
    blocked = batch.run(("BLPOP", f"{redis_prefix}:never", 30))
    await asyncio.sleep(0)  # let this tick's write happen
    started = time.monotonic()
    assert await admin.client_kill_filter(_id=str(first_id)) == 1
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(blocked, 5)
    assert time.monotonic() - started < 5
    second_id = await batch.run(("CLIENT", "ID"))
    assert second_id != first_id
    assert await batch.run(("PING",)) == b"PONG"


async def test_a_server_that_stops_answering_times_out() -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        connection = await resp.connect(Address(port=port), command_timeout=0.4)
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="did not answer"):
            await asyncio.wait_for(connection.call("PING"), 5)
        assert time.monotonic() - started < 2
        await asyncio.wait_for(connection.closed, 2)
        assert not connection.is_open
    finally:
        for writer in silent:
            writer.close()
        server.close()


async def test_login_refused_is_a_clear_error() -> None:
    address = Address.from_url(REDIS_URL)
    wrong = Address(host=address.host, port=address.port, password="not-the-password")
    with pytest.raises(ResponseError, match=r"(?i)auth|password"):
        await resp.connect(wrong)


async def test_nothing_listening_is_a_connection_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(RedisConnectionError, match="connect failed"):
        await resp.connect(Address(port=port))


async def test_pubsub_messages_and_confirmations_reach_the_listener(
    admin: aioredis.Redis, redis_prefix: str
) -> None:
    connection = await resp.connect(Address.from_url(REDIS_URL))
    got: list = []
    arrived = asyncio.Event()

    def on_push(reply) -> None:
        got.append(reply)
        arrived.set()

    connection.listen(on_push)
    channel = f"{redis_prefix}:ps".encode()
    connection.write("SUBSCRIBE", channel)
    async with asyncio.timeout(5):
        while not got:
            arrived.clear()
            await arrived.wait()
    assert got[0] == [b"subscribe", channel, 1]
    for n in range(3):
        assert await admin.publish(channel, f"m{n}") == 1
    async with asyncio.timeout(5):
        while len(got) < 4:
            arrived.clear()
            await arrived.wait()
    assert got[1:] == [[b"message", channel, f"m{n}".encode()] for n in range(3)]
    connection.close()
    await asyncio.wait_for(connection.closed, 2)


async def test_a_slow_answer_after_a_quiet_spell_is_not_a_timeout() -> None:
    """The time limit runs from when a command is sent (or the last reply), not from
    the last reply before a quiet spell."""

    async def slow_pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"PING\r\n"):
            await asyncio.sleep(0.3)  # the server takes its time to answer
            writer.write(b"+PONG\r\n")

    server = await asyncio.start_server(slow_pong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        connection = await resp.connect(Address(port=port), command_timeout=0.5)
        assert await asyncio.wait_for(connection.call("PING"), 5) == b"PONG"
        await asyncio.sleep(1.0)  # quiet: longer than the time limit
        assert await asyncio.wait_for(connection.call("PING"), 5) == b"PONG"
        assert connection.is_open
        connection.close()
    finally:
        server.close()
