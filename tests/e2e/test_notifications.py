"""Notifications: hand-off of the unseen ones to the product, and read positions.

Both engines; with redis, two nodes, so that an ack or a read position given on one node
is seen to act on the other. Real clients: centrifuge-python (acks by the
``pushgate.ack`` RPC), centrifuge-js in Node (read positions arrive as ``message``
pushes, which centrifuge-python does not surface), and a real webhook endpoint.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.centrifuge_helpers import clients_fixture, subscribed  # noqa: F401
from tests.e2e.test_centrifuge_js import NODE
from tests.e2e.test_centrifuge_js import js as js
from tests.event_sink import WEBHOOK_SECRET, EventSink

TTL = 0.4


@pytest.fixture
async def sink():
    sink = EventSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture(params=["memory", "redis"])
def engine_config(request):
    return request.getfixturevalue("redis_config" if request.param == "redis" else "server_config")


def config_text(sink: EventSink) -> str:
    return f"""
[events]
enabled = true
webhook_url = "{sink.url}"
webhook_secret = "{WEBHOOK_SECRET}"
types = ["notification_handoff"]
retry_min_delay = "0.05s"
retry_max_delay = "0.3s"
lease = "2s"
[notifications]
read_channels_max = 2
"""


@pytest.fixture
async def nodes(engine_config, make_server, sink):
    """Two nodes of one cluster with redis; the same node twice with memory."""
    first = await make_server(engine_config(config_text(sink)))
    if first.config.engine.type == "memory":
        return first, first
    return first, await make_server(engine_config(config_text(sink)))


async def notify(node, user: str, n: int, handoff: float | None = TTL, **extra) -> dict:
    params = {"channel": f"notifications:#{user}", "data": {"text": f"note {n}"}, **extra}
    if handoff is not None:
        params["handoff"] = handoff
    reply = await node.api("publish", params)
    assert "result" in reply, reply
    return reply["result"]


async def test_an_unseen_notification_is_handed_off_once(nodes, sink):
    node, _ = nodes
    published = await notify(node, "bob", 1)
    await sink.wait_for(lambda s: s.of("notification_handoff"), what="the hand-off")
    [handoff] = sink.of("notification_handoff")
    assert handoff["user"] == "bob" and handoff["channel"] == "notifications:#bob"
    assert (handoff["offset"], handoff["epoch"]) == (published["offset"], published["epoch"])
    assert handoff["data"] == {"text": "note 1"} and handoff["ttl"] == TTL
    assert handoff["time"] - handoff["published_at"] >= TTL * 1000 - 50
    await asyncio.sleep(TTL * 2)  # a second one would have come by now
    assert len(sink.of("notification_handoff")) == 1


async def test_an_ack_from_any_node_cancels_the_handoff(nodes, sink, clients):
    publisher, bobs_node = nodes
    bob, _ = clients(bobs_node, "bob")
    await bob.connect()
    _, seen = await subscribed(bob, "notifications:#bob")
    first = await notify(publisher, "bob", 1)
    ctx = await seen.wait_for("publication")
    assert ctx.pub.tags == {"pushgate.ack": f"{TTL:g}"}  # it wants an ack
    await bob.rpc("pushgate.ack", {"channel": "notifications:#bob", "offset": ctx.pub.offset})
    # the next one is not acknowledged: its hand-off comes, the first one's never does
    second = await notify(publisher, "bob", 2)
    await sink.wait_for(lambda s: s.of("notification_handoff"), what="the second's hand-off")
    await asyncio.sleep(TTL)
    assert [h["offset"] for h in sink.of("notification_handoff")] == [second["offset"]]
    assert first["offset"] != second["offset"]


async def test_an_ack_that_comes_before_the_timer_still_counts(nodes, sink):
    node, other = nodes
    await other.hub.engine.handoff_ack("notifications:#carol", 1)  # offset 1, not yet sent
    await notify(node, "carol", 1)
    await notify(node, "carol", 2)
    await sink.wait_for(lambda s: s.of("notification_handoff"), what="the second's hand-off")
    await asyncio.sleep(TTL)
    assert [h["offset"] for h in sink.of("notification_handoff")] == [2]


async def test_a_retried_publish_hands_off_once(nodes, sink):
    node, other = nodes
    first = await notify(node, "dan", 1, idempotency_key="n-1")
    again = await notify(other, "dan", 1, idempotency_key="n-1")
    assert again == first
    await sink.wait_for(lambda s: s.of("notification_handoff"), what="the hand-off")
    await asyncio.sleep(TTL * 2)
    assert len(sink.of("notification_handoff")) == 1


async def test_bad_handoffs_and_acks_get_clear_errors(nodes, clients, server_config, make_server):
    node, _ = nodes
    cases = [
        ({"channel": "board:1", "data": {}, "handoff": 5}, 107, "one user"),
        ({"channel": "notifications:#a,b", "data": {}, "handoff": 5}, 107, "one user"),
        ({"channel": "nohistory:#bob", "data": {}, "handoff": 5}, 107, "history"),
        ({"channel": "notifications:#bob", "data": {}, "handoff": -1}, 107, "between"),
        ({"channel": "notifications:#bob", "data": {}, "handoff": "soon"}, 107, "duration"),
    ]
    for params, code, words in cases:
        reply = await node.api("publish", params)
        assert reply["error"]["code"] == code and words in reply["error"]["message"], reply
    quiet = await make_server(server_config())  # events off
    reply = await quiet.api("publish", {"channel": "notifications:#bob", "data": {}, "handoff": 5})
    assert reply["error"]["code"] == 108 and "events.enabled" in reply["error"]["message"]
    from centrifuge import ReplyError

    eve, _ = clients(node, "eve")
    await eve.connect()
    with pytest.raises(ReplyError) as error:  # someone else's notifications
        await eve.rpc("pushgate.ack", {"channel": "notifications:#bob", "offset": 1})
    assert error.value.code == 103
    with pytest.raises(ReplyError) as error:
        await eve.rpc("pushgate.ack", {"channel": "notifications:#eve", "offset": "one"})
    assert error.value.code == 107


# --- read positions -----------------------------------------------------------------


def read_message(channel: str, offset: int, epoch: str):
    return lambda e: (
        e["event"] == "message"
        and e["data"].get("pushgate") == "read"
        and e["data"]["read"].get(channel) == {"offset": offset, "epoch": epoch}
    )


@pytest.mark.skipif(NODE is None, reason="needs node")
async def test_read_positions_reach_every_connection_and_come_on_connect(nodes, js):
    node_a, node_b = nodes
    channel = "notifications:#bob"
    published = await notify(node_a, "bob", 1, handoff=None)
    epoch = published["epoch"]
    phone, laptop = await js("phone"), await js("laptop")
    await phone.connect(node_a.ws_url, token=node_a.token("bob"))
    await laptop.connect(node_b.ws_url, token=node_b.token("bob"))
    await phone.ok(
        "rpc", method="pushgate.mark_read", data={"channel": channel, "offset": 1, "epoch": epoch}
    )
    # every connection of bob hears it, on whichever node
    await laptop.wait(read_message(channel, 1, epoch))
    await phone.wait(read_message(channel, 1, epoch))
    # an older position says nothing new: no push
    mark = len(laptop.events)
    await phone.ok(
        "rpc", method="pushgate.mark_read", data={"channel": channel, "offset": 0, "epoch": epoch}
    )
    state = (await node_b.api("read_state", {"user": "bob"}))["result"]
    assert state == {"read": {channel: {"offset": 1, "epoch": epoch}}}
    # a connection made later is told on connect
    tablet = await js("tablet")
    await tablet.connect(node_b.ws_url, token=node_b.token("bob"))
    await tablet.wait(read_message(channel, 1, epoch))
    assert laptop.matching(lambda e: e["event"] == "message", start=mark) == []
    # the backend may set it too (here on another channel of bob's)
    reply = await node_a.api(
        "mark_read", {"user": "bob", "channel": "private:#bob", "offset": 7, "epoch": "e"}
    )
    assert reply["result"] == {"changed": True}
    await laptop.wait(read_message("private:#bob", 7, "e"))
    # someone else's channel, a bad offset, and more channels than allowed: clear errors
    error = await phone.fail(
        "rpc", method="pushgate.mark_read", data={"channel": "notifications:#eve", "offset": 1}
    )
    assert error["code"] == 103
    error = await phone.fail(
        "rpc", method="pushgate.mark_read", data={"channel": channel, "offset": -1}
    )
    assert error["code"] == 107
    error = await phone.fail(
        "rpc", method="pushgate.mark_read", data={"channel": "board:#bob", "offset": 1, "epoch": ""}
    )
    assert error["code"] == 106
