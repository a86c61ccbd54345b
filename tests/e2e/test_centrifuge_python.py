"""End to end with centrifuge-python, the Centrifugo SDK for Python, over real sockets."""

from __future__ import annotations

import asyncio
import time

from centrifuge import StreamPosition
from centrifuge.filter import Filter

from tests.centrifuge_helpers import Recorder, clients_fixture, subscribed  # noqa: F401


async def test_publications_arrive_in_order(server, clients):
    client, _ = clients(server)
    await client.connect()
    _sub, events = await subscribed(client, "board:1")
    for n in range(100):
        await server.publish("board:1", {"n": n})
    await events.wait_for("publication", lambda c: c.pub.data == {"n": 99})
    pubs = events.of("publication")
    assert [c.pub.data["n"] for c in pubs] == list(range(100))
    assert [c.pub.offset for c in pubs] == list(range(1, 101))


async def test_client_publish_presence_and_join_leave(server, clients):
    alice, _ = clients(server, "alice", token=server.token("alice", info={"name": "Alice"}))
    bob, _ = clients(server, "bob")
    await alice.connect()
    await bob.connect()
    alice_sub, alice_events = await subscribed(alice, "board:7")
    bob_sub, _ = await subscribed(bob, "board:7")
    join = await alice_events.wait_for("join", lambda c: c.info.user == "bob")
    assert join.info.client
    presence = await alice_sub.presence()
    assert sorted(info.user for info in presence.clients.values()) == ["alice", "bob"]
    assert {info.user: info.conn_info for info in presence.clients.values()}["alice"] == {
        "name": "Alice"
    }
    stats = await bob_sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (2, 2)
    await bob_sub.publish({"text": "from bob"})
    pub = await alice_events.wait_for("publication")
    assert pub.pub.data == {"text": "from bob"}
    assert pub.pub.info.user == "bob"
    await bob.disconnect()
    leave = await alice_events.wait_for("leave", lambda c: c.info.user == "bob")
    assert leave.info.client == join.info.client
    presence = await alice_sub.presence()
    assert [info.user for info in presence.clients.values()] == ["alice"]


async def test_permission_refusals(server, clients):
    client, _ = clients(server, "alice")
    await client.connect()
    for channel, code in (
        ("private:x", 103),
        ("notifications:#bob", 103),
        ("nope:1", 102),
        ("board:" + "x" * 300, 106),
    ):
        events = Recorder()
        sub = client.new_subscription(channel, events=events)
        await sub.subscribe()
        refused = await events.wait_for("unsubscribed")
        assert refused.code == code, (channel, refused)
        client.remove_subscription(sub)
    # the same channels with what they require
    await subscribed(client, "private:x", token=server.sub_token("alice", "private:x"))
    await subscribed(client, "notifications:#alice")


async def test_subscription_token_for_another_channel_or_user_is_refused(server, clients):
    client, _ = clients(server, "alice")
    await client.connect()
    for token in (server.sub_token("alice", "private:other"), server.sub_token("bob", "private:y")):
        events = Recorder()
        sub = client.new_subscription("private:y", events=events, token=token)
        await sub.subscribe()
        unsubscribed = await events.wait_for("unsubscribed")
        assert unsubscribed.code == 103
        client.remove_subscription(sub)


async def test_history_from_the_client(server, clients):
    client, _ = clients(server)
    await client.connect()
    sub, _ = await subscribed(client, "board:h")
    for n in range(10):
        await server.publish("board:h", n)
    last = await sub.history(limit=3, reverse=True)
    assert [p.data for p in last.publications] == [9, 8, 7]
    assert last.offset == 10


async def test_recovery_after_server_forced_reconnect(server, clients):
    client, client_events = clients(server, "alice")
    await client.connect()
    _sub, events = await subscribed(client, "board:rec")
    for n in range(1, 6):
        await server.publish("board:rec", n)
    await events.wait_for("publication", lambda c: c.pub.data == 5)
    reply = await server.api(
        "disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "test reconnect"}}
    )
    assert reply["result"] == {}
    for n in range(6, 16):
        await server.publish("board:rec", n)
    resubscribed = await events.wait_for("subscribed", lambda c: c.was_recovering)
    assert resubscribed.recovered is True
    await events.wait_for("publication", lambda c: c.pub.data == 15)
    assert [c.pub.data for c in events.of("publication")] == list(range(1, 16))
    disconnect = await client_events.wait_for("connecting", lambda c: c.code == 4000)
    assert disconnect.reason == "test reconnect"


async def test_recovery_is_refused_honestly_when_history_is_gone(server, clients):
    client, _ = clients(server, "alice")
    await client.connect()
    _sub, events = await subscribed(client, "board:gone")
    await server.publish("board:gone", 1)
    await events.wait_for("publication")
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    await server.publish("board:gone", 2)
    await server.api("history_remove", {"channel": "board:gone"})
    again = await events.wait_for("subscribed", lambda c: c.was_recovering)
    assert again.recovered is False
    assert [c.pub.data for c in events.of("publication")] == [1]


async def test_server_side_subscriptions_from_token(server, clients):
    client, events = clients(server, "alice", token=server.token("alice", channels=["board:srv"]))
    await client.connect()
    await events.wait_for("subscribed", lambda c: c.channel == "board:srv")
    await server.publish("board:srv", {"hello": "server-side"})
    pub = await events.wait_for("publication")
    assert pub.channel == "board:srv" and pub.pub.data == {"hello": "server-side"}


async def test_token_refresh_keeps_the_connection(server, clients):
    refreshed = asyncio.Event()

    async def get_token() -> str:
        refreshed.set()
        return server.token("alice", ttl=3600)

    first_token_expiry = time.time() + 2
    client, events = clients(
        server, "alice", token=server.token("alice", ttl=2), get_token=get_token
    )
    await client.connect()
    _sub, sub_events = await subscribed(client, "board:refresh")
    async with asyncio.timeout(10):
        await refreshed.wait()
    [alice] = server.hub.users["alice"].clients.values()
    async with asyncio.timeout(5):
        while alice.expires_at < first_token_expiry + 3000:  # the refresh reached the server
            await asyncio.sleep(0.01)
        # the property is about time: let the hub's ticker pass the first token's expiry
        while time.time() < first_token_expiry + 1.5:
            await asyncio.sleep(0.1)
    await server.publish("board:refresh", "after refresh")
    await sub_events.wait_for("publication", lambda c: c.pub.data == "after refresh")
    assert events.of("disconnected") == [] and events.of("connecting")[1:] == []
    assert len(events.of("connected")) == 1
    assert not alice.closed


async def test_unrefreshed_connection_expires(make_server, server_config, clients):
    server = await make_server(server_config())
    client, events = clients(server, "alice", token=server.token("alice", ttl=1))
    await client.connect()
    await events.wait_for("connected")
    # no get_token: the server closes it as expired (3005) once the ticker sees it
    ctx = await events.wait_for("connecting", lambda c: c.code == 3005, timeout=5)
    assert ctx.reason == "connection expired"


async def test_api_subscribe_and_unsubscribe_a_user(server, clients):
    client, events = clients(server, "alice")
    await client.connect()
    await server.api("subscribe", {"user": "alice", "channel": "board:pushed"})
    await events.wait_for("subscribed", lambda c: c.channel == "board:pushed")
    await server.publish("board:pushed", "x")
    await events.wait_for("publication", lambda c: c.pub.data == "x")
    await server.api("unsubscribe", {"user": "alice", "channel": "board:pushed"})
    await events.wait_for("unsubscribed", lambda c: c.channel == "board:pushed")


async def test_user_status_online_then_last_seen(server, clients):
    client, _ = clients(server, "carol")
    await client.connect()
    status = await server.api("user_status", {"users": ["carol"]})
    assert status["result"]["statuses"][0]["online"] is True
    await client.disconnect()
    async with asyncio.timeout(5):
        while (await server.api("user_status", {"users": ["carol"]}))["result"]["statuses"][0][
            "online"
        ]:
            await asyncio.sleep(0.02)
    status = await server.api("user_status", {"users": ["carol"]})
    assert status["result"]["statuses"][0]["last_seen"] > 0


# --- Centrifugo semantics the SDK relies on (issue 16) --------------------------------
SEMANTICS = """
[[namespace]]
name = "small"
history_size = 2
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
[[namespace]]
name = "askrecover"
history_size = 100
history_ttl = "600s"
allow_subscribe_for_client = true
allow_history_for_subscriber = true
[[namespace]]
name = "market"
history_size = 100
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
allow_tags_filter = true
"""


async def stream_top(server, channel: str) -> StreamPosition:
    reply = await server.api("history", {"channel": channel, "limit": 0})
    return StreamPosition(reply["result"]["offset"], reply["result"]["epoch"])


async def test_get_state_is_asked_again_when_recovery_is_impossible(
    make_server, server_config, clients
):
    server = await make_server(server_config(SEMANTICS))
    await server.publish("small:1", "before")
    asked: list[StreamPosition] = []

    async def get_state(channel: str) -> StreamPosition:
        # the app reads the stream position first, then loads its own state
        asked.append(await stream_top(server, channel))
        return asked[-1]

    client, _ = clients(server, "alice")
    await client.connect()
    _sub, events = await subscribed(client, "small:1", get_state=get_state)
    assert len(asked) == 1
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    for n in range(5):  # more than the two the channel keeps
        await server.publish("small:1", n)
    first = events.of("subscribed")[0]
    again = await events.wait_for("subscribed", lambda c: c is not first, timeout=10)
    # the server said 112 (the SDK set the reject-unrecovered flag), so the SDK reloaded
    # the app's state from get_state instead of going on with a silent gap
    assert len(asked) == 2 and asked[1].offset == asked[0].offset + 5
    assert again.recovered is True and again.stream_position.offset == asked[1].offset
    assert events.of("publication") == []
    await server.publish("small:1", "after")
    await events.wait_for("publication", lambda c: c.pub.data == "after")


async def test_get_state_position_with_an_empty_epoch_recovers(make_server, server_config, clients):
    server = await make_server(server_config(SEMANTICS))
    for n in range(3):
        await server.publish("askrecover:1", n)
    top = await stream_top(server, "askrecover:1")
    await server.publish("askrecover:1", "missed")

    async def get_state(channel: str) -> StreamPosition:
        return StreamPosition(top.offset, "")  # an app that kept only the offset

    client, _ = clients(server, "alice")
    await client.connect()
    _sub, events = await subscribed(client, "askrecover:1", get_state=get_state, recoverable=True)
    first = events.of("subscribed")[0]
    assert first.recovered is True and first.was_recovering is True
    await events.wait_for("publication", lambda c: c.pub.data == "missed")


async def test_recovery_the_client_asks_for(make_server, server_config, clients):
    server = await make_server(server_config(SEMANTICS))
    client, _ = clients(server, "alice")
    await client.connect()
    _sub, events = await subscribed(client, "askrecover:2", recoverable=True)
    assert events.of("subscribed")[0].recoverable is True
    await server.publish("askrecover:2", 1)
    await events.wait_for("publication")
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    await server.publish("askrecover:2", 2)
    again = await events.wait_for("subscribed", lambda c: c.was_recovering)
    assert again.recovered is True
    await events.wait_for("publication", lambda c: c.pub.data == 2)
    assert [c.pub.data for c in events.of("publication")] == [1, 2]


async def test_tags_filter(make_server, server_config, clients):
    server = await make_server(server_config(SEMANTICS))
    client, _ = clients(server, "alice")
    await client.connect()
    tags_filter = Filter.all(Filter.eq("ticker", "AAPL"), Filter.gt("price", "100"))
    _sub, events = await subscribed(client, "market:stocks", tags_filter=tags_filter)
    for data, tags in [
        ("aapl cheap", {"ticker": "AAPL", "price": "99"}),
        ("msft", {"ticker": "MSFT", "price": "300"}),
        ("aapl", {"ticker": "AAPL", "price": "150.25"}),
    ]:
        reply = await server.api(
            "publish", {"channel": "market:stocks", "data": data, "tags": tags}
        )
        assert "result" in reply, reply
    await server.publish("market:stocks", "end")  # untagged: filtered out too
    await events.wait_for("publication", lambda c: c.pub.data == "aapl")
    plain_client, _ = clients(server, "bob")
    await plain_client.connect()
    _plain, plain_events = await subscribed(plain_client, "market:stocks")
    await server.publish("market:stocks", "last")
    await plain_events.wait_for("publication", lambda c: c.pub.data == "last")
    assert [c.pub.data for c in events.of("publication")] == ["aapl"]
    assert events.of("publication")[0].pub.tags == {"ticker": "AAPL", "price": "150.25"}


async def test_tags_filter_where_the_namespace_does_not_allow_it(
    make_server, server_config, clients
):
    server = await make_server(server_config(SEMANTICS))
    client, _ = clients(server, "alice")
    await client.connect()
    events = Recorder()
    sub = client.new_subscription("small:1", events=events, tags_filter=Filter.eq("ticker", "AAPL"))
    await sub.subscribe()
    refused = await events.wait_for("unsubscribed")
    assert refused.code == 107


async def test_personal_channel(make_server, server_config, clients):
    config = server_config(
        '[channel]\nhistory_size = 10\nhistory_ttl = "60s"\nforce_recovery = true\n',
        client__subscribe_to_user_personal_channel=True,
    )
    server = await make_server(config)
    client, events = clients(server, "42")
    await client.connect()
    subscribed_ctx = await events.wait_for("subscribed", lambda c: c.channel == "#42")
    assert subscribed_ctx.recoverable is True
    await server.publish("#42", {"for": "42"})
    pub = await events.wait_for("publication")
    assert (pub.channel, pub.pub.data) == ("#42", {"for": "42"})


async def test_personal_channel_single_connection(make_server, server_config, clients):
    config = server_config(
        "[channel]\npresence = true\n",
        client__subscribe_to_user_personal_channel=True,
        client__personal_channel_single_connection=True,
    )
    server = await make_server(config)
    first, first_events = clients(server, "alice")
    await first.connect()
    await first_events.wait_for("subscribed", lambda c: c.channel == "#alice")
    second, second_events = clients(server, "alice")
    await second.connect()
    gone = await first_events.wait_for("disconnected")
    assert (gone.code, gone.reason) == (3504, "connection limit")
    await second_events.wait_for("subscribed", lambda c: c.channel == "#alice")
    assert second_events.of("disconnected") == []


async def test_insecure_mode_as_the_sdk_test_suites_run_it(make_server, server_config, clients):
    server = await make_server(server_config(client__insecure=True))
    client, _ = clients(server, "", token="")
    await client.connect()
    sub, events = await subscribed(client, "private:anything")
    await sub.publish({"from": "nobody"})
    await events.wait_for("publication", lambda c: c.pub.data == {"from": "nobody"})
    assert (await sub.presence_stats()).num_clients == 1
    assert [p.data for p in (await sub.history(limit=10)).publications] == [{"from": "nobody"}]
