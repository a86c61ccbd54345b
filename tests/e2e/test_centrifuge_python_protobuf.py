"""centrifuge-python with ``use_protobuf=True``: the Protobuf protocol end to end.

The SDK offers the ``centrifuge-protobuf`` WebSocket subprotocol and aborts unless the
server selects it; every message is then a length-delimited protobuf. These are the
JSON tests' properties (test_centrifuge_python.py) spoken in Protobuf, with data as
bytes: what the server API publishes as JSON reaches a protobuf client as those JSON
bytes, and what a protobuf client publishes reaches JSON clients as JSON.
"""

from __future__ import annotations

import asyncio
import json
import time

from tests.centrifuge_helpers import Recorder, clients_fixture, subscribed  # noqa: F401


def as_json(data: bytes) -> object:
    return json.loads(data)


async def test_connect_subscribe_and_publications_in_order(server, clients):
    client, events = clients(server, use_protobuf=True)
    await client.connect()
    connected = await events.wait_for("connected")
    assert connected.client
    _sub, sub_events = await subscribed(client, "board:pb")
    results = [await server.publish("board:pb", {"n": n}) for n in range(30)]
    await sub_events.wait_for("publication", lambda c: as_json(c.pub.data) == {"n": 29})
    pubs = sub_events.of("publication")
    assert [as_json(c.pub.data) for c in pubs] == [{"n": n} for n in range(30)]
    assert [c.pub.offset for c in pubs] == [r["offset"] for r in results]


async def test_publish_presence_stats_and_join_leave(server, clients):
    alice, _ = clients(
        server, "alice", token=server.token("alice", info={"name": "Alice"}), use_protobuf=True
    )
    bob, _ = clients(server, "bob", use_protobuf=True)
    json_carol, _ = clients(server, "carol")  # a JSON client in the same channel
    for client in (alice, bob, json_carol):
        await client.connect()
    alice_sub, alice_events = await subscribed(alice, "board:team", join_leave=True)
    bob_sub, _ = await subscribed(bob, "board:team")
    _carol_sub, carol_events = await subscribed(json_carol, "board:team")
    join = await alice_events.wait_for("join", lambda c: c.info.user == "bob")
    assert join.info.client

    presence = await alice_sub.presence()
    assert sorted(i.user for i in presence.clients.values()) == ["alice", "bob", "carol"]
    conn_info = {i.user: i.conn_info for i in presence.clients.values()}["alice"]
    assert as_json(conn_info) == {"name": "Alice"}
    stats = await bob_sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (3, 3)

    await bob_sub.publish(b'{"text": "from bob"}')
    pub = await alice_events.wait_for("publication")
    assert as_json(pub.pub.data) == {"text": "from bob"}
    assert pub.pub.info.user == "bob"
    from_bob = await carol_events.wait_for("publication")
    assert from_bob.pub.data == {"text": "from bob"}  # JSON bytes reach JSON clients as JSON

    await bob.disconnect()
    leave = await alice_events.wait_for("leave", lambda c: c.info.user == "bob")
    assert leave.info.client == join.info.client


async def test_history_limit_reverse(server, clients):
    client, _ = clients(server, use_protobuf=True)
    await client.connect()
    sub, _ = await subscribed(client, "board:h")
    for n in range(10):
        await server.publish("board:h", n)
    last = await sub.history(limit=3, reverse=True)
    assert [as_json(p.data) for p in last.publications] == [9, 8, 7]
    assert last.offset == 10 and last.epoch


async def test_recovery_after_server_forced_reconnect(server, clients):
    client, client_events = clients(server, "alice", use_protobuf=True)
    await client.connect()
    _sub, events = await subscribed(client, "board:rec")
    for n in range(1, 6):
        await server.publish("board:rec", n)
    await events.wait_for("publication", lambda c: as_json(c.pub.data) == 5)
    reply = await server.api(
        "disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "test reconnect"}}
    )
    assert reply["result"] == {}
    for n in range(6, 16):
        await server.publish("board:rec", n)
    resubscribed = await events.wait_for("subscribed", lambda c: c.was_recovering)
    assert resubscribed.recovered is True
    await events.wait_for("publication", lambda c: as_json(c.pub.data) == 15)
    assert [as_json(c.pub.data) for c in events.of("publication")] == list(range(1, 16))
    disconnect = await client_events.wait_for("connecting", lambda c: c.code == 4000)
    assert disconnect.reason == "test reconnect"


async def test_server_side_subscriptions_from_token(server, clients):
    client, events = clients(
        server, "alice", token=server.token("alice", channels=["board:srv"]), use_protobuf=True
    )
    await client.connect()
    await events.wait_for("subscribed", lambda c: c.channel == "board:srv")
    await server.publish("board:srv", {"hello": "server-side"})
    pub = await events.wait_for("publication")
    assert pub.channel == "board:srv" and as_json(pub.pub.data) == {"hello": "server-side"}


async def test_token_refresh_keeps_the_connection(server, clients):
    refreshed = asyncio.Event()

    async def get_token() -> str:
        refreshed.set()
        return server.token("alice", ttl=3600)

    first_token_expiry = time.time() + 2
    client, events = clients(
        server,
        "alice",
        token=server.token("alice", ttl=2),
        get_token=get_token,
        use_protobuf=True,
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
    await sub_events.wait_for("publication", lambda c: as_json(c.pub.data) == "after refresh")
    assert events.of("disconnected") == [] and events.of("connecting")[1:] == []
    assert len(events.of("connected")) == 1


async def test_binary_publication_reaches_protobuf_clients_and_closes_json_ones(server, clients):
    """Non-JSON data: as in Centrifugo, protobuf clients get the bytes as they are; a JSON
    subscriber cannot be sent them and is disconnected (3506, no reconnect) rather than
    sent a broken message or silently skipped."""
    alice, _ = clients(server, "alice", use_protobuf=True)
    bob, _ = clients(server, "bob", use_protobuf=True)
    carol, carol_events = clients(server, "carol")  # JSON
    for client in (alice, bob, carol):
        await client.connect()
    alice_sub, _ = await subscribed(alice, "board:bin")
    _bob_sub, bob_events = await subscribed(bob, "board:bin")
    await subscribed(carol, "board:bin")
    binary = bytes(range(256))
    await alice_sub.publish(binary)
    got = await bob_events.wait_for("publication")
    assert got.pub.data == binary
    gone = await carol_events.wait_for("disconnected")
    assert (gone.code, gone.reason) == (3506, "inappropriate protocol")
    # the protobuf connections are untouched
    await server.publish("board:bin", {"after": True})
    await bob_events.wait_for("publication", lambda c: c.pub.data == b'{"after":true}')
