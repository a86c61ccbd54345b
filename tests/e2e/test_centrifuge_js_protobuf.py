"""centrifuge-js's Protobuf build (``centrifuge/build/protobuf``) in Node, end to end.

The same driver as test_centrifuge_js.py (``node tests/js/driver.mjs protobuf``): the
client offers the ``centrifuge-protobuf`` subprotocol, which pushgate must select, and
speaks length-delimited protobuf over WebSocket; over HTTP streaming it posts
``application/octet-stream`` bodies and ``EmulationRequest`` messages to /emulation.
Data travels as bytes: the driver sends the UTF-8 of its JSON and reports bytes it gets
parsed back from JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from tests.e2e.test_centrifuge_js import (
    JsClient,
    emulation_options,
    publication,
    pytestmark,  # noqa: F401  (skipped without node and tests/node_modules)
    state,
    sub_state,
)


@pytest.fixture
async def pbjs() -> AsyncIterator[Callable[..., asyncio.Future]]:
    clients: list[JsClient] = []

    async def spawn(name: str = "js", build: str = "protobuf") -> JsClient:
        client = JsClient(name, build)
        clients.append(client)
        await client.start()
        assert client.events[0]["protobuf"] is (build == "protobuf")
        return client

    yield spawn
    await asyncio.gather(*(c.close() for c in clients))
    for client in clients:
        broken = client.matching(lambda e: e["event"] in ("unhandled", "bad_command"))
        assert not broken, f"[{client.name}] driver trouble: {broken}"


def no_client_errors(client: JsClient) -> None:
    """Nothing went wrong that the client reports (a decoding error would show here)."""
    errors = client.matching(lambda e: e["event"] == "client_error")
    assert not errors, f"[{client.name}] client errors: {errors}"


async def test_websocket_delivery_publish_presence_join_leave_history(server, pbjs):
    alice, bob = await pbjs("alice"), await pbjs("bob")
    carol = await pbjs("carol", build="")  # the JSON build, in the same channel
    alice_conn = await alice.connect(server.ws_url, token=server.token("alice"))
    assert alice_conn["transport"] == "websocket"
    bob_conn = await bob.connect(server.ws_url, token=server.token("bob"))
    await carol.connect(server.ws_url, token=server.token("carol"))
    subscribed = await alice.subscribe("board:pb", options={"joinLeave": True})
    assert subscribed["state"] == "subscribed" and subscribed["recoverable"] is True

    mark = len(alice.events)
    await bob.subscribe("board:pb")
    join = await alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob", start=mark)
    assert join["client"] == bob_conn["client"]
    await carol.subscribe("board:pb")

    offsets = [(await server.publish("board:pb", {"n": n}))["offset"] for n in range(20)]
    await alice.wait(publication("board:pb", {"n": 19}))
    pubs = alice.publications("board:pb")
    assert [p["data"] for p in pubs] == [{"n": n} for n in range(20)]
    assert [p["offset"] for p in pubs] == offsets

    # a protobuf client's publication reaches the JSON client, and the other way round
    await bob.ok("publish", channel="board:pb", data={"from": "bob"}, via="sub")
    got = await carol.wait(publication("board:pb", {"from": "bob"}))
    assert got["info"]["user"] == "bob"
    await carol.ok("publish", channel="board:pb", data={"from": "carol"}, via="sub")
    got = await alice.wait(publication("board:pb", {"from": "carol"}))
    assert got["info"]["user"] == "carol"

    presence = await alice.ok("presence", channel="board:pb", via="sub")
    users = {cid: info["user"] for cid, info in presence["clients"].items()}
    assert users[alice_conn["client"]] == "alice" and users[bob_conn["client"]] == "bob"
    assert sorted(users.values()) == ["alice", "bob", "carol"]
    stats = await bob.ok("presenceStats", channel="board:pb", via="sub")
    assert stats == {"numClients": 3, "numUsers": 3}

    last = await alice.ok("history", channel="board:pb", via="sub", limit=3, reverse=True)
    assert [p["data"] for p in last["publications"]] == [
        {"from": "carol"},
        {"from": "bob"},
        {"n": 19},
    ]
    since = {"offset": offsets[16], "epoch": subscribed["streamPosition"]["epoch"]}
    after = await alice.ok("history", channel="board:pb", via="sub", since=since, limit=3)
    assert [p["data"] for p in after["publications"]] == [{"n": 17}, {"n": 18}, {"n": 19}]

    mark = len(alice.events)
    await bob.ok("disconnect")
    leave = await alice.wait(lambda e: e["event"] == "leave" and e["user"] == "bob", start=mark)
    assert leave["client"] == bob_conn["client"]
    for client in (alice, bob, carol):
        no_client_errors(client)


async def test_websocket_recovery_after_a_forced_reconnect(server, pbjs):
    alice = await pbjs("alice")
    await alice.connect(
        server.ws_url,
        token=server.token("alice"),
        options={"minReconnectDelay": 300, "maxReconnectDelay": 600},
    )
    await alice.subscribe("board:rec")
    for n in range(1, 6):
        await server.publish("board:rec", n)
    await alice.wait(publication("board:rec", 5))

    mark = len(alice.events)
    reply = await server.api(
        "disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "test reconnect"}}
    )
    assert "error" not in reply, reply
    for n in range(6, 16):
        await server.publish("board:rec", n)
    connecting = await alice.wait(state("connecting"), start=mark)
    assert (connecting["code"], connecting["reason"]) == (4000, "test reconnect")
    resubscribed = await alice.wait(sub_state("board:rec", "subscribed"), start=mark)
    assert resubscribed["wasRecovering"] is True and resubscribed["recovered"] is True
    await alice.wait(publication("board:rec", 15))
    assert [p["data"] for p in alice.publications("board:rec")] == list(range(1, 16))


async def test_websocket_connection_token_is_refreshed(server, pbjs):
    alice = await pbjs("alice")
    alice.token_provider = lambda event: server.token("alice", ttl=3600)
    issued = time.time()
    await alice.connect(server.ws_url, token=server.token("alice", ttl=3), getToken=True)
    connected = len(alice.events)
    await alice.subscribe("board:refresh")
    await alice.wait(lambda e: e["event"] == "need_token" and e["channel"] is None, timeout=6)
    # past the first token's expiry (and a tick of the server's expiry timer)
    await asyncio.sleep(max(0.0, issued + 4.5 - time.time()))
    await server.publish("board:refresh", {"after": "expiry"})
    await alice.wait(publication("board:refresh", {"after": "expiry"}))
    assert not alice.matching(state("disconnected", "connecting"), start=connected)
    no_client_errors(alice)


async def test_websocket_server_side_subscription_from_token_channels(server, pbjs):
    alice = await pbjs("alice")
    mark = len(alice.events)
    await alice.connect(server.ws_url, token=server.token("alice", channels=["board:srv"]))
    subscribed = await alice.wait(
        lambda e: e["event"] == "server_sub_state" and e["state"] == "subscribed", start=mark
    )
    assert subscribed["channel"] == "board:srv"
    await server.publish("board:srv", {"via": "token"})
    got = await alice.wait(publication("board:srv", {"via": "token"}))
    assert got["scope"] == "client"


async def test_http_stream_emulation_in_protobuf(server, pbjs):
    alice, bob = await pbjs("alice"), await pbjs("bob", build="")
    endpoints = [{"transport": "http_stream", "endpoint": server.url + "/connection/http_stream"}]
    connected = await alice.connect(
        endpoints, token=server.token("alice"), options=emulation_options(server)
    )
    assert connected["transport"] == "http_stream"
    await bob.connect(server.ws_url, token=server.token("bob"))
    await alice.subscribe("board:emu", options={"joinLeave": True})
    await bob.subscribe("board:emu")
    await alice.wait(lambda e: e["event"] == "join" and e["user"] == "bob")
    for n in range(1, 6):
        await server.publish("board:emu", n)
    await alice.ok("publish", channel="board:emu", data=6)  # through /emulation
    await bob.wait(publication("board:emu", 6))
    stats = await alice.ok("presenceStats", channel="board:emu", via="sub")
    assert (stats["numClients"], stats["numUsers"]) == (2, 2)
    history = await alice.ok("history", channel="board:emu", via="sub", limit=2, reverse=True)
    assert [p["data"] for p in history["publications"]] == [6, 5]

    mark = len(alice.events)
    await server.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    for n in range(7, 12):
        await server.publish("board:emu", n)
    resubscribed = await alice.wait(sub_state("board:emu", "subscribed"), start=mark)
    assert resubscribed["recovered"] is True
    await alice.wait(publication("board:emu", 11))
    assert [p["data"] for p in alice.publications("board:emu")] == list(range(1, 12))
    no_client_errors(alice)


async def test_falls_back_from_a_blocked_websocket_to_http_stream(server, pbjs):
    alice = await pbjs("alice")
    endpoints = [
        {"transport": "websocket", "endpoint": server.url.replace("http", "ws") + "/blocked"},
        {"transport": "http_stream", "endpoint": server.url + "/connection/http_stream"},
    ]
    connected = await alice.connect(
        endpoints, token=server.token("alice"), options=emulation_options(server)
    )
    assert connected["transport"] == "http_stream"
    await alice.subscribe("board:fallback")
    await server.publish("board:fallback", "through the fallback")
    await alice.wait(publication("board:fallback", "through the fallback"))
