"""The redis engine alone, against the real Redis: a RedisEngine started with a handler
that records what it is called with; no HTTP, no hub."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from pushgate.config import EngineConfig
from pushgate.engine.base import (
    ClientInfo,
    Publication,
    PublishOptions,
    StreamPosition,
    UnrecoverablePosition,
)
from pushgate.engine.redis_engine import RedisEngine
from pushgate.engine.tracking import Connection, UserStatus
from tests.centrifuge_helpers import RedisProcess, wait_until
from tests.conftest import REDIS_URL


class Recording:
    """An EngineHandler that records every call; tests await what they expect."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.pubs: list[tuple[str, Publication, str]] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.leaves: list[tuple[str, ClientInfo]] = []
        self.controls: list[dict] = []
        self.resyncs = 0
        self.users: list[str] = []
        self.presence: list[tuple[str, ClientInfo]] = []
        #: (channel, info, presence, joined) and (Connection, attention) it holds
        self.members: list[tuple[str, ClientInfo, bool, bool]] = []
        self.connections: list[tuple[Connection, str]] = []
        self.statuses: list[tuple[str, UserStatus]] = []
        self.lost = 0
        self._changed = asyncio.Event()

    def _note(self) -> None:
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def of(self, channel: str) -> list[Publication]:
        return [pub for ch, pub, _ in self.pubs if ch == channel]

    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        self.pubs.append((channel, pub, epoch))
        self._note()

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))
        self._note()

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))
        self._note()

    def handle_control(self, message: dict) -> None:
        self.controls.append(message)
        self._note()

    def handle_resync(self) -> None:
        self.resyncs += 1
        self._note()

    def handle_status(self, user: str, status: UserStatus) -> None:
        self.statuses.append((user, status))
        self._note()

    async def handle_node_lost(self) -> None:
        self.lost += 1
        self._note()

    def node_snapshot(
        self, presence: bool = True, users: bool = True, members: bool = False
    ) -> dict:
        info = {"uid": self.node_id, "name": self.node_id, "num_clients": len(self.users)}
        entries = list(self.presence) if presence else []
        snapshot = {"info": info, "users": list(self.users) if users else [], "presence": entries}
        if members:
            snapshot["members"] = list(self.members)
            snapshot["connections"] = list(self.connections)
        return snapshot


Started = tuple[RedisEngine, Recording]


@pytest.fixture
async def engines(redis_prefix: str) -> AsyncIterator[Callable[..., asyncio.Future]]:
    """``await engines(node_id, **engine_config)`` → a started (RedisEngine, Recording)."""
    started: list[RedisEngine] = []

    async def make(node_id: str = "node-a", **options: object) -> Started:
        options = {
            "type": "redis",
            "redis_url": [REDIS_URL],
            "redis_prefix": redis_prefix,
            "node_heartbeat": 0.2,
            "node_ttl": 1.0,
            **options,
        }
        engine = RedisEngine(EngineConfig(**options))
        handler = Recording(node_id)
        await engine.start(handler, node_id)
        started.append(engine)
        return engine, handler

    yield make
    for engine in started:
        await engine.close()


@pytest.fixture
async def local_redis(redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def pub(data: object) -> Publication:
    return Publication(repr(data).encode(), time=int(time.time() * 1000))


async def publish(engine: RedisEngine, channel: str, data: object, **kwargs) -> StreamPosition:
    kwargs.setdefault("history_size", 100)
    kwargs.setdefault("history_ttl", 60)
    return await engine.publish(channel, pub(data), PublishOptions(**kwargs))


# --- broker -------------------------------------------------------------------------


async def test_concurrent_publishes_get_atomic_increasing_offsets(engines):
    engine, handler = await engines()
    await engine.subscribe("c")
    positions = await asyncio.gather(
        *(publish(engine, "c", n, history_size=500) for n in range(200))
    )
    assert sorted(p.offset for p in positions) == list(range(1, 201))
    assert len({p.epoch for p in positions}) == 1
    await handler.wait(lambda: len(handler.of("c")) >= 200)
    delivered = handler.of("c")
    assert [p.offset for p in delivered] == list(range(1, 201))  # once each, in order
    assert {epoch for _, _, epoch in handler.pubs} == {positions[0].epoch}
    # each offset carries the data of the publish call that was given it
    by_offset = {p.offset: n for n, p in enumerate(positions)}
    assert [p.data for p in delivered] == [repr(by_offset[p.offset]).encode() for p in delivered]
    history = await engine.history("c")
    assert [p.offset for p in history.publications] == list(range(1, 201))
    assert history.position == StreamPosition(200, positions[0].epoch)


async def test_publication_keeps_its_info_tags_and_time(engines):
    engine, handler = await engines()
    await engine.subscribe("c")
    info = ClientInfo("client-1", "alice", b'{"name":"Alice"}', b'{"role":"x"}')
    sent = Publication(b'{"k":[1,2]}', info=info, tags={"t": "v"}, time=1234)
    await engine.publish("c", sent, PublishOptions(10, 60))
    await handler.wait(lambda: handler.of("c"))
    [got] = handler.of("c")
    [stored] = (await engine.history("c")).publications
    for p in (got, stored):
        assert (p.data, p.info, p.tags, p.time, p.offset) == (sent.data, info, {"t": "v"}, 1234, 1)


async def test_history_is_trimmed_to_its_size(engines):
    engine, _ = await engines()
    for n in range(10):
        top = await publish(engine, "c", n, history_size=4)
    history = await engine.history("c")
    assert [p.offset for p in history.publications] == [7, 8, 9, 10]
    assert history.position == top
    # from a position still held: what follows it; from one trimmed away: unrecoverable
    held = await engine.history("c", since=StreamPosition(6, top.epoch))
    assert [p.offset for p in held.publications] == [7, 8, 9, 10]
    with pytest.raises(UnrecoverablePosition):
        await engine.history("c", since=StreamPosition(5, top.epoch))


async def test_history_reverse_limit_since(engines):
    engine, _ = await engines()
    for n in range(1, 11):
        top = await publish(engine, "c", n)
    epoch = top.epoch

    async def offsets(**kwargs) -> list[int]:
        return [p.offset for p in (await engine.history("c", **kwargs)).publications]

    assert await offsets(limit=3) == [1, 2, 3]
    assert await offsets(limit=3, reverse=True) == [10, 9, 8]
    assert await offsets(reverse=True) == list(range(10, 0, -1))
    assert await offsets(since=StreamPosition(7, epoch)) == [8, 9, 10]
    assert await offsets(since=StreamPosition(4, epoch), limit=2) == [5, 6]
    assert await offsets(since=StreamPosition(10, epoch)) == []
    # an empty epoch stands for the current stream (Centrifugo's rule)
    assert await offsets(since=StreamPosition(7, "")) == [8, 9, 10]
    only_position = await engine.history("c", limit=0)
    assert only_position.publications == [] and only_position.position == top
    for wrong in (
        StreamPosition(3, "another-epoch"),
        StreamPosition(11, epoch),
        StreamPosition(11, ""),
    ):
        with pytest.raises(UnrecoverablePosition):
            await engine.history("c", since=wrong)


async def test_history_ttl_expires_the_stream_but_keeps_its_position(
    engines, local_redis, redis_prefix
):
    engine, _ = await engines()
    for n in range(3):
        top = await publish(engine, "c", n, history_ttl=1)
    stream = f"{redis_prefix}:stream:c"
    assert await local_redis.exists(stream)

    async def stream_gone() -> bool:
        return not await local_redis.exists(stream)

    waited = await wait_until(stream_gone, 3, "the stream expires after history_ttl")
    assert waited <= 1.5
    # the meta (offset, epoch) outlives the stream: a client that missed publications is
    # told it cannot recover; one that saw everything has nothing to recover
    assert await local_redis.exists(f"{redis_prefix}:meta:c")
    with pytest.raises(UnrecoverablePosition):
        await engine.history("c", since=StreamPosition(2, top.epoch))
    empty = await engine.history("c", since=StreamPosition(3, top.epoch))
    assert empty.publications == [] and empty.position == top
    # and the stream carries on from where it was, in the same epoch
    assert await publish(engine, "c", "next") == StreamPosition(4, top.epoch)


async def test_lost_meta_means_a_new_epoch(engines, local_redis, redis_prefix):
    engine, _ = await engines(history_meta_ttl=1)
    top = await publish(engine, "c", 1, history_ttl=1)

    async def meta_gone() -> bool:
        return not await local_redis.exists(f"{redis_prefix}:meta:c")

    await wait_until(meta_gone, 3, "the meta expires after history_meta_ttl")
    with pytest.raises(UnrecoverablePosition):
        await engine.history("c", since=top)
    after = await publish(engine, "c", 2)
    assert after.offset == 1 and after.epoch != top.epoch


async def test_idempotency_key_publishes_once(engines):
    engine, handler = await engines()
    await engine.subscribe("c")
    first = await publish(engine, "c", "a", idempotency_key="k1")
    again = await publish(engine, "c", "a-again", idempotency_key="k1")
    other = await publish(engine, "c", "b", idempotency_key="k2")
    assert first == again == StreamPosition(1, first.epoch)
    assert other.offset == 2
    await handler.wait(lambda: len(handler.of("c")) >= 2)
    assert [p.data for p in handler.of("c")] == [b"'a'", b"'b'"]
    assert [p.offset for p in (await engine.history("c")).publications] == [1, 2]


async def test_without_history_offsets_are_zero_and_nothing_is_kept(
    engines, local_redis, redis_prefix
):
    engine, handler = await engines()
    await engine.subscribe("c")
    position = await publish(engine, "c", 1, history_size=0, history_ttl=0)
    assert position == StreamPosition(0, "")
    await handler.wait(lambda: handler.of("c"))
    assert handler.of("c")[0].offset == 0
    assert not await local_redis.exists(f"{redis_prefix}:stream:c")


async def test_publication_to_a_channel_nobody_subscribes_reaches_no_node(
    engines, local_redis, redis_prefix
):
    engine_a, handler_a = await engines("node-a")
    engine_b, handler_b = await engines("node-b")
    await engine_a.subscribe("wanted")
    numsub = dict(
        await local_redis.pubsub_numsub(f"{redis_prefix}:ch:wanted", f"{redis_prefix}:ch:nobody")
    )
    assert numsub == {
        f"{redis_prefix}:ch:wanted".encode(): 1,
        f"{redis_prefix}:ch:nobody".encode(): 0,
    }
    await publish(engine_b, "nobody", "lost on purpose")
    await publish(engine_b, "wanted", "marker")
    # PUB/SUB keeps order on a connection: once the marker is in, "nobody" would be too
    await handler_a.wait(lambda: handler_a.of("wanted"))
    assert [ch for ch, _, _ in handler_a.pubs] == ["wanted"]
    assert handler_b.pubs == []
    # it still went to history, for whoever subscribes later
    assert len((await engine_a.history("nobody")).publications) == 1
    await engine_a.unsubscribe("wanted")
    [(_, count)] = await local_redis.pubsub_numsub(f"{redis_prefix}:ch:wanted")
    assert count == 0


async def test_join_leave_and_control_reach_every_subscribed_node(engines):
    engine_a, handler_a = await engines("node-a")
    engine_b, handler_b = await engines("node-b")
    await engine_b.subscribe("c")
    info = ClientInfo("client-1", "alice", b'{"n":1}', None)
    await engine_a.publish_join("c", info)
    await engine_a.publish_leave("c", info)
    await engine_a.publish_control({"op": "x", "user": "alice"})
    await handler_b.wait(lambda: handler_b.joins and handler_b.leaves and handler_b.controls)
    assert handler_b.joins == [("c", info)] and handler_b.leaves == [("c", info)]
    await handler_a.wait(lambda: handler_a.controls)  # the sender too
    assert handler_a.joins == [] and handler_b.controls == [{"op": "x", "user": "alice"}]


# --- presence -----------------------------------------------------------------------


async def test_presence_add_remove_and_stats(engines):
    engine, _ = await engines()
    alice = ClientInfo("c1", "alice", b'{"name":"A"}', b'{"chan":1}')
    alice2 = ClientInfo("c2", "alice")
    bob = ClientInfo("c3", "bob")
    for info in (alice, alice2, bob):
        await engine.add_presence("room", info, 30)
    assert await engine.presence("room") == {"c1": alice, "c2": alice2, "c3": bob}
    assert await engine.presence_stats("room") == (3, 2)
    await engine.remove_presence("room", "c2")
    await engine.remove_presence("room", "c3")
    assert await engine.presence("room") == {"c1": alice}
    assert await engine.presence_stats("room") == (1, 1)
    assert await engine.presence("empty") == {}


async def test_presence_entry_not_refreshed_lapses(engines):
    engine, _ = await engines()
    await engine.add_presence("room", ClientInfo("stays", "alice"), 30)
    added = time.monotonic()
    await engine.add_presence("room", ClientInfo("lapses", "bob"), 1)
    assert set(await engine.presence("room")) == {"stays", "lapses"}

    async def lapsed() -> bool:
        return set(await engine.presence("room")) == {"stays"}

    await wait_until(lapsed, 3, "an unrefreshed presence entry lapses after presence_ttl")
    assert time.monotonic() - added >= 0.9  # not before its time


async def test_heartbeat_refreshes_presence_of_a_live_node(engines):
    engine, handler = await engines(presence_ttl=1.0, node_heartbeat=0.1)
    info = ClientInfo("c1", "alice")
    handler.presence = [("room", info)]
    await engine.add_presence("room", info, 1.0)
    started = time.monotonic()

    async def still_there_after_2s() -> bool:
        assert await engine.presence("room") == {"c1": info}, "a live node's entry lapsed"
        return time.monotonic() - started > 2.0

    await wait_until(still_there_after_2s, 4, "presence is refreshed by the heartbeat")


async def test_users_and_presence_come_back_after_redis_lost_them(engines, local_redis):
    """Heartbeats do not rewrite every connection and membership; but when this node's
    registry entry is gone (Redis restarted empty), the next beat writes them all."""
    engine, handler = await engines(presence_ttl=60.0, node_heartbeat=0.1)
    info = ClientInfo("c1", "alice")
    conn = Connection("c1", "alice", "websocket")
    handler.members = [("room", info, True, True)]
    handler.connections = [(conn, "active")]
    await engine.connection_opened(conn, "active")
    await engine.member_add("room", info, presence=True, ttl=60.0)
    keys = [k async for k in local_redis.scan_iter(match=f"{engine.prefix}:*")]
    await local_redis.delete(*keys)
    assert await engine.presence("room") == {}

    async def restored() -> bool:
        online = (await engine.user_status(["alice"]))["alice"][0]
        return online and await engine.presence("room") == {"c1": info}

    await wait_until(restored, 3, "the next heartbeat restores users and presence")
    # and the restored membership still ends with its leave (its join was announced)
    await engine.subscribe("room")
    assert await engine.member_remove("room", "c1", announce=True)
    await handler.wait(lambda: handler.leaves)


# --- users and nodes ----------------------------------------------------------------


async def test_thousands_of_users_leaving_at_once_are_all_offline(engines):
    """Every client of a node leaving in the same moment (a restart, a network cut on
    the client side): each offline mark reaches Redis (pipelined per loop tick, not
    queued for a pooled connection each), so none is left online."""
    engine, _ = await engines()
    conns = [Connection(f"c{i}", f"u{i}", "websocket") for i in range(3000)]
    users = [c.user for c in conns]
    await asyncio.gather(*(engine.connection_opened(c, "active") for c in conns))
    assert all(online for online, _ in (await engine.user_status(users[:50])).values())
    when = time.time()
    await asyncio.gather(*(engine.connection_closed(c, "gone") for c in conns))
    statuses = await engine.user_status(users)
    assert [u for u, (online, _) in statuses.items() if online] == []
    assert all(seen == pytest.approx(when, abs=1) for _, seen in statuses.values())


async def test_publications_issued_together_keep_each_channels_order(engines):
    engine, handler = await engines()
    channels = [f"ch{i}" for i in range(20)]
    for channel in channels:
        await engine.subscribe(channel)

    # 20 channels x 25 publications issued together, each channel's awaited in order
    async def publish_in_order(channel: str) -> list[int]:
        offsets = []
        for n in range(25):
            position = await engine.publish(channel, pub(n), PublishOptions(100, 60))
            offsets.append(position.offset)
        return offsets

    results = await asyncio.gather(*(publish_in_order(c) for c in channels))
    assert all(offsets == list(range(1, 26)) for offsets in results)
    history = await engine.history("ch7", since=None, limit=None)
    assert [p.data for p in history.publications] == [repr(n).encode() for n in range(25)]
    # and every node subscribed receives each channel's publications in offset order
    await handler.wait(lambda: len(handler.pubs) == 500)
    assert all([p.offset for p in handler.of(c)] == list(range(1, 26)) for c in channels)


def crash(engine: RedisEngine) -> None:
    """Stop an engine as SIGKILL would: no heartbeat, no PUB/SUB, no goodbye to Redis."""
    assert engine._heartbeat is not None
    engine._heartbeat.cancel()
    if engine._upkeep is not None:
        engine._upkeep.cancel()
    for shard in engine.shards:
        if shard.reader is not None:
            shard.reader.cancel()
    if engine.reaper._task is not None:
        engine.reaper._task.cancel()
    engine._handler = None


async def test_user_status_across_two_nodes_and_last_seen_after_a_node_dies(engines):
    engine_a, _ = await engines("node-a")
    engine_b, _ = await engines("node-b")
    assert await engine_a.user_status(["alice"]) == {"alice": (False, None)}
    on_a = Connection("a1", "alice", "websocket")
    on_b = Connection("b1", "alice", "sse")
    await engine_a.connection_opened(on_a, "active")
    await engine_b.connection_opened(on_b, "idle")
    assert (await engine_b.user_statuses(["alice"]))["alice"].status == "active"
    # alice leaves node A cleanly: still online through B, idle there
    await engine_a.connection_closed(on_a, "gone")
    status = (await engine_a.user_statuses(["alice"]))["alice"]
    assert status.online and status.status == "idle"
    # node B dies: node A removes its connection, alice goes offline, last seen when B
    # last beat (node_ttl 1 s, heartbeat 0.2 s)
    crash(engine_b)
    crashed = time.time()

    async def offline() -> bool:
        return not (await engine_a.user_status(["alice"]))["alice"][0]

    waited = await wait_until(offline, 3, "the user goes offline with the dead node")
    assert waited <= 1.0 + 0.5 + 0.3
    [(_, last_seen)] = (await engine_a.user_status(["alice"])).values()
    assert last_seen is not None and crashed - 0.2 - 0.1 <= last_seen <= crashed + 0.1


async def test_last_seen_after_a_clean_disconnect(engines):
    engine, _ = await engines()
    conn = Connection("c1", "bob", "websocket")
    await engine.connection_opened(conn, "active")
    when = time.time()
    await engine.connection_closed(conn, "gone")
    assert (await engine.user_status(["bob"]))["bob"] == (False, pytest.approx(when, abs=0.1))


async def test_nodes_lists_live_nodes_and_drops_a_dead_one(engines):
    engine_a, handler_a = await engines("node-a")
    engine_b, _ = await engines("node-b")
    this = handler_a.node_snapshot()["info"]
    assert [n["uid"] for n in await engine_a.nodes(this)] == ["node-a", "node-b"]
    crash(engine_b)

    async def dropped() -> bool:
        return [n["uid"] for n in await engine_a.nodes(this)] == ["node-a"]

    waited = await wait_until(dropped, 3, "a node that stops heartbeating drops out")
    assert waited <= 1.0 + 0.2 + 0.3


# --- sharding -----------------------------------------------------------------------


@pytest.fixture
async def second_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    directory = tmp_path / "redis2"
    directory.mkdir()
    server = RedisProcess(directory)
    await server.start()
    yield server
    server.kill()


async def test_a_shard_with_nothing_subscribed_keeps_its_pubsub_connection(engines, second_redis):
    """The second shard has no channel at first: its PUB/SUB reader must stay connected
    (not end its listen loop, reconnect and report a resync each time), and a subscribe
    arriving later is confirmed."""
    engine, handler = await engines("node-a", redis_url=[REDIS_URL, second_redis.url])
    idle = engine.shards[1]
    await asyncio.wait_for(idle.connected.wait(), 5)
    first = idle.pubsub
    # a stretch of several reader cycles: nothing may happen in it
    await asyncio.sleep(2.5)
    assert idle.pubsub is first and handler.resyncs == 0
    channel = next(c for c in (f"ch{n}" for n in range(64)) if engine.shard(c) is idle)
    await engine.subscribe(channel)
    await publish(engine, channel, 1)
    await handler.wait(lambda: len(handler.of(channel)) == 1)


async def test_channels_are_sharded_over_two_redis_servers(
    engines, second_redis, local_redis, redis_prefix
):
    urls = [REDIS_URL, second_redis.url]
    engine_a, handler_a = await engines("node-a", redis_url=urls)
    engine_b, _ = await engines("node-b", redis_url=urls)
    channels = [f"ch{n}" for n in range(16)]
    # the hash is stable: both nodes, and this test, agree where each channel lives
    expected = {ch: zlib.crc32(ch.encode()) % 2 for ch in channels}
    assert {ch: engine_b.shards.index(engine_b.shard(ch)) for ch in channels} == expected
    assert set(expected.values()) == {0, 1}
    for ch in channels:
        await engine_a.subscribe(ch)
    for n in range(3):
        for ch in channels:
            await publish(engine_b, ch, n)
    await handler_a.wait(lambda: len(handler_a.pubs) >= 3 * len(channels))
    for ch in channels:
        assert [p.offset for p in handler_a.of(ch)] == [1, 2, 3]
        assert [p.offset for p in (await engine_a.history(ch)).publications] == [1, 2, 3]
    second = second_redis.client()
    try:
        on_first = {
            key.decode().rsplit(":", 1)[1]
            async for key in local_redis.scan_iter(match=f"{redis_prefix}:stream:*")
        }
        on_second = {
            key.decode().rsplit(":", 1)[1]
            async for key in second.scan_iter(match=f"{redis_prefix}:stream:*")
        }
        [*numsub] = await second.pubsub_numsub(*(f"{redis_prefix}:ch:{ch}" for ch in channels))
    finally:
        await second.aclose()
    assert on_first == {ch for ch, shard in expected.items() if shard == 0}
    assert on_second == {ch for ch, shard in expected.items() if shard == 1}
    # node A listens on each server only for the channels that live there
    assert [count for _, count in numsub] == [expected[ch] for ch in channels]


async def test_a_killed_pubsub_connection_resubscribes_everything_before_the_resync(
    engines, local_redis
):
    """Redis drops the node's PUB/SUB connection: the node reconnects, resubscribes
    every channel (300, confirmed by Redis before the hub is told) and tells the hub to
    check what it missed; whatever is published from then on reaches the node."""
    engine, handler = await engines()
    channels = [f"rs{n}" for n in range(300)]
    for channel in channels:
        await engine.subscribe(channel)
    shard = engine.shards[0]
    lost = shard.pubsub
    assert lost is not None and lost.transport is not None
    port = lost.transport.get_extra_info("sockname")[1]
    assert await local_redis.client_kill(f"127.0.0.1:{port}")
    await handler.wait(lambda: handler.resyncs == 1, timeout=10)
    assert shard.pubsub is not None and shard.pubsub is not lost
    # the moment the hub hears of the resync, every channel is live again
    for channel in channels:
        await publish(engine, channel, "after")
    await handler.wait(lambda: all(handler.of(c) for c in channels), timeout=10)
    numsub = await local_redis.pubsub_numsub(*(engine._pubsub_channel(c) for c in channels))
    assert all(count == 1 for _, count in numsub)


# --- no ghosts: a dead node's memberships and connections -----------------------------


async def test_a_dead_node_is_reaped_once_on_every_shard_and_cannot_come_back(
    engines, second_redis
):
    """Node C dies holding members of channels on both shards and users on both shards;
    nodes A and B both look for dead nodes: each leave and each offline happens once.
    When C "comes back" (its heartbeat resumes), it is told it was found dead, and
    nothing it held reappears."""
    urls = [REDIS_URL, second_redis.url]
    engine_a, handler_a = await engines("node-a", redis_url=urls)
    engine_b, handler_b = await engines("node-b", redis_url=urls)
    engine_c, handler_c = await engines("node-c", redis_url=urls)
    channels = [f"room{n}" for n in range(6)]  # on both shards (crc32 % 2)
    users = [f"user{n}" for n in range(6)]
    assert {engine_c.shards.index(engine_c.shard(x)) for x in channels} == {0, 1}
    assert {engine_c.shards.index(engine_c.shard(x)) for x in users} == {0, 1}
    for channel in channels:
        await engine_a.subscribe(channel)
    for n, (channel, user) in enumerate(zip(channels, users, strict=True)):
        info = ClientInfo(f"c{n}", user)
        await engine_c.connection_opened(Connection(f"c{n}", user, "websocket"), "active")
        await engine_c.member_add(channel, info, presence=True, ttl=60)
        await engine_c.member_joined(channel, info)
    await handler_a.wait(lambda: len(handler_a.joins) == 6)
    crash(engine_c)
    await handler_a.wait(lambda: len(handler_a.leaves) == 6, timeout=4)
    assert sorted(info.client for _, info in handler_a.leaves) == [f"c{n}" for n in range(6)]
    for channel in channels:
        assert await engine_a.presence(channel) == {}
    statuses = await engine_b.user_statuses(users)
    assert all(s.status == "offline" for s in statuses.values()), statuses

    async def reaping_done() -> bool:  # the reaper lists C once it removed everything
        return bool(engine_a.reaper.reaped + engine_b.reaper.reaped)

    await wait_until(reaping_done, 5, "a node to finish removing what C held")
    reaped = engine_a.reaper.reaped + engine_b.reaper.reaped
    assert reaped == [engine_c.incarnation]  # one node did it
    announced = [u for u, s in handler_a.statuses + handler_b.statuses if s.status == "offline"]
    assert sorted(announced) == users  # each offline told once

    # C comes back: found dead, it drops what it had (nothing is announced again)
    engine_c._handler = handler_c
    old = engine_c.incarnation
    assert not await engine_c.member_remove(channels[0], "c0", announce=True)
    await engine_c._beat()
    await handler_c.wait(lambda: handler_c.lost == 1)
    await engine_c._losing
    assert engine_c.incarnation != old
    with pytest.raises(Exception, match="found dead"):
        # a straggler of the old life cannot write a membership again
        engine_c.incarnation, saved = old, engine_c.incarnation
        try:
            await engine_c.member_add(channels[0], ClientInfo("c0", "user0"), presence=True, ttl=60)
        finally:
            engine_c.incarnation = saved
    await asyncio.sleep(0.3)
    assert len(handler_a.leaves) == 6
    assert await engine_a.presence(channels[0]) == {}


async def test_a_heartbeat_does_not_wait_behind_a_flood_of_commands(engines):
    """Every client of a node leaving at once queues tens of thousands of commands on
    the node's command connection; its heartbeat travels on its own, so it still comes
    in time (a beat behind them came after node_ttl, and the other nodes declared the
    node dead: seen with 250,000 clients leaving c1m's 15 workers)."""
    engine, _handler = await engines(node_heartbeat=60.0, node_ttl=120.0)
    shard = engine.shards[0]
    flood = [shard.batch.run(("PING",)) for _ in range(100_000)]
    await asyncio.sleep(0)  # the flood is written
    await asyncio.wait_for(engine._beat(), 10)
    assert not flood[-1].done(), "the beat waited for the whole flood"
    replies = await asyncio.wait_for(asyncio.gather(*flood), 60)
    assert set(replies) == {b"PONG"}


async def idle_upkeep(engine: RedisEngine) -> None:
    """Until the upkeep of the engine's first beat (at start) is done."""
    if engine._upkeep is not None:
        await asyncio.wait_for(engine._upkeep, 5)


async def test_a_slow_upkeep_does_not_hold_back_the_heartbeat(engines):
    """What a beat finds to do besides announcing the node (removals Redis did not take,
    presence to refresh) runs beside it, one run at a time: tens of thousands of
    removals said again took longer than node_ttl, and the node was declared dead."""
    engine, _handler = await engines(node_heartbeat=60.0, node_ttl=120.0)
    await idle_upkeep(engine)
    release = asyncio.Event()
    said: list[str] = []

    async def slow_removal() -> None:
        await release.wait()
        said.append("c1")

    engine._unsaid[("conn", "c1")] = slow_removal
    await asyncio.wait_for(engine._beat(), 5)
    await asyncio.wait_for(engine._beat(), 5)  # the first upkeep still runs: not a second
    assert said == [] and ("conn", "c1") in engine._unsaid
    release.set()
    assert engine._upkeep is not None
    await asyncio.wait_for(engine._upkeep, 5)
    assert said == ["c1"] and not engine._unsaid


async def test_removals_said_again_together_keep_only_those_redis_refused(engines):
    engine, _handler = await engines(node_heartbeat=60.0, node_ttl=120.0)
    await idle_upkeep(engine)
    said: list[int] = []

    def removal(n: int):
        async def say() -> None:
            if n % 3 == 0:
                raise RedisConnectionError("still out of reach")
            said.append(n)

        return say

    for n in range(2500):
        engine._unsaid[("conn", f"c{n}")] = removal(n)
    await engine._said_again()
    # said together, a thousand at a time; refusals stay for the next beat, which
    # also tries the rest (Redis out of reach: no point in going on now)
    assert sorted(said) == [n for n in range(1000) if n % 3]
    left = sorted(int(client[1:]) for _, client in engine._unsaid)
    assert left == [n for n in range(1000) if n % 3 == 0] + list(range(1000, 2500))


async def test_a_redis_stall_longer_than_node_ttl_does_not_make_nodes_reap_each_other(
    engines, redis_prefix
):
    """Redis stood still longer than node_ttl (a failover, a slow command, a machine
    short of cores): when it answers again, every node's last beat is older than
    node_ttl. Most of the cluster silent at once is a stall, not most of it dead: no
    node declares the others dead (which would close every client of the cluster), and
    each beats again."""
    started = [await engines(f"node-{n}") for n in "abc"]
    control = aioredis.Redis.from_url(REDIS_URL)
    try:
        before = [engine.reaper.checks for engine, _ in started]
        # the stall under test: Redis takes no command for 2.5 s (node_ttl is 1 s), then
        # every command queued meanwhile, beats and dead-node checks alike
        await control.execute_command("CLIENT", "PAUSE", 2500, "ALL")

        async def checked_since() -> bool:
            pairs = zip(started, before, strict=True)
            return all(engine.reaper.checks >= n + 3 for (engine, _), n in pairs)

        await wait_until(checked_since, 10, "three checks for dead nodes by each node after it")
    finally:
        await control.aclose()
    assert [engine.reaper.reaped for engine, _ in started] == [[], [], []]
    assert [handler.lost for _, handler in started] == [0, 0, 0]


async def test_a_late_heartbeat_is_logged_before_the_node_is_declared_dead(engines, caplog):
    """An operator sees a node drifting toward node_ttl: a beat that Redis took more
    than half of node_ttl after the one before says so, with its round trip."""
    await engines("node-a", node_heartbeat=0.1, node_ttl=2.0)
    control = aioredis.Redis.from_url(REDIS_URL)
    try:
        await control.execute_command("CLIENT", "PAUSE", 1500, "ALL")

        async def warned() -> bool:
            return any("heartbeat late" in r.getMessage() for r in caplog.records)

        await wait_until(warned, 10, "a warning about the late heartbeat")
    finally:
        await control.aclose()
    message = next(r.getMessage() for r in caplog.records if "heartbeat late" in r.getMessage())
    since = float(message.split("heartbeat late: ")[1].split(" s")[0])
    assert 1.0 < since < 5.0, message  # the pause and a beat interval, give or take
    assert "node_ttl 2 s" in message


async def alive_scores(engine: RedisEngine) -> dict[str, float]:
    first = engine.shards[0]
    pairs = await first.client.zrange(first.key("alive"), 0, -1, withscores=True)
    return {name.decode(): score for name, score in pairs}


async def redis_clock(engine: RedisEngine) -> float:
    seconds, micros = await engine.shards[0].client.time()
    return seconds + micros / 1e6


async def test_every_node_silent_at_once_is_a_stall_not_deaths(engines):
    """Every node's beats late at once (the machine short of cores while all clients
    leave, as at the end of c1m's 500k run): nobody is declared dead within the grace,
    and once the beats come again the cluster is whole."""
    started = [await engines(f"node-{n}") for n in "abc"]
    engine_a = started[0][0]
    for engine, _ in started:
        assert engine._heartbeat is not None
        engine._heartbeat.cancel()  # the stall under test: no beat from any node

    async def all_silent() -> bool:
        now = await redis_clock(engine_a)
        return all(score < now for score in (await alive_scores(engine_a)).values())

    await wait_until(all_silent, 5, "every node's last beat older than node_ttl")
    before = [engine.reaper.checks for engine, _ in started]

    async def checked_twice() -> bool:
        pairs = zip(started, before, strict=True)
        return all(engine.reaper.checks >= n + 2 for (engine, _), n in pairs)

    await wait_until(checked_twice, 5, "two checks for dead nodes by each node")
    assert [engine.reaper.reaped for engine, _ in started] == [[], [], []]
    for engine, _ in started:
        engine._heartbeat = asyncio.create_task(engine._heartbeat_forever())

    async def all_beating() -> bool:
        now = await redis_clock(engine_a)
        scores = await alive_scores(engine_a)
        return len(scores) == 3 and all(score > now for score in scores.values())

    await wait_until(all_beating, 5, "every node beating again")
    assert [engine.reaper.reaped for engine, _ in started] == [[], [], []]
    assert [handler.lost for _, handler in started] == [0, 0, 0]


async def test_a_majority_really_dead_is_still_found_dead_after_the_grace(engines):
    started = [await engines(f"node-{n}") for n in "abc"]
    engine_c, _ = started[2]
    crash(started[0][0])
    crash(started[1][0])
    dead = {started[0][0].incarnation, started[1][0].incarnation}
    # node_ttl (1 s) and the grace for a silent majority (twice node_ttl) after the last beat

    async def both_reaped() -> bool:
        return set(engine_c.reaper.reaped) == dead

    took = await wait_until(both_reaped, 10, "the two dead nodes found dead")
    assert took >= 2.0, "found dead within the grace: a stall would have been taken for deaths"


async def unsubscribe_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_unsubscribe", {}).get("calls", 0))


async def test_channels_left_in_one_tick_are_unsubscribed_with_one_command(engines):
    """Every client of a node leaving at once leaves thousands of channels: one
    UNSUBSCRIBE for the tick's channels, not a command (and a socket write) each."""
    engine, _handler = await engines()
    channels = [f"left-{n}" for n in range(50)]
    for channel in channels:
        await engine.subscribe(channel)
    client = engine.shards[0].client
    before = await unsubscribe_calls(client)
    await asyncio.gather(*(engine.unsubscribe(channel) for channel in channels))
    names = [engine._pubsub_channel(channel) for channel in channels]

    async def all_left() -> bool:
        counts = await client.pubsub_numsub(*names)
        return all(count == 0 for _, count in counts)

    await wait_until(all_left, 5, "Redis to drop the 50 subscriptions")
    assert await unsubscribe_calls(client) - before == 1


async def test_a_channel_left_and_wanted_again_in_one_tick_stays_subscribed(engines):
    engine, handler = await engines()
    await engine.subscribe("again")
    await engine.unsubscribe("again")
    await engine.subscribe("again")  # before the tick's unsubscribes were written
    await engine.publish("again", Publication(data=b'"still here"'), PublishOptions())
    await handler.wait(lambda: len(handler.of("again")) == 1)
