"""The server API over HTTP: auth, errors, and every method, with the `cent` client."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import orjson
import pytest
from cent import (
    AsyncClient,
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    StreamPosition,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

from tests.centrifuge_helpers import clients_fixture  # noqa: F401
from tests.conftest import API_KEY


@pytest.fixture
async def cent(server):
    client = AsyncClient(server.api_url, API_KEY)
    yield client
    await client.close()


async def test_publish_and_history_with_cent(server, cent):
    first = await cent.publish(PublishRequest(channel="board:1", data={"n": 1}))
    second = await cent.publish(PublishRequest(channel="board:1", data={"n": 2}))
    assert (first.offset, second.offset) == (1, 2)
    assert first.epoch == second.epoch != ""
    history = await cent.history(HistoryRequest(channel="board:1", limit=10))
    assert [p.data for p in history.publications] == [{"n": 1}, {"n": 2}]
    assert [p.offset for p in history.publications] == [1, 2]
    since = await cent.history(
        HistoryRequest(
            channel="board:1", limit=10, since=StreamPosition(offset=1, epoch=first.epoch)
        )
    )
    assert [p.data for p in since.publications] == [{"n": 2}]
    reverse = await cent.history(HistoryRequest(channel="board:1", limit=1, reverse=True))
    assert [p.offset for p in reverse.publications] == [2]
    await cent.history_remove(HistoryRemoveRequest(channel="board:1"))
    emptied = await cent.history(HistoryRequest(channel="board:1", limit=10))
    assert emptied.publications == [] and emptied.offset == 2


async def test_history_from_a_wrong_epoch_is_unrecoverable(server, cent):
    await cent.publish(PublishRequest(channel="board:1", data={}))
    with pytest.raises(CentApiResponseError) as error:
        await cent.history(
            HistoryRequest(channel="board:1", limit=10, since=StreamPosition(offset=0, epoch="x"))
        )
    assert error.value.code == 112


async def test_broadcast_batch_info_channels(server, cent):
    result = await cent.broadcast(
        BroadcastRequest(channels=["board:a", "board:b", "nope:1"], data={"x": 1})
    )
    assert [r.result.offset if r.result else r.error.code for r in result.responses] == [1, 1, 102]
    batch = await cent.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel="board:a", data=2),
                PresenceStatsRequest(channel="board:a"),
            ]
        )
    )
    assert batch.replies[0].offset == 2
    assert batch.replies[1].num_clients == 0
    info = await cent.info(InfoRequest())
    assert len(info.nodes) == 1 and info.nodes[0].uid == server.hub.node_id
    channels = await cent.channels(ChannelsRequest(pattern="board:*"))
    assert channels.channels == {}


async def test_presence_not_available_without_presence(server, cent):
    with pytest.raises(CentApiResponseError) as error:
        await cent.presence(PresenceRequest(channel="nohistory:1"))
    assert error.value.code == 108
    stats = await cent.presence_stats(PresenceStatsRequest(channel="board:1"))
    assert (stats.num_clients, stats.num_users) == (0, 0)


async def test_unknown_namespace_is_error_102(server, cent):
    with pytest.raises(CentApiResponseError) as error:
        await cent.publish(PublishRequest(channel="nope:1", data={}))
    assert error.value.code == 102


async def test_wrong_api_key_is_401(server):
    client = AsyncClient(server.api_url, "wrong")
    try:
        with pytest.raises(CentUnauthorizedError):
            await client.publish(PublishRequest(channel="board:1", data={}))
    finally:
        await client.close()
    reply = await server.api("publish", {"channel": "board:1", "data": 1}, key="")
    assert reply["_status"] == 401


async def test_authorization_apikey_header(server):
    async with server.session.post(
        server.api_url + "/publish",
        json={"channel": "board:1", "data": 1},
        headers={"Authorization": f"apikey {API_KEY}"},
    ) as response:
        assert response.status == 200
        assert (await response.json())["result"]["offset"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, 107),
        (b"[1, 2]", 400, 107),
        (b'{"channel": 5, "data": 1}', 200, 107),
        (b'{"channel": "board:1"}', 200, 107),
        (b'{"channel": "board:1", "data": 1, "tags": [1]}', 200, 107),
    ],
)
async def test_bad_bodies_get_a_json_error_not_a_500(server, body, status, code):
    async with server.session.post(
        server.api_url + "/publish",
        data=body,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    ) as response:
        assert response.status == status
        reply = await response.json()
    assert reply["error"]["code"] == code
    assert reply["error"]["message"].startswith("bad request")


NESTED = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("publish", '{"channel": "board:deep", "data": DEEP}'),
        ("broadcast", '{"channels": ["board:deep"], "data": DEEP}'),
        ("send", '{"user": "alice", "data": DEEP}'),
        ("subscribe", '{"user": "alice", "channel": "board:deep", "info": DEEP}'),
        ("batch", '{"commands": [{"publish": {"channel": "board:deep", "data": DEEP}}]}'),
    ],
)
async def test_deeply_nested_data_is_a_bad_request_not_an_internal_error(
    server, caplog, method, body
):
    async with server.session.post(
        f"{server.api_url}/{method}",
        data=body.replace("DEEP", NESTED).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 200
        reply = await response.json()
    error = reply["replies"][0]["error"] if method == "batch" else reply["error"]
    assert error["code"] == 107, reply
    assert "cannot be encoded" in error["message"]
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    await server.publish("board:deep", {"still": "serving"})


async def test_unknown_method_is_404_with_code_104(server):
    reply = await server.api("fly", {})
    assert reply["_status"] == 404 and reply["error"]["code"] == 104


async def test_bad_params_of_each_method_are_errors(server):
    for method in (
        "subscribe",
        "unsubscribe",
        "disconnect",
        "refresh",
        "presence",
        "presence_stats",
        "history",
        "history_remove",
        "user_status",
        "broadcast",
        "batch",
    ):
        reply = await server.api(method, {"user": 5, "channel": [], "users": "x", "commands": 1})
        assert reply["_status"] == 200, (method, reply)
        assert reply["error"]["code"] in (107, 102), (method, reply)


async def test_user_status_for_never_seen_user(server):
    reply = await server.api("user_status", {"users": ["ghost"]})
    assert reply["result"]["statuses"] == [
        {"user": "ghost", "online": False, "status": "offline", "last_seen": 0, "last_active": 0}
    ]


async def test_get_user_status_through_cent(server, cent):
    from cent import GetUserStatusRequest

    result = await cent.get_user_status(GetUserStatusRequest(users=["nobody"]))
    assert [(s.user, s.online) for s in result.statuses] == [("nobody", 0)]


async def test_a_parallel_batch_answers_each_command_in_its_place(server):
    await parallel_batch(server)


async def test_a_parallel_batch_with_the_redis_engine(make_server, redis_config):
    await parallel_batch(await make_server(redis_config()))


async def parallel_batch(server) -> None:
    commands = [
        {"publish": {"channel": "board:p", "data": {"n": 1}}},
        {"publish": {"channel": "nope:1", "data": {}}},  # no namespace allows it
        {"publish": {"channel": "board:p"}},  # no data
        {"presence_stats": {"channel": "board:p"}},
        {"publish": {"channel": "board:p", "data": {"n": 2}}},
        {"history": {"channel": "board:p", "limit": 10}},
    ]
    reply = await server.api("batch", {"commands": commands, "parallel": True})
    replies = reply["replies"]
    assert [next(iter(r)) for r in replies] == [
        "publish",
        "error",
        "error",
        "presence_stats",
        "publish",
        "history",
    ]
    assert [replies[1]["error"]["code"], replies[2]["error"]["code"]] == [102, 107]
    first, second = replies[0]["publish"], replies[4]["publish"]
    assert (first["offset"], second["offset"]) == (1, 2)  # in the order given
    assert first["epoch"] == second["epoch"] != ""
    history = await server.api("history", {"channel": "board:p", "limit": 10})
    assert [p["data"] for p in history["result"]["publications"]] == [{"n": 1}, {"n": 2}]


# --- Centrifugo's b64data / b64info, subscribe expire_at and override, ?api_key= --------
def b64(value: object) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


async def test_b64data_in_publish_broadcast_and_send(server, cent):
    result = await cent.publish(
        PublishRequest(channel="board:b64", data=None, b64data=b64({"bin": 1}))
    )
    history = await cent.history(HistoryRequest(channel="board:b64", limit=10))
    assert [p.data for p in history.publications] == [{"bin": 1}]
    assert history.offset == result.offset
    await cent.broadcast(BroadcastRequest(channels=["board:b64"], data=None, b64data=b64("two")))
    history = await cent.history(HistoryRequest(channel="board:b64", limit=10, reverse=True))
    assert history.publications[0].data == "two"
    reply = await server.api("send", {"user": "alice", "b64data": b64([1, 2])})
    assert reply["result"] == {}


@pytest.mark.parametrize(
    ("b64data", "message"),
    [
        (base64.b64encode(b"\x00\x01\xfe").decode(), "does not decode to JSON"),
        ("not base64!", "not valid base64"),
        (42, "must be a base64 string"),
    ],
)
async def test_b64data_that_is_not_json_is_refused_at_publish(server, cent, b64data, message):
    reply = await server.api("publish", {"channel": "board:b64", "b64data": b64data})
    assert reply["error"]["code"] == 107 and message in reply["error"]["message"]
    history = await cent.history(HistoryRequest(channel="board:b64", limit=10))
    assert history.publications == []


async def test_api_subscribe_with_b64_fields_override_and_expire_at(server, clients):
    client, events = clients(server, "alice")
    await client.connect()
    await events.wait_for("connected")
    reply = await server.api(
        "subscribe",
        {
            "user": "alice",
            "channel": "board:api",
            "b64info": b64({"role": "guest"}),
            "b64data": b64({"welcome": True}),
            "override": {"presence": {"value": False}, "force_recovery": {"value": False}},
            "expire_at": int(time.time()) + 2,
        },
    )
    assert reply["result"] == {}
    subscribed = await events.wait_for("subscribed", lambda c: c.channel == "board:api")
    assert subscribed.data == {"welcome": True}
    assert subscribed.recoverable is False  # board forces recovery; the override does not
    presence = await server.api("presence", {"channel": "board:api"})
    assert presence["result"]["presence"] == {}  # presence overridden off
    [alice] = server.hub.users["alice"].clients.values()
    assert orjson.loads(alice.subs["board:api"].chan_info) == {"role": "guest"}
    # when expire_at passes, the subscription ends (the connection stays)
    gone = await events.wait_for("unsubscribed", lambda c: c.channel == "board:api", timeout=6)
    assert gone.channel == "board:api"
    assert events.of("disconnected") == [] and "board:api" not in alice.subs


@pytest.mark.parametrize(
    "params",
    [
        {"expire_at": 1},
        {"override": {"presence": True}},
        {"override": "x"},
        {"b64info": "AAEC"},
    ],
)
async def test_api_subscribe_refuses_bad_new_fields(server, params):
    reply = await server.api("subscribe", {"user": "alice", "channel": "board:x", **params})
    assert reply["error"]["code"] == 107, reply


async def test_api_refresh_replaces_the_connection_info(server, clients):
    client, events = clients(server, "alice")
    await client.connect()
    await events.wait_for("connected")
    reply = await server.api("refresh", {"user": "alice", "b64info": b64({"v": 2})})
    assert reply["result"] == {}
    [alice] = server.hub.users["alice"].clients.values()
    async with asyncio.timeout(5):
        while alice.conn_info is None:
            await asyncio.sleep(0.01)
    assert orjson.loads(alice.conn_info) == {"v": 2}


async def test_api_key_query_parameter_and_it_is_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    secret_looking = "wrong-key-that-must-not-be-logged"
    for key, status in ((API_KEY, 200), (secret_looking, 401)):
        async with server.session.post(f"{server.api_url}/info?api_key={key}", json={}) as response:
            assert response.status == status
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "API info refused" in logged
    assert API_KEY not in logged and secret_looking not in logged
