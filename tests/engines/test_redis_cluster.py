"""Two pushgate nodes joined by the real Redis on 127.0.0.1:6379: one big node.

The nodes run in the test's process (``make_server`` + ``redis_config``: heartbeat 0.5 s,
node_ttl 2 s); clients are centrifuge-python over real sockets.
"""

from __future__ import annotations

import asyncio
import time

from pushgate.engine.redis_engine import RedisEngine
from tests.centrifuge_helpers import Recorder, clients_fixture, subscribed, wait_until  # noqa: F401

HEARTBEAT, NODE_TTL = 0.5, 2.0


async def test_publication_on_node_a_reaches_subscriber_on_node_b(
    redis_config,  # first: its Redis keys are removed after the nodes have stopped
    make_server,
    clients,
):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    client, _ = clients(node_b, "alice")
    await client.connect()
    _, events = await subscribed(client, "board:x")
    for n in range(50):
        await node_a.publish("board:x", n)
    await events.wait_for("publication", lambda c: c.pub.data == 49)
    assert [c.pub.data for c in events.of("publication")] == list(range(50))
    assert [c.pub.offset for c in events.of("publication")] == list(range(1, 51))
    info = await node_a.api("info", {})
    assert {n["uid"] for n in info["result"]["nodes"]} == {node_a.hub.node_id, node_b.hub.node_id}
    presence = await node_a.api("presence", {"channel": "board:x"})
    assert [c["user"] for c in presence["result"]["presence"].values()] == ["alice"]
    status = await node_a.api("user_status", {"users": ["alice"]})
    assert status["result"]["statuses"][0]["online"] is True
    await node_a.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    await events.wait_for("subscribed", lambda c: c.was_recovering and c.recovered)


async def test_presence_join_and_leave_across_nodes(redis_config, make_server, clients):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    alice, _ = clients(node_a, "alice")
    bob, _ = clients(node_b, "bob")
    await alice.connect()
    await bob.connect()
    alice_sub, alice_events = await subscribed(alice, "board:p")
    await subscribed(bob, "board:p")
    join = await alice_events.wait_for("join", lambda c: c.info.user == "bob")
    for node in (node_a, node_b):
        presence = (await node.api("presence", {"channel": "board:p"}))["result"]["presence"]
        assert sorted(c["user"] for c in presence.values()) == ["alice", "bob"]
        stats = (await node.api("presence_stats", {"channel": "board:p"}))["result"]
        assert stats == {"num_clients": 2, "num_users": 2}
    assert (await alice_sub.presence_stats()).num_clients == 2
    await bob.disconnect()
    leave = await alice_events.wait_for("leave", lambda c: c.info.user == "bob")
    assert leave.info.client == join.info.client
    presence = (await node_a.api("presence", {"channel": "board:p"}))["result"]["presence"]
    assert [c["user"] for c in presence.values()] == ["alice"]


async def test_api_by_user_on_node_a_acts_on_node_b(redis_config, make_server, clients):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    bob, bob_events = clients(node_b, "bob")
    await bob.connect()
    reply = await node_a.api("subscribe", {"user": "bob", "channel": "board:pushed"})
    assert reply["result"] == {}, reply
    await bob_events.wait_for("subscribed", lambda c: c.channel == "board:pushed")
    await node_a.publish("board:pushed", "x")
    pub = await bob_events.wait_for("publication", lambda c: c.channel == "board:pushed")
    assert pub.pub.data == "x"
    await node_a.api("unsubscribe", {"user": "bob", "channel": "board:pushed"})
    await bob_events.wait_for("unsubscribed", lambda c: c.channel == "board:pushed")
    assert "board:pushed" not in node_b.hub.channels
    await node_a.api("disconnect", {"user": "bob", "disconnect": {"code": 3555, "reason": "bye"}})
    gone = await bob_events.wait_for("disconnected")
    assert (gone.code, gone.reason) == (3555, "bye")
    assert "bob" not in node_b.hub.users


async def test_info_lists_both_nodes_with_their_counts(redis_config, make_server, clients):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    for user in ("bob", "carol"):
        client, _ = clients(node_b, user)
        await client.connect()
        await subscribed(client, "board:i")
    alice, _ = clients(node_a, "alice")
    await alice.connect()

    async def counted() -> bool:  # B's counts reach Redis with its next heartbeat
        nodes = {n["uid"]: n for n in (await node_a.api("info"))["result"]["nodes"]}
        b = nodes.get(node_b.hub.node_id, {})
        return (b.get("num_clients"), b.get("num_users"), b.get("num_subs")) == (2, 2, 2)

    await wait_until(counted, HEARTBEAT * 4, "node B's counts in info on node A")
    nodes = {n["uid"]: n for n in (await node_a.api("info"))["result"]["nodes"]}
    assert set(nodes) == {node_a.hub.node_id, node_b.hub.node_id}
    a = nodes[node_a.hub.node_id]
    assert (a["num_clients"], a["num_users"], a["num_subs"], a["num_channels"]) == (1, 1, 0, 0)
    assert nodes[node_b.hub.node_id]["num_channels"] == 1


def crash(engine: RedisEngine) -> None:
    """Stop a node's engine as SIGKILL would: no heartbeat, no PUB/SUB, no goodbye."""
    assert engine._heartbeat is not None
    engine._heartbeat.cancel()
    for shard in engine.shards:
        if shard.reader is not None:
            shard.reader.cancel()
    if engine.reaper._task is not None:
        engine.reaper._task.cancel()


async def test_a_stopped_node_drops_out_of_info_and_its_users_go_offline(
    redis_config, make_server, clients
):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    dave, _ = clients(node_b, "dave")
    await dave.connect()

    async def uids() -> set[str]:
        return {n["uid"] for n in (await node_a.api("info"))["result"]["nodes"]}

    async def dave_online() -> bool:
        return (await node_a.api("user_status", {"users": ["dave"]}))["result"]["statuses"][0][
            "online"
        ]

    assert await uids() == {node_a.hub.node_id, node_b.hub.node_id}
    assert await dave_online()
    crash(node_b.hub.engine)
    stopped = time.time()

    async def dropped() -> bool:
        return await uids() == {node_a.hub.node_id}

    async def offline() -> bool:
        return not await dave_online()

    limit = NODE_TTL + HEARTBEAT + 0.5
    await wait_until(dropped, limit, "node B drops out of info")
    await wait_until(offline, limit - (time.time() - stopped), "dave goes offline with B")
    status = (await node_a.api("user_status", {"users": ["dave"]}))["result"]["statuses"][0]
    # last seen: when B last vouched for dave
    assert stopped - HEARTBEAT - 1 <= status["last_seen"] <= stopped + 0.5  # whole seconds


async def test_nodes_listen_only_to_channels_they_have_subscribers_for(
    redis_config, redis_prefix, make_server, clients
):
    import redis.asyncio as aioredis

    from tests.conftest import REDIS_URL

    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    alice, _ = clients(node_a, "alice")
    await alice.connect()
    sub, events = await subscribed(alice, "board:only-a")
    redis = aioredis.from_url(REDIS_URL)
    try:
        numsub = dict(
            await redis.pubsub_numsub(
                f"{redis_prefix}:ch:board:only-a", f"{redis_prefix}:ch:board:nobody"
            )
        )
        assert list(numsub.values()) == [1, 0]  # node A only; B has no subscriber
        await node_b.publish("board:nobody", "unheard")
        await node_b.publish("board:only-a", "heard")
        await events.wait_for("publication")
        assert "board:nobody" not in node_a.hub.channels
        await sub.unsubscribe()
        await events.wait_for("unsubscribed")

        async def released() -> bool:
            [(_, count)] = await redis.pubsub_numsub(f"{redis_prefix}:ch:board:only-a")
            return count == 0

        await wait_until(released, 5, "node A unsubscribes from Redis with its last subscriber")
    finally:
        await redis.aclose()


async def test_emulation_command_sent_to_another_node_is_forwarded(make_server, redis_config):
    """Behind a balancer, /emulation may reach a node that does not hold the session."""
    import json

    import orjson

    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    connect = orjson.dumps({"id": 1, "connect": {"token": node_a.token("alice")}})
    stream = await node_a.session.post(
        node_a.url + "/connection/http_stream",
        data=connect,
        headers={"Content-Type": "application/json"},
    )
    reply = orjson.loads(await stream.content.readline())["connect"]
    assert reply["node"] == node_a.hub.node_id
    command = {"id": 2, "subscribe": {"channel": "board:fwd"}}
    body = {"session": reply["session"], "node": reply["node"], "data": json.dumps(command)}
    async with node_b.session.post(node_b.url + "/emulation", json=body) as response:
        assert response.status == 204
    async with asyncio.timeout(5):
        while True:
            message = orjson.loads(await stream.content.readline())
            if message.get("id") == 2:
                break
    assert "error" not in message and message["subscribe"]["recoverable"] is True
    await node_b.publish("board:fwd", "through b")
    async with asyncio.timeout(5):
        while True:
            message = orjson.loads(await stream.content.readline())
            if "pub" in message.get("push", {}):
                break
    assert message["push"]["pub"]["data"] == "through b"
    stream.close()


async def test_protobuf_emulation_command_is_forwarded_too(make_server, redis_config):
    """The same with centrifuge-js's protobuf build: an EmulationRequest message on node
    B for a session held by node A (the commands cross as base64 in the control message)."""
    from pushgate.protocol.centrifugo import client_pb2 as pb
    from tests.e2e.test_protobuf_transports import OCTETS, PbStream, delimited, is_pub

    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    connect = pb.Command(id=1, connect=pb.ConnectRequest(token=node_a.token("alice")))
    stream = await node_a.session.post(
        node_a.url + "/connection/http_stream", data=delimited(connect), headers=OCTETS
    )
    replies = PbStream(stream)
    reply = (await replies.next()).connect
    subscribe = pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="board:pbfwd"))
    request = pb.EmulationRequest(session=reply.session, node=reply.node, data=delimited(subscribe))
    async with node_b.session.post(
        node_b.url + "/emulation", data=request.SerializeToString(), headers=OCTETS
    ) as response:
        assert response.status == 204
    subscribed = await replies.until(lambda r: r.id == 2)
    assert not subscribed.HasField("error") and subscribed.subscribe.recoverable
    await node_b.publish("board:pbfwd", "through b")
    pub = await replies.until(is_pub("board:pbfwd"))
    assert pub.push.pub.data == b'"through b"'
    stream.close()


async def test_binary_publication_across_nodes(make_server, redis_config, clients):
    """Bytes a protobuf client publishes on node A reach protobuf subscribers on node B
    (and in history) as they are; a JSON subscriber on node B is closed with 3506, as on
    one node: the mark that the data is not JSON crosses Redis with it."""
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    publisher, _ = clients(node_a, "alice", use_protobuf=True)
    reader, _ = clients(node_b, "bob", use_protobuf=True)
    json_reader, json_events = clients(node_b, "carol")
    for client in (publisher, reader, json_reader):
        await client.connect()
    sub, _ = await subscribed(publisher, "board:bin")
    reader_sub, reader_events = await subscribed(reader, "board:bin")
    await subscribed(json_reader, "board:bin")
    await sub.publish(b"\x00\xffbinary\n")
    got = await reader_events.wait_for("publication")
    assert got.pub.data == b"\x00\xffbinary\n"
    gone = await json_events.wait_for("disconnected")
    assert gone.code == 3506
    history = await reader_sub.history(limit=1, reverse=True)
    assert [p.data for p in history.publications] == [b"\x00\xffbinary\n"]


async def test_channels_api_counts_subscribers_on_every_node(redis_config, make_server, clients):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    for node, user in ((node_a, "alice"), (node_b, "bob"), (node_b, "carol")):
        client, _ = clients(node, user)
        await client.connect()
        await subscribed(client, "board:both")
    reply = await node_a.api("channels", {"pattern": "board:*"})
    assert reply["result"]["channels"] == {"board:both": {"num_clients": 3}}
