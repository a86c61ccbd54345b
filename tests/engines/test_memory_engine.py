"""The memory engine: stream offsets and epochs, history trimming and expiry, recovery
positions, presence, user status and idempotent publishing."""

from __future__ import annotations

import time

import pytest

import pushgate.engine.memory as memory_module
import pushgate.engine.memory_tracking as memory_tracking
from pushgate.engine.base import (
    ClientInfo,
    Publication,
    PublishOptions,
    StreamPosition,
    UnrecoverablePosition,
)
from pushgate.engine.memory import MemoryEngine
from pushgate.engine.tracking import Connection, UserStatus


class Recorder:
    """An EngineHandler that writes down what it is given."""

    def __init__(self) -> None:
        self.publications: list[tuple[str, Publication, str]] = []
        self.joins: list[tuple[str, ClientInfo]] = []
        self.leaves: list[tuple[str, ClientInfo]] = []
        self.controls: list[dict] = []
        self.statuses: list[tuple[str, UserStatus]] = []

    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        self.publications.append((channel, pub, epoch))

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        self.joins.append((channel, info))

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        self.leaves.append((channel, info))

    def handle_status(self, user: str, status: UserStatus) -> None:
        self.statuses.append((user, status))

    def handle_control(self, message: dict) -> None:
        self.controls.append(message)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine_and_handler():
    engine = MemoryEngine()
    handler = Recorder()
    await engine.start(handler, "node-1")
    yield engine, handler
    await engine.close()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(memory_module.time, "monotonic", clock)
    return clock


async def publish(engine, channel, n, *, size=100, ttl=600.0, **kw) -> StreamPosition:
    return await engine.publish(
        channel, Publication(f'{{"n":{n}}}'.encode()), PublishOptions(size, ttl, **kw)
    )


def offsets(pubs) -> list[int]:
    return [p.offset for p in pubs]


async def test_offsets_increase_from_one_per_channel_with_a_stable_epoch(engine_and_handler):
    engine, handler = engine_and_handler
    a = [await publish(engine, "a", i) for i in range(3)]
    b = [await publish(engine, "b", i) for i in range(2)]
    assert [p.offset for p in a] == [1, 2, 3]
    assert [p.offset for p in b] == [1, 2]
    assert len({p.epoch for p in a}) == 1 and a[0].epoch
    assert len({p.epoch for p in b}) == 1 and b[0].epoch != a[0].epoch
    # the handler gets each publication with its offset and the stream's epoch, in order
    assert [(ch, pub.offset, ep) for ch, pub, ep in handler.publications] == [
        ("a", 1, a[0].epoch),
        ("a", 2, a[0].epoch),
        ("a", 3, a[0].epoch),
        ("b", 1, b[0].epoch),
        ("b", 2, b[0].epoch),
    ]
    history = await engine.history("a")
    assert history.position == StreamPosition(3, a[0].epoch)
    assert [p.data for p in history.publications] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


async def test_history_size_drops_the_oldest(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(7):
        await publish(engine, "a", i, size=3)
    history = await engine.history("a")
    assert offsets(history.publications) == [5, 6, 7]
    assert history.position.offset == 7
    # recovering from before the retained window is not possible; from inside it is
    with pytest.raises(UnrecoverablePosition):
        await engine.history("a", since=StreamPosition(3, history.position.epoch))
    recovered = await engine.history("a", since=StreamPosition(4, history.position.epoch))
    assert offsets(recovered.publications) == [5, 6, 7]


async def test_history_ttl_expiry_keeps_offset_and_epoch(engine_and_handler, clock):
    engine, _ = engine_and_handler
    for i in range(3):
        await publish(engine, "a", i, ttl=5.0)
    before = await engine.history("a")
    assert offsets(before.publications) == [1, 2, 3]
    clock.now += 6.0
    after = await engine.history("a")
    assert after.publications == []
    assert after.position == before.position  # offset and epoch persist
    with pytest.raises(UnrecoverablePosition):
        await engine.history("a", since=StreamPosition(1, before.position.epoch))
    # a client that had seen everything is still in sync
    uptodate = await engine.history("a", since=StreamPosition(3, before.position.epoch))
    assert uptodate.publications == []
    # the stream continues where it was, in the same epoch
    position = await publish(engine, "a", 3, ttl=5.0)
    assert position == StreamPosition(4, before.position.epoch)
    recovered = await engine.history("a", since=StreamPosition(3, before.position.epoch))
    assert offsets(recovered.publications) == [4]


async def test_history_ttl_partially_expired(engine_and_handler, clock):
    engine, _ = engine_and_handler
    await publish(engine, "a", 0, ttl=5.0)
    clock.now += 3.0
    await publish(engine, "a", 1, ttl=5.0)
    await publish(engine, "a", 2, ttl=5.0)
    clock.now += 2.5  # the first is 5.5 s old, the others 2.5 s
    history = await engine.history("a")
    epoch = history.position.epoch
    # at least the last two are retained; recovery from offset 1 works either way
    assert offsets(history.publications)[-2:] == [2, 3]
    recovered = await engine.history("a", since=StreamPosition(1, epoch))
    assert offsets(recovered.publications) == [2, 3]


async def test_history_ttl_counts_from_the_last_publication(engine_and_handler, clock):
    engine, _ = engine_and_handler
    await publish(engine, "a", 0, ttl=5.0)
    clock.now += 4.0
    await publish(engine, "a", 1, ttl=5.0)
    clock.now += 2.0  # 6 s after the first publication, 2 s after the last
    history = await engine.history("a")
    assert offsets(history.publications) == [1, 2]


async def test_recovery_from_another_epoch_is_unrecoverable(engine_and_handler):
    engine, _ = engine_and_handler
    await publish(engine, "a", 0)
    with pytest.raises(UnrecoverablePosition):
        await engine.history("a", since=StreamPosition(0, "not-the-epoch"))

    # an empty epoch stands for the current stream (Centrifugo's rule)
    history = await engine.history("a", since=StreamPosition(0, ""))
    assert offsets(history.publications) == [1]
    with pytest.raises(UnrecoverablePosition):  # but not past its top
        await engine.history("a", since=StreamPosition(2, ""))


async def test_recovery_from_the_top_is_empty_and_fine(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(3):
        position = await publish(engine, "a", i)
    result = await engine.history("a", since=position)
    assert result.publications == []
    assert result.position == position


async def test_recovery_from_the_future_is_unrecoverable(engine_and_handler):
    engine, _ = engine_and_handler
    position = await publish(engine, "a", 0)
    with pytest.raises(UnrecoverablePosition):
        await engine.history("a", since=StreamPosition(position.offset + 1, position.epoch))


async def test_recovery_returns_only_what_came_after(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(5):
        position = await publish(engine, "a", i)
    result = await engine.history("a", since=StreamPosition(2, position.epoch))
    assert offsets(result.publications) == [3, 4, 5]
    result = await engine.history("a", since=StreamPosition(2, position.epoch), limit=2)
    assert offsets(result.publications) == [3, 4]
    assert result.position == position


async def test_new_channel_recovers_from_zero_only_with_its_epoch(engine_and_handler):
    engine, _ = engine_and_handler
    empty = await engine.history("fresh", limit=0)
    assert empty.position.offset == 0 and empty.position.epoch
    ok = await engine.history("fresh", since=StreamPosition(0, empty.position.epoch))
    assert ok.publications == []
    await publish(engine, "fresh", 0)
    again = await engine.history("fresh", since=StreamPosition(0, empty.position.epoch))
    assert offsets(again.publications) == [1]


async def test_reverse_with_limit_gives_the_newest_first(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(5):
        await publish(engine, "a", i)
    result = await engine.history("a", reverse=True, limit=2)
    assert offsets(result.publications) == [5, 4]
    result = await engine.history("a", reverse=True)
    assert offsets(result.publications) == [5, 4, 3, 2, 1]
    result = await engine.history("a", limit=2)
    assert offsets(result.publications) == [1, 2]


async def test_limit_zero_gives_the_position_only(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(3):
        position = await publish(engine, "a", i)
    result = await engine.history("a", limit=0)
    assert result.publications == []
    assert result.position == position


async def test_remove_history_keeps_the_position(engine_and_handler):
    engine, _ = engine_and_handler
    for i in range(3):
        position = await publish(engine, "a", i)
    await engine.remove_history("a")
    result = await engine.history("a")
    assert result.publications == []
    assert result.position == position
    with pytest.raises(UnrecoverablePosition):
        await engine.history("a", since=StreamPosition(1, position.epoch))
    assert await publish(engine, "a", 3) == StreamPosition(4, position.epoch)
    await engine.remove_history("never-published")  # no error


async def test_presence_add_remove_and_stats_count_unique_users(engine_and_handler):
    engine, _ = engine_and_handler
    await engine.add_presence("a", ClientInfo("c1", "alice", conn_info=b'{"n":1}'), 60)
    await engine.add_presence("a", ClientInfo("c2", "alice"), 60)
    await engine.add_presence("a", ClientInfo("c3", "bob"), 60)
    await engine.add_presence("b", ClientInfo("c4", "carol"), 60)
    present = await engine.presence("a")
    assert set(present) == {"c1", "c2", "c3"}
    assert present["c1"] == ClientInfo("c1", "alice", conn_info=b'{"n":1}')
    assert await engine.presence_stats("a") == (3, 2)
    await engine.add_presence("a", ClientInfo("c1", "alice"), 60)  # refresh: no duplicate
    assert await engine.presence_stats("a") == (3, 2)
    await engine.remove_presence("a", "c3")
    assert await engine.presence_stats("a") == (2, 1)
    await engine.remove_presence("a", "c1")
    await engine.remove_presence("a", "c2")
    assert await engine.presence("a") == {}
    assert await engine.presence_stats("a") == (0, 0)
    await engine.remove_presence("a", "c2")  # removing twice is harmless
    assert await engine.presence_stats("b") == (1, 1)


async def test_presence_result_is_a_copy(engine_and_handler):
    engine, _ = engine_and_handler
    await engine.add_presence("a", ClientInfo("c1", "alice"), 60)
    snapshot = await engine.presence("a")
    snapshot.clear()
    assert set(await engine.presence("a")) == {"c1"}


async def test_user_status_online_and_last_seen(engine_and_handler):
    engine, handler = engine_and_handler
    assert await engine.user_status(["alice"]) == {"alice": (False, None)}
    conn = Connection("c1", "alice", "websocket")
    await engine.connection_opened(conn, "active")
    status = await engine.user_status(["alice", "bob"])
    assert status["alice"][0] is True
    assert status["bob"] == (False, None)
    before = time.time()
    await engine.connection_closed(conn, "gone")
    online, seen = (await engine.user_status(["alice"]))["alice"]
    assert online is False and before <= seen <= time.time()
    await engine.connection_opened(Connection("c2", "alice", "sse"), "idle")
    assert (await engine.user_statuses(["alice"]))["alice"].status == "idle"
    assert [(user, s.status) for user, s in handler.statuses] == [
        ("alice", "active"),
        ("alice", "offline"),
        ("alice", "idle"),
    ]


async def test_idempotency_key_returns_the_same_position_without_a_second_delivery(
    engine_and_handler,
):
    engine, handler = engine_and_handler
    first = await publish(engine, "a", 0, idempotency_key="k1")
    second = await publish(engine, "a", 0, idempotency_key="k1")
    assert first == second == StreamPosition(1, first.epoch)
    assert len(handler.publications) == 1
    assert offsets((await engine.history("a")).publications) == [1]
    # another key, or the same key on another channel, is a new publication
    assert (await publish(engine, "a", 1, idempotency_key="k2")).offset == 2
    assert (await publish(engine, "b", 1, idempotency_key="k1")).offset == 1
    assert len(handler.publications) == 3


async def test_channel_without_history_gives_offset_zero_and_still_delivers(
    engine_and_handler,
):
    engine, handler = engine_and_handler
    pub = Publication(b'{"x":1}')
    position = await engine.publish("a", pub, PublishOptions(0, 0))
    assert position == StreamPosition(0, "")
    assert pub.offset == 0
    assert handler.publications == [("a", pub, "")]
    assert (await engine.history("a")).publications == []
    # size without ttl (or ttl without size) keeps no history either
    assert (await engine.publish("b", Publication(b"1"), PublishOptions(5, 0))).offset == 0
    assert (await engine.publish("b", Publication(b"1"), PublishOptions(0, 5))).offset == 0
    assert len(handler.publications) == 3


async def test_join_leave_and_control_reach_the_handler(engine_and_handler):
    engine, handler = engine_and_handler
    info = ClientInfo("c1", "alice")
    await engine.publish_join("a", info)
    await engine.publish_leave("a", info)
    await engine.publish_control({"op": "disconnect", "user": "alice"})
    assert handler.joins == [("a", info)]
    assert handler.leaves == [("a", info)]
    assert handler.controls == [{"op": "disconnect", "user": "alice"}]


async def test_closed_engine_delivers_nothing():
    engine = MemoryEngine()
    handler = Recorder()
    await engine.start(handler, "n")
    await engine.close()
    position = await publish(engine, "a", 0)
    assert position.offset == 1  # the stream still works
    assert handler.publications == []


async def test_idle_stream_meta_is_forgotten_after_meta_ttl_but_not_before():
    from pushgate.engine.memory import MemoryEngine as Engine

    engine = Engine(history_meta_ttl=100.0)
    pub = Publication(b"1")
    await engine.publish("c", pub, PublishOptions(10, 10))
    first = await engine.history("c", limit=0)
    import time as _time

    now = _time.monotonic()
    engine.sweep(now + 50)  # history expired (ttl 10), meta kept (10 + 100)
    assert (await engine.history("c", limit=0)).position == first.position
    engine.sweep(now + 200)
    again = await engine.history("c", limit=0)
    assert again.position.epoch != first.position.epoch and again.position.offset == 0


async def test_last_seen_is_forgotten_after_a_day_but_not_before(monkeypatch):
    """Every user ever seen used to stay in memory for the process's lifetime."""
    from pushgate.engine.memory import LAST_SEEN_KEEP
    from pushgate.engine.memory import MemoryEngine as Engine

    engine = Engine(history_meta_ttl=100.0)  # shorter than a day: a day it is
    wall = time.time()
    now = [wall - 100]
    monkeypatch.setattr(memory_tracking.time, "time", lambda: now[0])

    async def seen(user: str, at: float) -> None:
        now[0] = at
        conn = Connection(f"c-{user}-{at}", user, "websocket")
        await engine.connection_opened(conn, "active")
        await engine.connection_closed(conn, "gone")

    await seen("old", wall - 100)
    for n in range(1000):
        await seen(f"churned-{n}", wall - 50)
    await seen("recent", wall - 10)
    await seen("old", wall)  # back, and gone again: last seen now
    engine.sweep(1e9, wall + LAST_SEEN_KEEP - 60)
    assert len(engine._users) == 1002
    engine.sweep(1e9, wall + LAST_SEEN_KEEP - 20)
    assert set(engine._users) == {"old", "recent"}
    assert await engine.user_status(["old", "recent"]) == {
        "old": (False, wall),
        "recent": (False, wall - 10),
    }
    engine.sweep(time.monotonic(), wall + LAST_SEEN_KEEP)
    assert await engine.user_status(["old", "recent"]) == {
        "old": (False, None),
        "recent": (False, None),
    }


async def test_publish_gives_the_position_itself_with_no_future(engine_and_handler):
    engine, _ = engine_and_handler
    position = engine.publish("a", Publication(b"1"), PublishOptions(10, 10))
    assert isinstance(position, StreamPosition) and position.offset == 1
    assert await position is position  # awaited like a redis engine's future


async def test_the_measured_engine_is_an_engine_timing_publish():
    from pushgate.engine.base import Engine
    from pushgate.engine.measured import MeasuredEngine
    from pushgate.metrics import ENGINE_DURATION

    inner = MemoryEngine()
    engine = MeasuredEngine(inner)
    assert isinstance(engine, Engine) and engine.name == "memory"
    count = ENGINE_DURATION.labels("publish")._sum
    before = count.get()
    position = await engine.publish("m", Publication(b"1"), PublishOptions(5, 5))
    assert position.offset == 1 and count.get() > before
    assert (await engine.history("m")).position == position  # forwarded
    assert engine.position("m") == position  # the wrapped engine's own methods too
