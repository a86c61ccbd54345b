"""Centrifugo's subscribe semantics, through the JSON codec and the hub (no sockets):
client-requested recovery and positioning, the reject-unrecovered flag (112), empty
epochs, cache recovery, tags filters, subscription types, capabilities, anonymous and
insecure permissions, personal channels. The SDK-facing halves run with the real
clients in test_centrifuge_python.py and test_centrifuge_js.py."""

from __future__ import annotations

import itertools

import orjson
import pytest

from pushgate.engine.base import Publication
from pushgate.hub.hub import Hub
from pushgate.protocol.centrifugo.session import CentrifugoSession
from tests.hub import test_hub
from tests.hub.test_hub import FakeWriter, connect, settle, sub_token, subscribe, token

#: the hub fixture of test_hub (a real MemoryEngine, recording sinks)
make_hub = test_hub.make_hub

NAMESPACES = """
[[namespace]]
name = "opt"
history_size = 100
history_ttl = "600s"
allow_recovery = true
allow_positioning = true
allow_subscribe_for_client = true
[[namespace]]
name = "plain"
history_size = 100
history_ttl = "600s"
allow_subscribe_for_client = true
[[namespace]]
name = "hist"
history_size = 100
history_ttl = "600s"
allow_subscribe_for_client = true
allow_history_for_subscriber = true
[[namespace]]
name = "small"
history_size = 2
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
[[namespace]]
name = "cache"
history_size = 10
history_ttl = "600s"
force_recovery = true
force_recovery_mode = "cache"
allow_subscribe_for_client = true
allow_tags_filter = true
[[namespace]]
name = "autocache"
history_size = 1
history_ttl = "600s"
force_recovery = true
recovery_mode = "cache"
auto_cache_recover = true
allow_subscribe_for_client = true
[[namespace]]
name = "tagged"
history_size = 100
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
allow_tags_filter = true
[[namespace]]
name = "capped"
presence = true
join_leave = true
history_size = 10
history_ttl = "600s"
"""

REJECT_UNRECOVERED = 2


class Wire:
    """One Centrifugo JSON connection to the hub: commands in, decoded replies out."""

    def __init__(self, hub: Hub) -> None:
        self.writer = FakeWriter()
        self.session = CentrifugoSession(hub, self.writer, "test")
        self._ids = itertools.count(1)

    async def call(self, method: str, params: dict) -> dict:
        command_id = next(self._ids)
        mark = len(self.writer.written)
        await self.session.handle_frame(orjson.dumps({"id": command_id, method: params}))
        for frame in self.writer.written[mark:]:
            reply = orjson.loads(frame)
            if reply.get("id") == command_id:
                return reply
        raise AssertionError(f"no reply to {method}: {self.writer.written[mark:]}")

    def pushes(self, kind: str, channel: str | None = None) -> list[dict]:
        out = []
        for frame in self.writer.written:
            push = orjson.loads(frame).get("push")
            if push and kind in push and channel in (None, push.get("channel")):
                out.append(push[kind])
        return out


@pytest.fixture
async def hub(make_hub) -> Hub:
    return await make_hub(NAMESPACES)


async def wire(hub: Hub, user: str = "alice", **claims) -> Wire:
    w = Wire(hub)
    reply = await w.call("connect", {"token": token(user, **claims)} if user is not None else {})
    assert "connect" in reply, reply
    return w


async def publish(hub: Hub, channel: str, data: object, tags: dict | None = None):
    return await hub.publish(channel, orjson.dumps(data), tags=tags)


# --- recovery: empty epoch, reject unrecovered ----------------------------------------
async def test_an_empty_epoch_matches_the_current_stream(hub):
    for n in range(1, 4):
        await publish(hub, "small:1", n)
    w = await wire(hub)
    reply = await w.call("subscribe", {"channel": "small:1", "recover": True, "offset": 2})
    result = reply["subscribe"]
    assert result["recovered"] is True and result["was_recovering"] is True
    assert [p["data"] for p in result["publications"]] == [3]


async def test_reject_unrecovered_flag_answers_112_and_leaves_nothing_behind(hub):
    for n in range(1, 6):
        position = await publish(hub, "small:1", n)
    w = await wire(hub)
    stale = {"channel": "small:1", "recover": True, "offset": 1, "epoch": position.epoch}
    reply = await w.call("subscribe", {**stale, "flag": REJECT_UNRECOVERED | 1})
    assert reply["error"] == {"code": 112, "message": "unrecoverable position"}
    assert "small:1" not in w.session.client.subs and "small:1" not in hub.channels
    # another epoch is refused the same way
    other = {**stale, "offset": 5, "epoch": "another-epoch", "flag": REJECT_UNRECOVERED}
    assert (await w.call("subscribe", other))["error"]["code"] == 112
    # without the flag: subscribed, honestly not recovered
    result = (await w.call("subscribe", stale))["subscribe"]
    assert result["was_recovering"] is True and "recovered" not in result
    assert "publications" not in result


async def test_reject_unrecovered_flag_does_not_refuse_a_recovery(hub):
    for n in range(1, 4):
        position = await publish(hub, "small:1", n)
    w = await wire(hub)
    request = {"channel": "small:1", "recover": True, "offset": 2, "epoch": position.epoch}
    result = (await w.call("subscribe", {**request, "flag": REJECT_UNRECOVERED}))["subscribe"]
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == [3]


# --- recoverable / positioned asked for by the client ---------------------------------
@pytest.mark.parametrize(
    ("channel", "granted"),
    [("opt:1", True), ("hist:1", True), ("plain:1", False)],
    ids=["allow_recovery", "history-access", "neither"],
)
async def test_client_requested_recovery_needs_allow_recovery_or_history(hub, channel, granted):
    w = await wire(hub)
    result = (await w.call("subscribe", {"channel": channel, "recoverable": True}))["subscribe"]
    assert result.get("recoverable", False) is granted
    assert result.get("positioned", False) is granted  # recovery implies positioning
    position = await publish(hub, channel, "missed")
    await w.call("unsubscribe", {"channel": channel})
    again = {"channel": channel, "recoverable": True, "recover": True, "epoch": position.epoch}
    result = (await w.call("subscribe", {**again, "offset": position.offset - 1}))["subscribe"]
    if granted:
        assert result["recovered"] is True
        assert [p["data"] for p in result["publications"]] == ["missed"]
    else:
        assert "recovered" not in result and "was_recovering" not in result


async def test_client_requested_positioning(hub):
    w = await wire(hub)
    result = (await w.call("subscribe", {"channel": "opt:1", "positioned": True}))["subscribe"]
    assert result["positioned"] is True and "recoverable" not in result
    assert "epoch" in result
    plain = (await w.call("subscribe", {"channel": "plain:1", "positioned": True}))["subscribe"]
    assert "positioned" not in plain and "epoch" not in plain


async def test_a_gap_resubscribes_positioned_subscribers_only(hub):
    positioned, positioned_sink = await connect(hub, "alice")
    await subscribe(positioned, "opt:1", positioned=True)
    casual, casual_sink = await connect(hub, "bob")
    await subscribe(casual, "opt:1")
    position = await publish(hub, "opt:1", 1)
    hub.handle_publication("opt:1", Publication(b'"after a gap"', offset=5), position.epoch)
    await settle()
    assert positioned_sink.kinds("unsubscribe") == [
        ("unsubscribe", "opt:1", 2500, "insufficient state")
    ]
    assert [p.data for p in positioned_sink.pubs()] == [b"1"]
    # at most once for the others: the publication after the gap still reaches them
    assert [p.data for p in casual_sink.pubs()] == [b"1", b'"after a gap"']
    assert casual_sink.kinds("unsubscribe") == [] and "opt:1" in casual.subs


# --- cache recovery mode --------------------------------------------------------------
async def test_cache_mode_hands_back_the_latest_publication(hub):
    for n in range(1, 4):
        position = await publish(hub, "cache:1", {"n": n})
    w = await wire(hub)
    first = (await w.call("subscribe", {"channel": "cache:1", "recover": True}))["subscribe"]
    assert first["recovered"] is True and first["was_recovering"] is True
    assert [p["data"] for p in first["publications"]] == [{"n": 3}]
    assert (first["offset"], first["epoch"]) == (position.offset, position.epoch)
    await w.call("unsubscribe", {"channel": "cache:1"})
    # a client that already holds the latest gets nothing again
    current = {"recover": True, "offset": position.offset, "epoch": position.epoch}
    again = (await w.call("subscribe", {"channel": "cache:1", **current}))["subscribe"]
    assert again["recovered"] is True and "publications" not in again
    await w.call("unsubscribe", {"channel": "cache:1"})
    # an old position (even beyond history) is no problem: the latest is the state
    old = {"recover": True, "offset": 1, "epoch": "gone"}
    stale = (await w.call("subscribe", {"channel": "cache:1", **old}))["subscribe"]
    assert [p["data"] for p in stale["publications"]] == [{"n": 3}]


async def test_cache_mode_on_an_empty_channel_is_not_recovered(hub):
    w = await wire(hub)
    result = (await w.call("subscribe", {"channel": "cache:empty", "recover": True}))["subscribe"]
    assert result["was_recovering"] is True and "recovered" not in result


async def test_cache_mode_with_a_filter_hands_back_the_latest_match(hub):
    await publish(hub, "cache:f", "aapl-1", {"ticker": "AAPL"})
    await publish(hub, "cache:f", "aapl-2", {"ticker": "AAPL"})
    await publish(hub, "cache:f", "msft", {"ticker": "MSFT"})
    w = await wire(hub)
    tf = {"key": "ticker", "cmp": "eq", "val": "AAPL"}
    result = await w.call("subscribe", {"channel": "cache:f", "recover": True, "tf": tf})
    assert [p["data"] for p in result["subscribe"]["publications"]] == ["aapl-2"]


async def test_auto_cache_recover_needs_no_recover_flag(hub):
    await publish(hub, "autocache:1", "old")
    await publish(hub, "autocache:1", "latest")
    w = await wire(hub)
    result = (await w.call("subscribe", {"channel": "autocache:1"}))["subscribe"]
    assert result["was_recovering"] is True and result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == ["latest"]
    # and for server-side subscriptions, which cannot ask
    server_side = await wire(hub, "bob", channels=["autocache:1"])
    connect_reply = server_side.writer.written[0]
    sub_result = orjson.loads(connect_reply)["connect"]["subs"]["autocache:1"]
    assert [p["data"] for p in sub_result["publications"]] == ["latest"]


# --- tags filter ----------------------------------------------------------------------
async def test_tags_filter_delivers_only_matching_publications_encoded_once(hub):
    filtered = await wire(hub, "alice")
    tf = {
        "op": "and",
        "nodes": [
            {"key": "ticker", "cmp": "in", "vals": ["AAPL", "MSFT"]},
            {"key": "price", "cmp": "gte", "val": "100"},
        ],
    }
    assert "subscribe" in await filtered.call("subscribe", {"channel": "tagged:1", "tf": tf})
    everyone = await wire(hub, "bob")
    await everyone.call("subscribe", {"channel": "tagged:1"})
    for data, tags in [
        ("cheap", {"ticker": "AAPL", "price": "99.5"}),
        ("match", {"ticker": "AAPL", "price": "150.25"}),
        ("other", {"ticker": "GOOG", "price": "150"}),
        ("untagged", None),
        ("nan", {"ticker": "MSFT", "price": "n/a"}),
        ("match2", {"ticker": "MSFT", "price": "1000"}),
    ]:
        await publish(hub, "tagged:1", data, tags)
    assert [p["data"] for p in filtered.pushes("pub")] == ["match", "match2"]
    assert len(everyone.pushes("pub")) == 6
    # the filtered subscriber got the very bytes everyone else did: no encoding of its own
    shared = {bytes(f) for f in everyone.writer.written if b'"pub"' in f}
    assert all(f in shared for f in filtered.writer.written if b'"pub"' in f)
    for pub in (await hub.engine.history("tagged:1", limit=-1)).publications:
        assert len(pub.cache) <= 1


async def test_tags_filter_applies_to_recovery(hub):
    position = await publish(hub, "tagged:r", "before")
    await publish(hub, "tagged:r", "a", {"k": "a"})
    await publish(hub, "tagged:r", "b", {"k": "b"})
    w = await wire(hub)
    request = {"channel": "tagged:r", "recover": True, "offset": position.offset}
    request |= {"epoch": position.epoch, "tf": {"key": "k", "cmp": "eq", "val": "b"}}
    result = (await w.call("subscribe", request))["subscribe"]
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == ["b"]


@pytest.mark.parametrize(
    ("channel", "tf", "code"),
    [
        ("plain:1", {"key": "a", "cmp": "eq", "val": "1"}, 107),  # not allowed here
        ("tagged:1", {"key": "a", "cmp": "eq"}, 107),  # eq without val
        ("tagged:1", {"cmp": "eq", "val": "1"}, 107),  # no key
        ("tagged:1", {"key": "a", "cmp": "in", "val": "1"}, 107),  # in takes vals
        ("tagged:1", {"op": "not", "nodes": []}, 107),
        ("tagged:1", {"op": "xor", "nodes": [{"key": "a", "cmp": "ex"}]}, 107),
        ("tagged:1", {"key": "a", "cmp": "like", "val": "1"}, 107),
        ("tagged:1", {"op": "or", "nodes": [{"key": "a", "cmp": "ex"}] * 64}, 106),
    ],
)
async def test_bad_tags_filters_are_refused(hub, channel, tf, code):
    w = await wire(hub)
    reply = await w.call("subscribe", {"channel": channel, "tf": tf})
    assert reply["error"]["code"] == code, reply
    assert channel not in w.session.client.subs
    assert not w.session.client.closed


async def test_a_tf_that_is_not_an_object_is_a_bad_request_disconnect(hub):
    w = await wire(hub)
    await w.session.handle_frame(b'{"id":9,"subscribe":{"channel":"tagged:1","tf":"ticker"}}')
    assert w.writer.close_args == (3501, "bad request")


# --- subscription types ---------------------------------------------------------------
@pytest.mark.parametrize(("kind", "name"), [(1, "map"), (3, "map_users"), (4, "shared_poll")])
async def test_subscription_types_other_than_stream_are_refused(hub, kind, name):
    w = await wire(hub)
    reply = await w.call("subscribe", {"channel": "plain:1", "type": kind})
    assert reply["error"]["code"] == 108
    assert name in reply["error"]["message"]
    assert "plain:1" not in w.session.client.subs and "plain:1" not in hub.channels


# --- capabilities ---------------------------------------------------------------------
async def test_connection_caps_grant_what_the_namespace_does_not(hub):
    caps = [
        {"channels": ["capped:news"], "allow": ["sub"]},
        {"channels": ["capped:room_*"], "match": "wildcard", "allow": ["sub", "pub", "prs"]},
        {"channels": ["^capped:h[0-9]+$"], "match": "regex", "allow": ["sub", "hst"]},
    ]
    w = await wire(hub, "alice", caps=caps)
    assert "subscribe" in await w.call("subscribe", {"channel": "capped:news"})
    assert (await w.call("publish", {"channel": "capped:news", "data": 1}))["error"]["code"] == 103
    assert (await w.call("presence", {"channel": "capped:news"}))["error"]["code"] == 103
    assert "subscribe" in await w.call("subscribe", {"channel": "capped:room_7"})
    assert "publish" in await w.call("publish", {"channel": "capped:room_7", "data": 1})
    assert "presence_stats" in await w.call("presence_stats", {"channel": "capped:room_7"})
    request = {"channel": "capped:h42", "recoverable": True}
    result = (await w.call("subscribe", request))["subscribe"]
    assert result["recoverable"] is True  # hst: the client may ask for recovery
    assert "history" in await w.call("history", {"channel": "capped:h42"})
    assert (await w.call("subscribe", {"channel": "capped:h42x"}))["error"]["code"] == 103
    other = await wire(hub, "bob")
    assert (await other.call("subscribe", {"channel": "capped:news"}))["error"]["code"] == 103


async def test_malformed_caps_are_an_invalid_token(hub):
    w = Wire(hub)
    bad = token("alice", caps=[{"channels": ["x"], "match": "glob", "allow": ["sub"]}])
    await w.session.handle_frame(orjson.dumps({"id": 1, "connect": {"token": bad}}))
    assert w.writer.close_args == (3500, "invalid token")


async def test_refresh_with_fewer_caps_ends_subscriptions_only_caps_allowed(hub):
    w = await wire(hub, "alice", caps=[{"channels": ["capped:a", "capped:b"], "allow": ["sub"]}])
    await w.call("subscribe", {"channel": "capped:a"})
    await w.call("subscribe", {"channel": "capped:b"})
    narrower = token("alice", caps=[{"channels": ["capped:a"], "allow": ["sub"]}])
    assert "refresh" in await w.call("refresh", {"token": narrower})
    assert w.pushes("unsubscribe", "capped:b") == [{"code": 2000, "reason": "server unsubscribe"}]
    assert set(w.session.client.subs) == {"capped:a"}


async def test_subscription_token_allow_override_and_data(hub):
    w = await wire(hub)
    sub = sub_token(
        "alice",
        "capped:t",
        allow=["pub", "hst"],
        data={"welcome": True},
        override={"presence": {"value": False}, "force_recovery": {"value": True}},
    )
    result = (await w.call("subscribe", {"channel": "capped:t", "token": sub}))["subscribe"]
    assert result["data"] == {"welcome": True}
    assert result["recoverable"] is True  # override force_recovery
    assert "publish" in await w.call("publish", {"channel": "capped:t", "data": 1})
    assert "history" in await w.call("history", {"channel": "capped:t"})
    # presence overridden off for this subscription: it is not counted
    assert await hub.engine.presence("capped:t") == {}
    assert (await w.call("presence", {"channel": "capped:t"}))["error"]["code"] == 103


async def test_subscription_token_for_another_connection_is_refused(hub):
    w = await wire(hub)
    sub = sub_token("alice", "capped:t", client="some-other-client-id")
    assert (await w.call("subscribe", {"channel": "capped:t", "token": sub}))["error"][
        "code"
    ] == 103


async def test_b64info_in_tokens(hub):
    w = await wire(hub, "alice", b64info="eyJuYW1lIjoiQWxpY2UifQ==")  # {"name":"Alice"}
    assert orjson.loads(w.session.client.conn_info) == {"name": "Alice"}
    broken = Wire(hub)
    bad = token("alice", b64info="AAEC")  # bytes 00 01 02: not JSON
    await broken.session.handle_frame(orjson.dumps({"id": 1, "connect": {"token": bad}}))
    assert broken.writer.close_args == (3500, "invalid token")


# --- anonymous and insecure -----------------------------------------------------------
ANONYMOUS = """
[[namespace]]
name = "lobby"
presence = true
history_size = 10
history_ttl = "60s"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
[[namespace]]
name = "open"
presence = true
history_size = 10
history_ttl = "60s"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_subscriber = true
allow_publish_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
allow_history_for_client = true
allow_history_for_anonymous = true
"""


async def test_anonymous_clients_need_the_for_anonymous_options(make_hub):
    hub = await make_hub(ANONYMOUS, client__anonymous=True)
    anon = Wire(hub)
    assert "connect" in await anon.call("connect", {})
    for channel, allowed in (("lobby:1", False), ("open:1", True)):
        assert "subscribe" in await anon.call("subscribe", {"channel": channel})
        for method, params in (
            ("publish", {"channel": channel, "data": 1}),
            ("presence", {"channel": channel}),
            ("presence_stats", {"channel": channel}),
            ("history", {"channel": channel}),
        ):
            reply = await anon.call(method, params)
            assert (method in reply) is allowed, (channel, method, reply)
            if not allowed:
                assert reply["error"]["code"] == 103
    # for_client with for_anonymous: even without subscribing
    assert "presence" in await anon.call("presence", {"channel": "open:2"})
    # an authenticated subscriber of the lobby still may
    alice = await wire(hub, "alice")
    await alice.call("subscribe", {"channel": "lobby:1"})
    assert "publish" in await alice.call("publish", {"channel": "lobby:1", "data": 2})


async def test_insecure_mode_allows_everything_but_reserved_channels(make_hub):
    hub = await make_hub(client__insecure=True)
    w = Wire(hub)
    assert "connect" in await w.call("connect", {})
    assert "subscribe" in await w.call("subscribe", {"channel": "private:x"})
    assert "publish" in await w.call("publish", {"channel": "private:x", "data": 1})
    assert "presence" in await w.call("presence", {"channel": "private:x"})
    assert "history" in await w.call("history", {"channel": "private:x"})
    assert "publish" in await w.call("publish", {"channel": "notifications:other", "data": 1})
    reply = await w.call("subscribe", {"channel": "__pushgate.admin"})
    assert reply["error"]["code"] == 103
    # a token still names the user, but never expires the connection
    authed = Wire(hub)
    result = (await authed.call("connect", {"token": token("alice", ttl=60)}))["connect"]
    assert "expires" not in result and authed.session.client.user == "alice"


# --- personal channel -----------------------------------------------------------------
PERSONAL = """
[[namespace]]
name = "personal"
presence = true
history_size = 10
history_ttl = "60s"
force_recovery = true
"""


async def test_personal_channel_and_single_connection(make_hub):
    hub = await make_hub(
        PERSONAL,
        client__subscribe_to_user_personal_channel=True,
        client__personal_channel_namespace="personal",
        client__personal_channel_single_connection=True,
    )
    first, first_sink = await connect(hub, "alice")
    assert set(first.subs) == {"personal:#alice"}
    await hub.publish("personal:#alice", b'"hello"')
    assert [p.data for p in first_sink.pubs("personal:#alice")] == [b'"hello"']
    other, _ = await connect(hub, "bob")
    assert set(other.subs) == {"personal:#bob"}
    second, _ = await connect(hub, "alice")
    await settle()
    assert [d.code for d in first_sink.closed_with] == [3504]
    assert not second.closing and set(second.subs) == {"personal:#alice"}
