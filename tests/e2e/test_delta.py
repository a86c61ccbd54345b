"""Delta compression (``delta: "fossil"``) with the SDKs' own decoders.

A namespace allows fossil deltas (``allowed_delta_types``); the publisher asks for them
(API ``delta: true``, or the namespace's ``delta_publish``). Subscribers that negotiated
delta get each board-card update as a small delta after the first; they rebuild every
publication exactly (centrifuge-js counts ``numDeltaPayloads``; centrifuge-python decodes
in its codec), on JSON and Protobuf, live and across a reconnect with recovery. Other
subscribers of the channel get whole publications, encoded once as before.
"""

from __future__ import annotations

import orjson
import pytest
from centrifuge import Client, DeltaType

from tests import raw_clients
from tests.centrifuge_helpers import Recorder, subscribed
from tests.e2e.test_centrifuge_js import js, publication, pytestmark  # noqa: F401

DELTA = """
[[namespace]]
name = "cards"
history_size = 100
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
allowed_delta_types = ["fossil"]
[[namespace]]
name = "plain"
allow_subscribe_for_client = true
allowed_delta_types = ["fossil"]
"""
CHANNEL = "cards:1"


def card(n: int, column: str = "doing") -> dict:
    """A board card as the demo publishes it: most of it the same from one to the next."""
    return {
        "type": "card",
        "card": {
            "id": 7,
            "board_id": 1,
            "title": "Release notes for the next version",
            "column": column,
            "position": n,
            "assignee": {"id": "bob", "name": "Bob Li", "color": "#1971c2"},
            "description": "Write the release notes and ask the team to read them. " * 4,
            "version": n,
        },
        "actor": {"id": "carol", "name": "Carol Diaz", "color": "#e8590c"},
    }


@pytest.fixture
async def server(make_server, server_config):
    return await make_server(server_config(DELTA))


async def publish_cards(server, count: int, start: int = 0, delta: bool = True) -> list[dict]:
    sent = []
    for n in range(start, start + count):
        data = card(n, "done" if n % 2 else "doing")
        reply = await server.api("publish", {"channel": CHANNEL, "data": data, "delta": delta})
        assert "result" in reply, reply
        sent.append(data)
    return sent


async def test_centrifuge_js_gets_deltas_and_rebuilds_every_card(server, js):  # noqa: F811
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    await alice.subscribe(CHANNEL, options={"delta": "fossil"})
    sent = await publish_cards(server, 10)
    await alice.wait(publication(CHANNEL, sent[-1]))
    assert [e["data"] for e in alice.publications(CHANNEL)] == sent
    stats = (await alice.call("deltaStats", channel=CHANNEL))["result"]
    assert stats["numPublications"] == 10
    assert stats["numDeltaPayloads"] == 9  # the first goes whole
    assert stats["bytesReceived"] < stats["bytesDecoded"] / 3, stats


async def test_without_the_publishers_delta_everything_goes_whole(server, js):  # noqa: F811
    alice = await js("alice")
    await alice.connect(server.ws_url, token=server.token("alice"))
    await alice.subscribe(CHANNEL, options={"delta": "fossil"})
    sent = await publish_cards(server, 4, delta=False)
    await alice.wait(publication(CHANNEL, sent[-1]))
    stats = (await alice.call("deltaStats", channel=CHANNEL))["result"]
    assert (stats["numDeltaPayloads"], stats["numFullPayloads"]) == (0, 4)


async def test_centrifuge_python_json_and_protobuf_rebuild_every_card(server):
    clients = []
    try:
        received: dict[bool, Recorder] = {}
        for protobuf in (False, True):
            client = Client(server.ws_url, token=server.token("py"), use_protobuf=protobuf)
            clients.append(client)
            await client.connect()
            _, received[protobuf] = await subscribed(client, CHANNEL, delta=DeltaType.FOSSIL)
        sent = await publish_cards(server, 8)
        for protobuf, recorder in received.items():
            last = orjson.dumps(sent[-1]) if protobuf else sent[-1]
            await recorder.wait_for("publication", lambda ctx, last=last: ctx.pub.data == last)
            data = [ctx.pub.data for ctx in recorder.of("publication")]
            if protobuf:
                data = [orjson.loads(d) for d in data]
            assert data == sent, f"protobuf={protobuf}"
    finally:
        for client in clients:
            await client.disconnect()


async def test_recovery_sends_the_missed_ones_as_deltas_and_they_rebuild(server):
    client = Client(server.ws_url, token=server.token("py"))
    try:
        await client.connect()
        _, recorder = await subscribed(client, CHANNEL, delta=DeltaType.FOSSIL)
        sent = await publish_cards(server, 3)
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data == sent[-1])
        # cut the connection; publish while it is away; it reconnects and recovers
        await server.api("disconnect", {"user": "py", "disconnect": {"code": 4000, "reason": "x"}})
        await recorder.wait_for("subscribing")
        sent += await publish_cards(server, 5, start=3)
        ok = await recorder.wait_for("subscribed", lambda ctx: ctx.was_recovering, timeout=10)
        assert ok.recovered
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data == sent[-1])
        assert [ctx.pub.data for ctx in recorder.of("publication")] == sent
        # and live deltas go on after the recovery
        sent += await publish_cards(server, 3, start=8)
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data == sent[-1])
        assert [ctx.pub.data for ctx in recorder.of("publication")] == sent
    finally:
        await client.disconnect()


async def test_wire_form_and_encode_once_beside_plain_subscribers(server):
    """On the wire: the first whole (a JSON string), then ``delta: true``; a plain
    subscriber of the same channel gets the usual whole publications."""
    port = int(server.url.rsplit(":", 1)[1])
    delta_ws = await raw_clients.RawWebSocket.open(port, "/connection/websocket")
    delta_ws.send(orjson.dumps({"id": 1, "connect": {"token": server.token("raw")}}))
    await delta_ws.receive_until(raw_clients.centrifugo_reply(1))
    delta_ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": CHANNEL, "delta": "fossil"}}))
    reply = orjson.loads(await delta_ws.receive_until(raw_clients.centrifugo_reply(2)))
    assert reply["subscribe"]["delta"] is True
    plain_ws = await raw_clients.centrifugo_websocket(port, server.token("plain"), (CHANNEL,))
    sent = await publish_cards(server, 3)
    pushes = [orjson.loads(await delta_ws.receive()) for _ in range(3)]
    plain = [orjson.loads(await plain_ws.receive()) for _ in range(3)]
    pubs = [p["push"]["pub"] for p in pushes]
    assert isinstance(pubs[0]["data"], str) and "delta" not in pubs[0]
    assert orjson.loads(pubs[0]["data"]) == sent[0]
    assert [p.get("delta") for p in pubs[1:]] == [True, True]
    assert all(len(p["data"]) < len(orjson.dumps(sent[0])) / 3 for p in pubs[1:])
    assert [p["push"]["pub"]["data"] for p in plain] == sent  # whole, as JSON
    delta_ws.abort()
    plain_ws.abort()


async def test_refusals_and_what_is_not_negotiated(server):
    port = int(server.url.rsplit(":", 1)[1])
    ws = await raw_clients.centrifugo_websocket(port, server.token("r"))

    async def subscribe(command_id: int, **params: object) -> dict:
        ws.send(orjson.dumps({"id": command_id, "subscribe": params}))
        return orjson.loads(await ws.receive_until(raw_clients.centrifugo_reply(command_id)))

    unknown = await subscribe(2, channel=CHANNEL, delta="xdelta")
    assert unknown["error"]["code"] == 107 and "delta type" in unknown["error"]["message"]
    # a namespace that does not allow delta subscribes without it, as in Centrifugo
    not_allowed = await subscribe(3, channel="board:nodelta", delta="fossil")
    assert "delta" not in not_allowed["subscribe"]
    ws.abort()


async def test_delta_publish_namespace_option(make_server, server_config):
    server = await make_server(
        server_config(
            DELTA.replace(
                'allowed_delta_types = ["fossil"]\n[[namespace]]',
                'allowed_delta_types = ["fossil"]\ndelta_publish = true\n[[namespace]]',
            )
        )
    )
    client = Client(server.ws_url, token=server.token("py"))
    try:
        await client.connect()
        _, recorder = await subscribed(client, CHANNEL, delta=DeltaType.FOSSIL)
        port = int(server.url.rsplit(":", 1)[1])
        raw = await raw_clients.RawWebSocket.open(port, "/connection/websocket")
        raw.send(orjson.dumps({"id": 1, "connect": {"token": server.token("raw")}}))
        await raw.receive_until(raw_clients.centrifugo_reply(1))
        raw.send(orjson.dumps({"id": 2, "subscribe": {"channel": CHANNEL, "delta": "fossil"}}))
        await raw.receive_until(raw_clients.centrifugo_reply(2))
        sent = await publish_cards(server, 3, delta=False)  # the namespace asks for it
        pushes = [orjson.loads(await raw.receive()) for _ in range(3)]
        assert [p["push"]["pub"].get("delta") for p in pushes] == [None, True, True]
        await recorder.wait_for("publication", lambda ctx: ctx.pub.data == sent[-1])
        assert [ctx.pub.data for ctx in recorder.of("publication")] == sent
        raw.abort()
    finally:
        await client.disconnect()


async def test_bytes_saved_on_board_card_updates(server):
    """The board demo's card moves: what 50 of them cost a delta subscriber against a
    plain one, bytes on the wire (the figure docs/centrifugo.md quotes)."""
    port = int(server.url.rsplit(":", 1)[1])
    delta_ws = await raw_clients.RawWebSocket.open(port, "/connection/websocket")
    delta_ws.send(orjson.dumps({"id": 1, "connect": {"token": server.token("raw")}}))
    await delta_ws.receive_until(raw_clients.centrifugo_reply(1))
    delta_ws.send(orjson.dumps({"id": 2, "subscribe": {"channel": CHANNEL, "delta": "fossil"}}))
    await delta_ws.receive_until(raw_clients.centrifugo_reply(2))
    plain_ws = await raw_clients.centrifugo_websocket(port, server.token("plain"), (CHANNEL,))
    await publish_cards(server, 50)
    delta_bytes = plain_bytes = 0
    for _ in range(50):
        delta_bytes += len(await delta_ws.receive())
        plain_bytes += len(await plain_ws.receive())
    print(
        f"\n50 card updates: {plain_bytes} bytes whole, {delta_bytes} with fossil deltas "
        f"({1 - delta_bytes / plain_bytes:.0%} saved)"
    )
    assert delta_bytes < plain_bytes / 3
    delta_ws.abort()
    plain_ws.abort()
