"""The hub with a real MemoryEngine and recording sinks, no sockets: connect and
subscribe rules, delivery order and buffering, encode-once, recovery, presence and
join/leave, user status, server-side disconnects and the shared timer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

import pushgate.hub.hub as hub_module
import pushgate.hub.timers as timers_module
from pushgate.auth import TokenVerifier, mint_connection_token, mint_subscription_token
from pushgate.engine.base import ClientInfo, Publication, StreamPosition
from pushgate.engine.memory import MemoryEngine
from pushgate.hub.client import Client
from pushgate.hub.errors import Disconnect, DisconnectError, HubError
from pushgate.hub.hub import Hub
from pushgate.protocol.centrifugo.session import CentrifugoSession
from tests.conftest import SECRET, make_config

EXTRA = """
[[namespace]]
name = "room"
presence = true
join_leave = true
allow_subscribe_for_client = true
allow_presence_for_subscriber = true
"""


class Sink:
    """A ClientSink that records every call in order."""

    dialect = "test"

    def __init__(self, wants_pong: bool = True) -> None:
        self.wants_pong = wants_pong
        self.events: list[tuple] = []
        self.closed_with: list[Disconnect] = []

    def push_publication(self, channel: str, pub: Publication) -> None:
        self.events.append(("pub", channel, pub))

    def push_join(self, channel: str, info: ClientInfo, cache: dict) -> None:
        self.events.append(("join", channel, info))

    def push_leave(self, channel: str, info: ClientInfo, cache: dict) -> None:
        self.events.append(("leave", channel, info))

    def push_subscribe(self, channel: str, result) -> None:
        self.events.append(("subscribe", channel, result))

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        self.events.append(("unsubscribe", channel, code, reason))

    def push_message(self, data: bytes) -> None:
        self.events.append(("message", data))

    def push_refresh(self, expires: bool, ttl: int) -> None:
        self.events.append(("refresh", expires, ttl))

    def send_ping(self) -> None:
        self.events.append(("ping",))

    def close(self, disconnect: Disconnect) -> None:
        self.closed_with.append(disconnect)

    # views
    def pubs(self, channel: str | None = None) -> list[Publication]:
        return [e[2] for e in self.events if e[0] == "pub" and channel in (None, e[1])]

    def offsets(self, channel: str | None = None) -> list[int]:
        return [p.offset for p in self.pubs(channel)]

    def kinds(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


@pytest.fixture
async def make_hub(tmp_path: Path):
    hubs: list[Hub] = []

    async def make(extra: str = "", **overrides: object) -> Hub:
        config = make_config(tmp_path, EXTRA + extra, **overrides)
        hub = Hub(config, MemoryEngine(), TokenVerifier(config.token))
        # the engine only: the test drives the timer by calling tick() itself
        await hub.engine.start(hub, hub.node_id)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.shutdown()


@pytest.fixture
async def hub(make_hub) -> Hub:
    return await make_hub()


def token(user: str, ttl: float | None = 3600, **claims: object) -> str:
    return mint_connection_token(SECRET, user, ttl=ttl, **claims)


def sub_token(user: str, channel: str, ttl: float | None = 3600, **claims: object) -> str:
    return mint_subscription_token(SECRET, user, channel, ttl=ttl, **claims)


async def connect(hub: Hub, user: str = "alice", *, wants_pong: bool = True, **claims):
    sink = Sink(wants_pong)
    client = hub.new_client(sink, "test")
    await client.connect(token=token(user, **claims))
    client.activate_all()
    return client, sink


async def subscribe(client: Client, channel: str, **kwargs):
    sub, result = await client.subscribe(channel, **kwargs)
    client.activate(sub)
    return result


async def settle() -> None:
    """Let the hub's background tasks (join/leave announcements, unsubscribes) run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def publish(hub: Hub, channel: str, n: int) -> StreamPosition:
    return await hub.publish(channel, orjson.dumps({"n": n}))


# --- connect --------------------------------------------------------------------------
async def test_connect_registers_the_client_in_its_user_session(hub):
    sink = Sink()
    client = hub.new_client(sink, "test")
    result = await client.connect(token=token("alice"), name="js")
    assert client.connected and client.user == "alice"
    assert hub.clients[client.id] is client
    assert hub.users["alice"].clients == {client.id: client}
    assert result.client == client.id
    assert result.expires is True and 3590 <= result.ttl <= 3600
    assert result.ping == 25 and result.pong is True
    assert (await hub.engine.user_status(["alice"]))["alice"][0] is True

    second, _ = await connect(hub, "alice")
    assert set(hub.users["alice"].clients) == {client.id, second.id}
    assert hub.user_connection_count("alice") == 2


async def test_connect_with_conn_info_shows_in_client_info(hub):
    client, _ = await connect(hub, "alice", info={"name": "Alice"})
    assert orjson.loads(client.conn_info) == {"name": "Alice"}


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-jwt",
        mint_connection_token("another-secret-0123456789abcdef0123456789", "alice"),
        mint_subscription_token(SECRET, "alice", "board:1"),
    ],
    ids=["garbage", "wrong-secret", "subscription-token"],
)
async def test_connect_with_invalid_token_is_disconnect_3500(hub, bad):
    client = hub.new_client(Sink(), "test")
    with pytest.raises(DisconnectError) as info:
        await client.connect(token=bad)
    assert info.value.disconnect.code == 3500
    assert info.value.disconnect.reconnect is False
    assert not client.connected
    assert hub.clients == {} and hub.users == {}


async def test_connect_with_expired_token_is_error_109(hub):
    client = hub.new_client(Sink(), "test")
    with pytest.raises(HubError) as info:
        await client.connect(token=token("alice", ttl=-10))
    assert info.value.code == 109
    assert hub.clients == {}


async def test_connect_without_token_when_anonymous_is_off_is_error_101(hub):
    client = hub.new_client(Sink(), "test")
    with pytest.raises(HubError) as info:
        await client.connect()
    assert info.value.code == 101
    assert hub.clients == {}


async def test_anonymous_connect_when_allowed(make_hub):
    hub = await make_hub(client__anonymous=True)
    client = hub.new_client(Sink(), "test")
    await client.connect()
    assert client.connected and client.user == ""
    assert client.id in hub.clients
    assert hub.users == {}
    # anonymous may not subscribe where only authenticated clients may
    with pytest.raises(HubError) as info:
        await client.subscribe("board:1")
    assert info.value.code == 103


async def test_connecting_twice_is_a_bad_request(hub):
    client, _ = await connect(hub)
    with pytest.raises(DisconnectError) as info:
        await client.connect(token=token("alice"))
    assert info.value.disconnect.code == 3501


async def test_server_side_channels_from_the_token(hub):
    await publish(hub, "notifications:alice", 0)
    client, sink = await connect(hub, "alice", channels=["notifications:alice"])
    assert set(client.subs) == {"notifications:alice"}
    assert client.subs["notifications:alice"].active
    await publish(hub, "notifications:alice", 1)
    assert sink.offsets("notifications:alice") == [2]


# --- subscribe rules ------------------------------------------------------------------
async def expect_error(coro, code: int) -> HubError:
    with pytest.raises(HubError) as info:
        await coro
    assert info.value.code == code, info.value
    return info.value


async def test_subscribe_allowed_for_client_and_denied_otherwise(hub):
    client, _ = await connect(hub)
    result = await subscribe(client, "board:1")
    assert result.recoverable is True  # board forces recovery
    assert "board:1" in client.subs and client in hub.channels["board:1"]
    # private: no allow_subscribe_for_client
    await expect_error(client.subscribe("private:1"), 103)
    assert "private:1" not in client.subs and "private:1" not in hub.channels


async def test_user_limited_channels(hub):
    alice, _ = await connect(hub, "alice")
    bob, _ = await connect(hub, "bob")
    await subscribe(alice, "private:#alice")
    await expect_error(bob.subscribe("private:#alice"), 103)
    # even where any client may subscribe, the user part decides
    await expect_error(bob.subscribe("board:#alice"), 103)
    await subscribe(alice, "board:#alice,bob")
    await subscribe(bob, "board:#alice,bob")
    assert set(hub.channels["board:#alice,bob"]) == {alice, bob}


async def test_subscription_token(hub):
    alice, _ = await connect(hub, "alice")
    result = await subscribe(
        alice, "private:42", token=sub_token("alice", "private:42", info={"role": "owner"})
    )
    assert result.expires is True and 3590 <= result.ttl <= 3600
    assert orjson.loads(alice.subs["private:42"].chan_info) == {"role": "owner"}


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: sub_token("bob", "private:42"), 103),
        (lambda: sub_token("alice", "private:43"), 103),
        (lambda: sub_token("alice", "private:42", ttl=-10), 109),
        (lambda: mint_subscription_token("x" * 40, "alice", "private:42"), 103),
    ],
    ids=["other-user", "other-channel", "expired", "bad-signature"],
)
async def test_subscription_token_refused(hub, make_token, code):
    alice, _ = await connect(hub, "alice")
    await expect_error(alice.subscribe("private:42", token=make_token()), code)
    assert alice.subs == {}
    assert "private:42" not in hub.channels


async def test_unknown_namespace_is_102(hub):
    alice, _ = await connect(hub)
    await expect_error(alice.subscribe("nope:1"), 102)


async def test_channel_name_too_long_is_106(hub):
    alice, _ = await connect(hub)
    await expect_error(alice.subscribe("board:" + "x" * 250), 106)
    await subscribe(alice, "board:" + "x" * 249)  # exactly 255 is fine


async def test_max_subscriptions_is_106(make_hub):
    hub = await make_hub(client__max_subscriptions=2)
    alice, _ = await connect(hub)
    await subscribe(alice, "board:1")
    await subscribe(alice, "board:2")
    error = await expect_error(alice.subscribe("board:3"), 106)
    assert "subscriptions" in error.message
    await alice.unsubscribe("board:1")
    await subscribe(alice, "board:3")


async def test_already_subscribed_is_105(hub):
    alice, _ = await connect(hub)
    await subscribe(alice, "board:1")
    await expect_error(alice.subscribe("board:1"), 105)
    assert len(hub.channels["board:1"]) == 1


# --- delivery -------------------------------------------------------------------------
async def test_publications_reach_active_subscribers_in_order(hub):
    alice, alice_sink = await connect(hub, "alice")
    bob, bob_sink = await connect(hub, "bob")
    _, carol_sink = await connect(hub, "carol")
    await subscribe(alice, "board:1")
    await subscribe(bob, "board:1")
    await subscribe(bob, "board:2")
    for n in range(5):
        await publish(hub, "board:1", n)
    await publish(hub, "board:2", 99)
    assert alice_sink.offsets() == [1, 2, 3, 4, 5]
    assert [orjson.loads(p.data)["n"] for p in alice_sink.pubs()] == [0, 1, 2, 3, 4]
    assert bob_sink.offsets("board:1") == [1, 2, 3, 4, 5]
    assert [orjson.loads(p.data) for p in bob_sink.pubs("board:2")] == [{"n": 99}]
    assert carol_sink.events == []
    # after unsubscribing nothing more arrives
    await bob.unsubscribe("board:1")
    await publish(hub, "board:1", 5)
    assert bob_sink.offsets("board:1") == [1, 2, 3, 4, 5]
    assert alice_sink.offsets() == [1, 2, 3, 4, 5, 6]


async def test_channel_without_history_still_delivers(hub):
    alice, sink = await connect(hub)
    await subscribe(alice, "nohistory:1")
    position = await hub.publish("nohistory:1", b'"hi"')
    assert position == StreamPosition(0, "")
    assert [(p.offset, p.data) for p in sink.pubs()] == [(0, b'"hi"')]


async def test_client_publish_carries_its_info(hub):
    alice, sink = await connect(hub, "alice", info={"name": "Alice"})
    await subscribe(alice, "board:1")
    await alice.publish("board:1", b'{"moved":7}')
    (pub,) = sink.pubs()
    assert pub.info.user == "alice" and pub.info.client == alice.id
    assert orjson.loads(pub.info.conn_info) == {"name": "Alice"}
    # not subscribed: board allows publishing for subscribers only
    bob, _ = await connect(hub, "bob")
    await expect_error(bob.publish("board:1", b"1"), 103)


async def test_publications_before_activate_are_buffered_then_flushed_without_duplicates(hub):
    for n in range(3):
        position = await publish(hub, "board:1", n)
    epoch = position.epoch
    alice, sink = await connect(hub)
    sub, result = await alice.subscribe("board:1", recover=True, offset=1, epoch=epoch)
    assert [p.offset for p in result.publications] == [2, 3]
    assert result.offset == 3
    # meanwhile: offset 3 arrives late (already in the reply) and 4, 5 are new
    late = result.publications[-1]
    hub.handle_publication("board:1", late, epoch)
    await publish(hub, "board:1", 3)
    await publish(hub, "board:1", 4)
    assert sink.pubs() == []  # nothing before the reply is written
    alice.activate(sub)
    assert sink.offsets() == [4, 5]
    await publish(hub, "board:1", 5)
    assert sink.offsets() == [4, 5, 6]


async def test_server_side_subscription_buffers_until_activate_all(hub):
    sink = Sink()
    client = hub.new_client(sink, "test")
    await client.connect(token=token("alice", channels=["notifications:alice"]))
    await publish(hub, "notifications:alice", 0)
    assert sink.pubs() == []
    client.activate_all()
    assert sink.offsets() == [1]


# --- encode once ----------------------------------------------------------------------
class FakeWriter:
    """A FrameWriter that records what is written; frames like the named framing."""

    def __init__(self, framing: str = "ws") -> None:
        self.framing = framing
        self.bidirectional = True
        self.close_carries_code = True
        self.pings = True
        self.event_ids = False
        self.written: list[bytes] = []
        self.close_args: tuple[int, str] | None = None

    def frame(self, payload: bytes) -> bytes:
        if self.framing == "sse":
            return b"data: " + payload + b"\n\n"
        return bytes(payload)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, code: int, reason: str) -> None:
        self.close_args = (code, reason)

    @property
    def closed(self) -> bool:
        return self.close_args is not None


async def centrifugo_session(hub: Hub, user: str, framing: str = "ws"):
    writer = FakeWriter(framing)
    session = CentrifugoSession(hub, writer, "test")
    frame = orjson.dumps({"id": 1, "connect": {"token": token(user)}}) + b"\n"
    frame += orjson.dumps({"id": 2, "subscribe": {"channel": "board:1"}})
    await session.handle_frame(frame)
    replies = [orjson.loads(w.removeprefix(b"data: ")) for w in writer.written]
    assert [r["id"] for r in replies] == [1, 2], replies
    assert "error" not in replies[1]
    writer.written.clear()
    return session, writer


async def test_broadcast_is_encoded_once_per_framing(hub):
    ws = [await centrifugo_session(hub, f"user{i}") for i in range(4)]
    sse = [await centrifugo_session(hub, f"sse{i}", "sse") for i in range(2)]
    await hub.publish("board:1", b'{"card":7}')
    (pub,) = (await hub.engine.history("board:1")).publications
    ws_frames = [w.written for _, w in ws]
    sse_frames = [w.written for _, w in sse]
    assert all(len(f) == 1 for f in ws_frames + sse_frames)
    assert all(f[0] is ws_frames[0][0] for f in ws_frames)  # the very same bytes object
    assert all(f[0] is sse_frames[0][0] for f in sse_frames)
    assert len(pub.cache) == 2  # one encoding per framing, not per subscriber
    assert orjson.loads(ws_frames[0][0]) == {
        "push": {"channel": "board:1", "pub": {"data": {"card": 7}, "offset": 1}}
    }
    assert sse_frames[0][0] == b"data: " + ws_frames[0][0] + b"\n\n"


async def test_session_join_push_is_shared_by_recipients(make_hub):
    hub = await make_hub(
        """
[[namespace]]
name = "lobby"
join_leave = true
force_push_join_leave = true
allow_subscribe_for_client = true
"""
    )
    writers = []
    for i in range(3):
        writer = FakeWriter()
        session = CentrifugoSession(hub, writer, "test")
        await session.handle_frame(orjson.dumps({"id": 1, "connect": {"token": token(f"u{i}")}}))
        await session.handle_frame(orjson.dumps({"id": 2, "subscribe": {"channel": "lobby:1"}}))
        await settle()
        writers.append(writer)
    # the third join reached the other subscribers as one shared bytes object
    u2_joins = [
        data
        for writer in writers
        for data in writer.written
        if orjson.loads(data).get("push", {}).get("join", {}).get("info", {}).get("user") == "u2"
    ]
    assert len(u2_joins) >= 2
    assert all(data is u2_joins[0] for data in u2_joins)


# --- recovery -------------------------------------------------------------------------
async def test_recovery_from_an_older_offset(hub):
    for n in range(4):
        position = await publish(hub, "board:1", n)
    alice, sink = await connect(hub)
    result = await subscribe(alice, "board:1", recover=True, offset=1, epoch=position.epoch)
    assert result.recovered is True and result.was_recovering is True
    assert [p.offset for p in result.publications] == [2, 3, 4]
    assert [orjson.loads(p.data)["n"] for p in result.publications] == [1, 2, 3]
    assert (result.offset, result.epoch) == (4, position.epoch)
    assert sink.pubs() == []  # recovered publications come in the reply, not twice
    await publish(hub, "board:1", 4)
    assert sink.offsets() == [5]


async def test_recovery_from_another_epoch_is_not_recovered(hub):
    for n in range(3):
        position = await publish(hub, "board:1", n)
    alice, _ = await connect(hub)
    result = await subscribe(alice, "board:1", recover=True, offset=1, epoch="stale-epoch")
    assert result.recovered is False and result.was_recovering is True
    assert result.publications == []
    assert (result.offset, result.epoch) == (3, position.epoch)


async def test_recovery_of_more_than_one_reply_carries_is_not_recovered(make_hub):
    hub = await make_hub(client__history_max_publications=2)
    for n in range(5):
        position = await publish(hub, "board:1", n)
    alice, _ = await connect(hub)
    result = await subscribe(alice, "board:1", recover=True, offset=1, epoch=position.epoch)
    assert result.recovered is False
    assert result.publications == []
    assert result.offset == 5


async def test_subscribe_without_recover_gets_the_position(hub):
    for n in range(2):
        position = await publish(hub, "board:1", n)
    alice, _ = await connect(hub)
    result = await subscribe(alice, "board:1")
    assert (result.recovered, result.was_recovering, result.publications) == (False, False, [])
    assert (result.offset, result.epoch) == (2, position.epoch)


async def test_history_command_rules(hub):
    for n in range(3):
        await publish(hub, "board:1", n)
    alice, _ = await connect(hub)
    await expect_error(alice.history("board:1", limit=10), 103)  # not subscribed
    await subscribe(alice, "board:1")
    history = await alice.history("board:1", limit=10)
    assert [p.offset for p in history.publications] == [1, 2, 3]
    assert (await alice.history("board:1")).publications == []  # no limit: position only
    await expect_error(alice.history("board:1", limit=10, since=StreamPosition(1, "other")), 112)
    await subscribe(alice, "nohistory:1")
    await expect_error(alice.history("nohistory:1", limit=1), 108)


# --- presence, join and leave ---------------------------------------------------------
async def test_presence_of_subscribers(hub):
    alice, _ = await connect(hub, "alice", info={"name": "Alice"})
    alice2, _ = await connect(hub, "alice")
    bob, _ = await connect(hub, "bob")
    for client in (alice, alice2, bob):
        await subscribe(client, "board:1")
    present = await hub.presence("board:1")
    assert set(present) == {alice.id, alice2.id, bob.id}
    assert present[alice.id].user == "alice"
    assert orjson.loads(present[alice.id].conn_info) == {"name": "Alice"}
    assert await hub.presence_stats("board:1") == (3, 2)
    assert await bob.presence_stats("board:1") == (3, 2)
    await bob.unsubscribe("board:1")
    assert await hub.presence_stats("board:1") == (2, 1)
    await expect_error(bob.presence("board:1"), 103)  # no longer a subscriber
    await subscribe(alice, "nohistory:1")
    await expect_error(alice.presence("nohistory:1"), 108)


async def test_join_and_leave_go_only_to_subscriptions_that_asked(hub):
    alice, alice_sink = await connect(hub, "alice")
    bob, bob_sink = await connect(hub, "bob")
    await subscribe(alice, "room:1", join_leave=True)
    await subscribe(bob, "room:1")  # did not ask for join/leave
    await settle()
    carol, _carol_sink = await connect(hub, "carol")
    await subscribe(carol, "room:1", join_leave=True)
    await settle()
    # (whether a subscriber hears its own join is not asserted here)
    joins = [(e[1], e[2].user) for e in alice_sink.kinds("join") if e[2].user != "alice"]
    assert joins == [("room:1", "bob"), ("room:1", "carol")]
    assert bob_sink.kinds("join") == []
    assert [e[2].client for e in alice_sink.kinds("join")][-1] == carol.id
    await carol.unsubscribe("room:1")
    await settle()
    assert [(e[1], e[2].client) for e in alice_sink.kinds("leave")] == [("room:1", carol.id)]
    assert bob_sink.kinds("leave") == []


async def test_join_leave_needs_the_namespace_option(hub):
    alice, sink = await connect(hub, "alice")
    await subscribe(alice, "nohistory:1", join_leave=True)
    bob, _ = await connect(hub, "bob")
    await subscribe(bob, "nohistory:1", join_leave=True)
    await settle()
    assert sink.kinds("join") == []


async def test_closing_the_last_connection_removes_presence_and_marks_offline(hub):
    alice, alice_sink = await connect(hub, "alice")
    alice2, _ = await connect(hub, "alice")
    bob, bob_sink = await connect(hub, "bob")
    await subscribe(alice, "room:1", join_leave=True)
    await subscribe(bob, "room:1", join_leave=True)
    await settle()
    bob_sink.events.clear()

    await alice2.closed_by_transport()  # alice still has a connection
    assert (await hub.engine.user_status(["alice"]))["alice"][0] is True
    assert hub.users["alice"].clients == {alice.id: alice}

    before = time.time()
    await alice.closed_by_transport()
    await settle()
    assert alice.closed
    assert alice.id not in hub.clients and "alice" not in hub.users
    assert set(await hub.presence("room:1")) == {bob.id}
    assert [(e[1], e[2].client, e[2].user) for e in bob_sink.kinds("leave")] == [
        ("room:1", alice.id, "alice")
    ]
    online, last_seen = (await hub.engine.user_status(["alice"]))["alice"]
    assert online is False
    assert before <= last_seen <= time.time()
    # the transport may report twice; nothing happens the second time
    await alice.closed_by_transport()
    await settle()
    assert len(bob_sink.kinds("leave")) == 1
    # and the channel forgets it
    await publish(hub, "room:1", 0)
    assert alice_sink.pubs() == []


async def test_last_subscriber_leaving_forgets_the_channel(hub):
    alice, _ = await connect(hub)
    await subscribe(alice, "board:1")
    await alice.closed_by_transport()
    assert "board:1" not in hub.channels
    assert hub.channel_counts() == {}


# --- server API control ---------------------------------------------------------------
async def test_disconnect_user_closes_all_their_connections_with_the_code(hub):
    _alice, alice_sink = await connect(hub, "alice")
    _alice2, alice2_sink = await connect(hub, "alice")
    _bob, bob_sink = await connect(hub, "bob")
    await hub.disconnect_user("alice", disconnect=Disconnect(4001, "go away"))
    assert alice_sink.closed_with == [Disconnect(4001, "go away")]
    assert alice2_sink.closed_with == [Disconnect(4001, "go away")]
    assert bob_sink.closed_with == []
    assert hub.disconnects[4001] == 2


async def test_disconnect_user_default_code_and_whitelist(hub):
    _alice, alice_sink = await connect(hub, "alice")
    alice2, alice2_sink = await connect(hub, "alice")
    await hub.disconnect_user("alice", whitelist=[alice2.id])
    assert [d.code for d in alice_sink.closed_with] == [3503]
    assert alice2_sink.closed_with == []


async def test_disconnect_of_a_closed_client_does_nothing(hub):
    alice, sink = await connect(hub, "alice")
    await alice.closed_by_transport()
    alice.disconnect(Disconnect(4000, "x"))
    assert sink.closed_with == []


# --- the shared timer -----------------------------------------------------------------
def advance(hub: Hub, seconds: float) -> None:
    """Run the hub's timer for ``seconds`` of ticks."""
    for _ in range(round(seconds / timers_module.TICK)):
        hub.tick()


async def test_ping_after_ping_interval_ticks(hub):
    _, sink = await connect(hub)
    advance(hub, 25 - timers_module.TICK)
    assert sink.kinds("ping") == []
    hub.tick()  # 25 s = client.ping_interval
    assert sink.kinds("ping") == [("ping",)]
    advance(hub, 25)
    assert len(sink.kinds("ping")) == 2
    assert hub.ping_seconds == 25


async def test_pings_are_spread_over_the_interval(hub):
    sinks = []
    for n in range(50):
        sinks.append((await connect(hub, f"spread{n}"))[1])
        hub.tick()  # connections arrive over 5 s: they land on 50 different slots
    pinged_per_tick = []
    for _ in range(round(25 / timers_module.TICK)):
        before = sum(len(sink.kinds("ping")) for sink in sinks)
        hub.tick()
        pinged_per_tick.append(sum(len(sink.kinds("ping")) for sink in sinks) - before)
    assert sum(pinged_per_tick) == 50
    assert max(pinged_per_tick) == 1


async def test_no_pong_within_pong_timeout_closes_with_3012(hub):
    _client, sink = await connect(hub)
    advance(hub, 25)
    assert sink.kinds("ping")
    advance(hub, 8 - timers_module.TICK)
    assert sink.closed_with == []
    hub.tick()  # 8 s = client.pong_timeout
    assert [d.code for d in sink.closed_with] == [3012]


async def test_a_pong_in_time_keeps_the_connection(hub):
    client, sink = await connect(hub)
    advance(hub, 30)
    client.pong()
    for _ in range(round(60 / timers_module.TICK)):
        hub.tick()
        if sink.kinds("ping") and client.awaiting_pong:
            client.pong()
    assert sink.closed_with == []
    assert len(sink.kinds("ping")) == 3


class AnsweringSink(Sink):
    """A client that answers each ping ``after`` seconds later (a client on a busy
    machine, within the pong timeout)."""

    def __init__(self, after: float) -> None:
        super().__init__()
        self.after = after
        self.client: Client | None = None
        self.answered = asyncio.Queue[None]()

    def send_ping(self) -> None:
        super().send_ping()
        asyncio.get_running_loop().call_later(self.after, self._answer)

    def _answer(self) -> None:
        if self.client is not None and not self.client.closed:
            self.client.pong()
            self.answered.put_nowait(None)

    def close(self, disconnect: Disconnect) -> None:
        super().close(disconnect)
        self.answered.put_nowait(None)  # no more answers: the test looks why


async def test_a_stalled_loop_does_not_blame_clients_that_answer_in_time(make_hub):
    """The node's loop held up longer than the pong timeout (a burst of work, a machine
    short of cores): the ticker goes on from there rather than running the missed ticks
    in a burst, which pinged and then checked the deadline moments later, closing with
    3012 clients that answer within the pong timeout."""
    hub = await make_hub(client__ping_interval="1s", client__pong_timeout="0.5s")
    sink = AnsweringSink(after=0.2)
    client = hub.new_client(sink, "test")
    sink.client = client
    await client.connect(token=token("alice"))
    client.activate_all()
    hub.timers.start()
    await asyncio.wait_for(sink.answered.get(), 5)
    time.sleep(2.5)  # the stall under test: the event loop blocked for 2.5 s
    for _ in range(3):
        await asyncio.wait_for(sink.answered.get(), 5)
        if sink.closed_with:
            break
    assert sink.closed_with == []
    assert not client.closed


async def test_no_pong_expected_from_a_one_way_transport(hub):
    _, sink = await connect(hub, wants_pong=False)
    advance(hub, 60)
    assert len(sink.kinds("ping")) == 2
    assert sink.closed_with == []


async def test_closed_client_gets_no_ping(hub):
    client, sink = await connect(hub)
    await client.closed_by_transport()
    advance(hub, 30)
    assert sink.events == []


@pytest.fixture
def clock(monkeypatch):
    """Stop time.time() where it is, then move it forward for the hub's expiry checks
    (a slow machine's elapsed time must not bring an expiry forward)."""
    start = time.time()
    offset = [0.0]
    monkeypatch.setattr(hub_module.time, "time", lambda: start + offset[0])
    return offset


async def test_expired_connection_is_closed_with_3005_on_tick(hub, clock):
    _alice, alice_sink = await connect(hub, "alice", ttl=60)
    _bob, bob_sink = await connect(hub, "bob", ttl=600)
    hub.tick()
    assert alice_sink.closed_with == []
    clock[0] = 61
    hub.tick()
    assert [d.code for d in alice_sink.closed_with] == [3005]
    assert bob_sink.closed_with == []


async def test_expire_at_in_the_past_is_closed_on_next_tick(hub):
    alice, sink = await connect(hub, "alice", ttl=3600, expire_at=int(time.time()) - 5)
    assert alice.expires_at < time.time()
    hub.tick()
    assert [d.code for d in sink.closed_with] == [3005]


async def test_refreshed_connection_is_not_expired(hub, clock):
    alice, sink = await connect(hub, "alice", ttl=60)
    await alice.refresh(token("alice", ttl=3600))
    clock[0] = 61
    hub.tick()
    assert sink.closed_with == []


async def test_expired_subscription_token_unsubscribes_on_tick(hub, clock):
    alice, sink = await connect(hub, "alice", ttl=None)
    await subscribe(alice, "private:1", token=sub_token("alice", "private:1", ttl=60))
    clock[0] = 61
    hub.tick()
    await settle()
    assert sink.kinds("unsubscribe") == [("unsubscribe", "private:1", 2501, "subscription expired")]
    assert "private:1" not in alice.subs


async def test_sub_refresh_then_expiry_unsubscribes(hub, clock):
    alice, sink = await connect(hub, "alice", ttl=None)
    await subscribe(alice, "private:1", token=sub_token("alice", "private:1", ttl=3600))
    expires, ttl = await alice.sub_refresh("private:1", sub_token("alice", "private:1", ttl=60))
    assert expires is True and 50 <= ttl <= 60
    clock[0] = 61
    hub.tick()
    await settle()
    assert sink.kinds("unsubscribe") == [("unsubscribe", "private:1", 2501, "subscription expired")]
    assert "private:1" not in alice.subs


async def test_closed_connections_leave_nothing_in_the_expiry_heap(hub, clock):
    """A token's expiry is scheduled for the token's lifetime (a day, often); connections
    that closed long before must not keep their entries until then (the soak's growth:
    ~240 bytes per churned connection). Live connections still expire on time."""
    alice, alice_sink = await connect(hub, "alice", ttl=60)
    await subscribe(alice, "private:alice", token=sub_token("alice", "private:alice", ttl=60))
    refreshed, refreshed_sink = await connect(hub, "refreshed", ttl=600)
    for ttl in range(20, 25):  # each refresh schedules again; the earlier entries are moot
        await refreshed.refresh(token("refreshed", ttl=ttl))
    churned = 3 * timers_module.EXPIRY_COMPACT_MIN
    for n in range(churned):  # each with a channel of its own, half with a token for it
        client, _ = await connect(hub, f"user-{n}", ttl=24 * 3600)
        if n % 2:
            channel = f"private:own-{n}"
            await subscribe(client, channel, token=sub_token(f"user-{n}", channel, ttl=3600))
        await client.closed_by_transport()
    assert len(hub.clients) == 2
    assert len(hub.timers.expiry) <= timers_module.EXPIRY_COMPACT_MIN, (
        f"{len(hub.timers.expiry)} expiry entries after {churned} connections closed"
    )
    clock[0] = 22
    hub.tick()
    assert refreshed_sink.closed_with == []
    clock[0] = 25
    hub.tick()
    assert [d.code for d in refreshed_sink.closed_with] == [3005]
    assert alice_sink.closed_with == []
    clock[0] = 61
    hub.tick()
    await settle()
    assert alice_sink.kinds("unsubscribe") == [
        ("unsubscribe", "private:alice", 2501, "subscription expired")
    ]
    assert [d.code for d in alice_sink.closed_with] == [3005]


# --- gaps -----------------------------------------------------------------------------
async def test_offset_gap_sends_unsubscribe_2500_and_drops_the_subscription(hub):
    alice, sink = await connect(hub)
    await subscribe(alice, "board:1")
    for n in range(2):
        position = await publish(hub, "board:1", n)
    hub.handle_publication("board:1", Publication(b'"jump"', offset=5), position.epoch)
    await settle()
    assert sink.offsets() == [1, 2]  # the publication after the gap is not delivered
    assert sink.kinds("unsubscribe") == [("unsubscribe", "board:1", 2500, "insufficient state")]
    assert "board:1" not in alice.subs
    assert "board:1" not in hub.channels


async def test_consecutive_offsets_are_no_gap(hub):
    alice, sink = await connect(hub)
    await subscribe(alice, "board:1")
    position = await publish(hub, "board:1", 0)
    hub.handle_publication("board:1", Publication(b"2", offset=2), position.epoch)
    assert sink.offsets() == [1, 2]
    assert sink.kinds("unsubscribe") == []


async def test_connect_recovers_server_side_subscriptions_from_the_subs_map(hub):
    for n in range(3):
        position = await publish(hub, "notifications:alice", n)
    sink = Sink()
    client = hub.new_client(sink, "test")
    result = await client.connect(
        token=token("alice", channels=["notifications:alice"]),
        subs={"notifications:alice": {"recover": True, "offset": 1, "epoch": position.epoch}},
    )
    sub_result = result.subs["notifications:alice"]
    assert sub_result.recovered is True
    assert [p.offset for p in sub_result.publications] == [2, 3]
    assert (sub_result.offset, sub_result.epoch) == (3, position.epoch)


async def test_a_subscriber_announced_gone_is_left_out_of_presence_refresh(hub):
    """XMPP's <presence type='unavailable'/> keeps the subscription but leaves presence:
    the engine heartbeat's refresh must not bring it back."""
    alice, _ = await connect(hub, "alice")
    await subscribe(alice, "board:p")
    sub = alice.subs["board:p"]
    assert [info.user for _, info in hub.node_snapshot()["presence"]] == ["alice"]
    await hub.announce_presence(sub, present=False)
    assert hub.node_snapshot()["presence"] == []
    assert (await hub.engine.presence("board:p")) == {}
    await hub.announce_presence(sub, present=True)
    assert [info.user for _, info in hub.node_snapshot()["presence"]] == ["alice"]


async def test_a_publication_already_covered_by_the_subscribe_reply_is_not_pushed(hub):
    """With a broker whose broadcast can arrive after the position was read (Redis), the
    subscribe reply may already cover a publication that is then delivered: skip it."""
    alice, sink = await connect(hub, "alice")
    for n in range(3):
        await publish(hub, "board:late", n)
    result = await subscribe(alice, "board:late")
    assert result.offset == 3
    late = Publication(orjson.dumps({"n": 2}), offset=3, epoch=result.epoch)
    hub.handle_publication("board:late", late, result.epoch)
    fresh = Publication(orjson.dumps({"n": 3}), offset=4, epoch=result.epoch)
    hub.handle_publication("board:late", fresh, result.epoch)
    assert sink.offsets() == [4]
