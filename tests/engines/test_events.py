"""Events out: what the product's webhook receives, on both engines.

A real pushgate node (in the test's process, memory or redis engine), real
centrifuge-python clients, and a real aiohttp webhook endpoint (tests/event_sink.py)
that checks every request's HMAC signature. The webhook sees connect / disconnect, user
online / offline / status and channel occupied / vacated, in order per user and channel;
an offline is told only after ``presence.offline_delay`` (a reload is not one); a
backend that refuses for a while gets everything afterwards, in order; a sink can be
replayed from a cursor; and a backend can pull the log instead (API ``events``).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.centrifuge_helpers import clients_fixture, subscribed  # noqa: F401
from tests.event_sink import WEBHOOK_SECRET, EventSink

OFFLINE_DELAY = 0.4


@pytest.fixture
async def sink():
    sink = EventSink()
    await sink.start()
    yield sink
    await sink.stop()


def events_config(sink: EventSink, extra: str = "") -> str:
    return f"""
[events]
enabled = true
webhook_url = "{sink.url}"
webhook_secret = "{WEBHOOK_SECRET}"
retry_min_delay = "0.05s"
retry_max_delay = "0.3s"
lease = "2s"
{extra}
"""


@pytest.fixture(params=["memory", "redis"])
def engine_config(request):
    """``server_config`` or ``redis_config``: each test runs on both engines."""
    return request.getfixturevalue("redis_config" if request.param == "redis" else "server_config")


@pytest.fixture
async def node(engine_config, make_server, sink):
    """A pushgate node delivering events to ``sink``."""
    config = engine_config(events_config(sink), presence__offline_delay=f"{OFFLINE_DELAY}s")
    return await make_server(config)


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


async def test_a_visit_is_told_in_order_and_signed(node, sink, clients):
    alice, _ = clients(node, "alice")
    await alice.connect()
    await subscribed(alice, "board:1")
    await sink.wait_for(lambda s: s.of("channel_occupied"), what="channel_occupied")
    await alice.disconnect()
    await sink.wait_for(lambda s: s.of("user_offline"), what="user_offline")
    assert sink.bad_signatures == 0
    mine = sink.of(user="alice")
    assert kinds(mine) == ["connect", "user_online", "disconnect", "user_offline"]
    connect, online, disconnect, offline = mine
    assert connect["client"] == disconnect["client"] and connect["transport"] == "websocket"
    assert connect["node"] == node.hub.node_name
    assert online["status"] == "active"
    assert disconnect["reason"]
    assert offline["last_seen"] > 0
    # told after the delay: a reload is not an offline
    assert offline["time"] - disconnect["time"] >= OFFLINE_DELAY * 1000 - 50
    assert kinds(sink.of(channel="board:1")) == ["channel_occupied", "channel_vacated"]
    # ids are unique and increase (one log with one shard); times are milliseconds
    ids = [e["id"] for e in sink.events]
    assert len(set(ids)) == len(ids)
    assert [tuple(map(int, i.split(":")[1].split("-"))) for i in ids] == sorted(
        tuple(map(int, i.split(":")[1].split("-"))) for i in ids
    )


async def test_a_reload_is_not_an_offline(node, sink, clients):
    first, _ = clients(node, "bob")
    await first.connect()
    await first.disconnect()
    second, _ = clients(node, "bob")  # the reloaded page
    await second.connect()
    await sink.wait_for(lambda s: len(s.of("connect", user="bob")) == 2, what="second connect")
    await asyncio.sleep(OFFLINE_DELAY * 2)  # past the delay: no offline may come now
    await second.disconnect()
    await sink.wait_for(lambda s: s.of("user_offline", user="bob"), what="the real offline")
    assert kinds(sink.of(user="bob")) == [
        "connect",
        "user_online",
        "disconnect",
        "connect",
        "disconnect",
        "user_offline",
    ]


async def test_attention_rolls_up_over_tabs(node, sink, clients):
    tab1, _ = clients(node, "carol")
    tab2, _ = clients(node, "carol")
    await tab1.connect()
    await tab2.connect()
    await tab1.rpc("pushgate.presence", {"state": "idle"})
    await asyncio.sleep(0.1)
    status = (await node.api("user_status", {"users": ["carol"]}))["result"]["statuses"][0]
    assert status["status"] == "active"  # the other tab is active
    await tab2.rpc("pushgate.presence", {"state": "hidden"})
    await sink.wait_for(lambda s: s.of("user_status", user="carol"), what="carol idle")
    status = (await node.api("user_status", {"users": ["carol"]}))["result"]["statuses"][0]
    assert (status["status"], status["online"]) == ("idle", True)
    got = (await node.api("get_user_status", {"users": ["carol"]}))["result"]["statuses"][0]
    assert 0 < got["active"] <= got["online"]  # last active: when the last tab went idle
    await tab2.rpc("update_user_status", {})  # Centrifugo PRO's name: active
    await sink.wait_for(lambda s: len(s.of("user_status", user="carol")) == 2, what="active")
    assert [e["status"] for e in sink.of("user_online", "user_status", user="carol")] == [
        "active",
        "idle",
        "active",
    ]


async def test_a_bad_attention_state_is_a_clear_error(node, clients):
    from centrifuge import ReplyError

    client, _ = clients(node, "dan")
    await client.connect()
    with pytest.raises(ReplyError) as error:
        await client.rpc("pushgate.presence", {"state": "asleep"})
    assert error.value.code == 107 and "active, idle, hidden" in error.value.message
    with pytest.raises(ReplyError) as error:
        await client.rpc("pushgate.nothing", {})
    assert error.value.code == 104
    await client.rpc("pushgate.presence", {"state": "idle"})  # the connection lives on


async def test_events_refused_for_a_while_all_arrive_after_in_order(node, sink, clients):
    sink.failing = True
    made = []
    for n in range(5):
        client, _ = clients(node, f"user{n}")
        await client.connect()
        made.append(client)
    for client in made:
        await client.disconnect()
    await sink.wait_for(lambda s: s.refused >= 3, what="the backend refused a few times")
    assert sink.events == []
    sink.failing = False
    await sink.wait_for(
        lambda s: len(s.of("user_offline")) == 5, timeout=10, what="everything after the outage"
    )
    for n in range(5):
        assert kinds(sink.of(user=f"user{n}")) == [
            "connect",
            "user_online",
            "disconnect",
            "user_offline",
        ]
    metrics = await (await node.session.get(node.url + "/metrics")).text()
    assert 'pushgate_events_delivery_failures_total{sink="webhook"}' in metrics


async def test_a_sink_replays_from_a_cursor_and_a_backend_can_pull(node, sink, clients):
    client, _ = clients(node, "erin")
    await client.connect()
    await client.disconnect()
    await sink.wait_for(lambda s: s.of("user_offline", user="erin"), what="erin's visit")
    first = sink.events[0]["id"]
    delivered = [e["id"] for e in sink.events]
    pulled = (await node.api("events", {"limit": 100}))["result"]
    assert [e["id"] for e in pulled["events"]] == delivered
    assert pulled["last"] == delivered[-1]
    after_first = (await node.api("events", {"since": first, "limit": 2}))["result"]["events"]
    assert [e["id"] for e in after_first] == delivered[1:3]
    reply = await node.api("events_replay", {"sink": "webhook", "since": first})
    assert "error" not in reply, reply
    await sink.wait_for(lambda s: len(s.events) == 2 * len(delivered) - 1, what="the replay")
    assert [e["id"] for e in sink.events[len(delivered) :]] == delivered[1:]
    status = (await node.api("events_status", {}))["result"]["logs"]
    assert [(s["sink"], s["caught_up"]) for s in status] == [("webhook", True)]
    bad = await node.api("events_replay", {"sink": "webhook", "since": "yesterday"})
    assert bad["error"]["code"] == 107
