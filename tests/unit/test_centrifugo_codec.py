"""The Centrifugo JSON codec without sockets: commands as centrifuge-js 5 sends them,
bad input that must become ProtocolError, and the exact shape of replies and pushes."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.engine.base import ClientInfo, Publication
from pushgate.hub.errors import (
    DISCONNECT_FORCE_NO_RECONNECT,
    DISCONNECT_NO_PONG,
    ErrorInternal,
    ErrorUnknownChannel,
    HubError,
)
from pushgate.hub.results import ConnectResult, SubscribeResult
from pushgate.protocol.centrifugo import replies
from pushgate.protocol.centrifugo.commands import (
    ChannelRequest,
    Command,
    ConnectRequest,
    DataRequest,
    HistoryRequest,
    ProtocolError,
    PublishRequest,
    RefreshRequest,
    SubRefreshRequest,
    SubscribeRequest,
    UnknownRequest,
    decode_commands,
)


def one(frame: bytes | str) -> Command:
    commands = decode_commands(frame)
    assert len(commands) == 1
    return commands[0]


def frame(*objects: object) -> bytes:
    return b"\n".join(orjson.dumps(o) for o in objects)


# --- decoding: every command kind, as centrifuge-js 5 builds it -----------------------
def test_connect_with_token_name_version_data_and_subs_recover_map():
    cmd = one(
        frame(
            {
                "id": 1,
                "connect": {
                    "token": "tok.en.sig",
                    "data": {"device": "web", "n": [1, 2]},
                    "name": "js",
                    "version": "5.8.0",
                    "headers": {"x": "y"},  # unknown fields are ignored
                    "subs": {
                        "personal:#alice": {"recover": True, "offset": 17, "epoch": "AbCd"},
                        "team:7": {"recover": True},
                    },
                },
            }
        )
    )
    assert isinstance(cmd, ConnectRequest)
    assert (cmd.id, cmd.method, cmd.is_pong) == (1, "connect", False)
    assert cmd.token == "tok.en.sig"
    assert cmd.name == "js"
    assert cmd.version == "5.8.0"
    assert orjson.loads(cmd.data) == {"device": "web", "n": [1, 2]}
    assert cmd.subs == {
        "personal:#alice": {"recover": True, "offset": 17, "epoch": "AbCd"},
        "team:7": {"recover": True, "offset": 0, "epoch": ""},
    }


def test_connect_without_anything_is_an_anonymous_connect():
    cmd = one(b'{"id":1,"connect":{}}')
    assert isinstance(cmd, ConnectRequest)
    assert (cmd.token, cmd.name, cmd.data, cmd.subs) == ("", "", None, {})


def test_connect_offset_may_be_a_quoted_uint64():
    cmd = one(b'{"id":1,"connect":{"subs":{"a":{"recover":true,"offset":"12","epoch":"e"}}}}')
    assert cmd.subs["a"]["offset"] == 12


def test_subscribe_with_recovery_and_join_leave():
    cmd = one(
        frame(
            {
                "id": 2,
                "subscribe": {
                    "channel": "board:42",
                    "token": "sub.tok.en",
                    "recover": True,
                    "offset": 5,
                    "epoch": "xyz",
                    "join_leave": True,
                    "positioned": True,
                    "recoverable": True,
                    "flag": 1,
                    "data": {"hello": "world"},
                },
            }
        )
    )
    assert isinstance(cmd, SubscribeRequest)
    assert cmd.id == 2 and cmd.method == "subscribe"
    assert cmd.channel == "board:42"
    assert cmd.token == "sub.tok.en"
    assert cmd.recover is True and cmd.offset == 5 and cmd.epoch == "xyz"
    assert cmd.join_leave is True and cmd.positioned is True and cmd.recoverable is True
    assert orjson.loads(cmd.data) == {"hello": "world"}


def test_subscribe_minimal_has_false_defaults():
    cmd = one(b'{"id":3,"subscribe":{"channel":"board:1"}}')
    assert isinstance(cmd, SubscribeRequest)
    assert (cmd.recover, cmd.offset, cmd.epoch, cmd.join_leave, cmd.token, cmd.data) == (
        False,
        0,
        "",
        False,
        "",
        None,
    )


def test_publish_keeps_nested_json_data():
    data = {"card": {"id": 7, "moved": ["todo", "done"], "by": None, "ok": True, "w": 1.5}}
    cmd = one(frame({"id": 4, "publish": {"channel": "board:42", "data": data}}))
    assert isinstance(cmd, PublishRequest)
    assert cmd.channel == "board:42"
    assert isinstance(cmd.data, bytes)
    assert orjson.loads(cmd.data) == data


@pytest.mark.parametrize("data", ["text", 0, None, [], False])
def test_publish_data_of_any_json_type(data):
    cmd = one(frame({"id": 4, "publish": {"channel": "c", "data": data}}))
    assert orjson.loads(cmd.data) == data


def test_history_with_since_limit_reverse():
    cmd = one(
        frame(
            {
                "id": 5,
                "history": {
                    "channel": "board:42",
                    "since": {"offset": 10, "epoch": "ep"},
                    "limit": 20,
                    "reverse": True,
                },
            }
        )
    )
    assert isinstance(cmd, HistoryRequest)
    assert (cmd.channel, cmd.since, cmd.limit, cmd.reverse) == ("board:42", (10, "ep"), 20, True)


def test_history_without_options_and_with_since_offset_only():
    cmd = one(b'{"id":5,"history":{"channel":"c"}}')
    assert (cmd.since, cmd.limit, cmd.reverse) == (None, 0, False)
    cmd = one(b'{"id":5,"history":{"channel":"c","since":{"offset":3},"limit":-1}}')
    assert cmd.since == (3, "")
    assert cmd.limit == -1


@pytest.mark.parametrize("method", ["presence", "presence_stats", "unsubscribe"])
def test_channel_only_commands(method):
    cmd = one(frame({"id": 6, method: {"channel": "board:42"}}))
    assert isinstance(cmd, ChannelRequest)
    assert (cmd.id, cmd.method, cmd.channel) == (6, method, "board:42")


def test_refresh_and_sub_refresh():
    cmd = one(b'{"id":7,"refresh":{"token":"new.tok.en"}}')
    assert isinstance(cmd, RefreshRequest)
    assert (cmd.method, cmd.token) == ("refresh", "new.tok.en")
    cmd = one(b'{"id":8,"sub_refresh":{"channel":"private:1","token":"s.t.k"}}')
    assert isinstance(cmd, SubRefreshRequest)
    assert (cmd.method, cmd.channel, cmd.token) == ("sub_refresh", "private:1", "s.t.k")


def test_rpc_with_method_and_data():
    cmd = one(b'{"id":9,"rpc":{"method":"getCard","data":{"id":7}}}')
    assert isinstance(cmd, DataRequest)
    assert (cmd.method, cmd.rpc_method) == ("rpc", "getCard")
    assert orjson.loads(cmd.data) == {"id": 7}


def test_send_needs_no_id():
    cmd = one(b'{"send":{"data":{"typing":true}}}')
    assert isinstance(cmd, DataRequest)
    assert (cmd.id, cmd.method) == (0, "send")
    assert orjson.loads(cmd.data) == {"typing": True}


def test_ping_command():
    cmd = one(b'{"id":10,"ping":{}}')
    assert (cmd.id, cmd.method, cmd.is_pong) == (10, "ping", False)


def test_empty_object_is_a_pong():
    cmd = one(b"{}")
    assert cmd.is_pong is True
    assert cmd.id == 0


def test_unknown_method_with_id_is_unknown_request():
    cmd = one(b'{"id":11,"frobnicate":{}}')
    assert isinstance(cmd, UnknownRequest)
    assert (cmd.id, cmd.method) == (11, "frobnicate")


def test_several_newline_delimited_commands_in_one_frame_in_order():
    raw = frame(
        {"id": 1, "connect": {"token": "t"}},
        {"id": 2, "subscribe": {"channel": "a"}},
        {},
        {"id": 3, "subscribe": {"channel": "b"}},
        {"send": {"data": 1}},
    )
    commands = decode_commands(raw)
    assert [c.method for c in commands] == ["connect", "subscribe", "pong", "subscribe", "send"]
    assert [c.id for c in commands] == [1, 2, 0, 3, 0]
    assert [getattr(c, "channel", None) for c in commands[1:4]] == ["a", None, "b"]


def test_str_frame_and_blank_lines_and_crlf():
    commands = decode_commands('{"id":1,"ping":{}}\r\n\n{"id":2,"ping":{}}\n')
    assert [c.id for c in commands] == [1, 2]


# --- decoding: bad input is a ProtocolError, never anything else ----------------------
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n  \n",
        b"{",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"[{}]",
        b'"connect"',
        b"42",
        b"null",
        b'{"id":1,"ping":{}}\n{broken',
        # wrong types
        b'{"id":"1","ping":{}}',
        b'{"id":1.0,"ping":{}}',
        b'{"id":true,"ping":{}}',
        b'{"id":-1,"ping":{}}',
        b'{"id":4294967296,"ping":{}}',
        b'{"id":1,"connect":[]}',
        b'{"id":1,"connect":"token"}',
        b'{"id":1,"connect":{"token":5}}',
        b'{"id":1,"connect":{"subs":[1]}}',
        b'{"id":1,"connect":{"subs":{"a":1}}}',
        b'{"id":1,"connect":{"subs":{"a":{"recover":"yes"}}}}',
        b'{"id":1,"connect":{"subs":{"a":{"offset":-1.5}}}}',
        b'{"id":1,"subscribe":{"channel":1}}',
        b'{"id":1,"subscribe":{"channel":"a","recover":1}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":"ten"}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":1.5}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":true}}',
        b'{"id":1,"subscribe":{"channel":"a","offset":18446744073709551616}}',
        b'{"id":1,"subscribe":{"channel":"a","epoch":{}}}',
        b'{"id":1,"history":{"channel":"a","since":[]}}',
        b'{"id":1,"history":{"channel":"a","since":{"offset":"x"}}}',
        b'{"id":1,"history":{"channel":"a","reverse":"true"}}',
        b'{"id":1,"history":{"channel":"a","limit":"5x"}}',
        b'{"id":1,"rpc":{"method":7}}',
        # missing channel
        b'{"id":1,"subscribe":{}}',
        b'{"id":1,"subscribe":{"channel":""}}',
        b'{"id":1,"publish":{"data":1}}',
        b'{"id":1,"unsubscribe":{}}',
        b'{"id":1,"presence":{}}',
        b'{"id":1,"presence_stats":{"channel":null}}',
        b'{"id":1,"history":{}}',
        b'{"id":1,"sub_refresh":{"token":"t"}}',
        # publish without data
        b'{"id":1,"publish":{"channel":"a"}}',
        # a command that needs a reply, without id
        b'{"connect":{}}',
        b'{"subscribe":{"channel":"a"}}',
        b'{"id":0,"publish":{"channel":"a","data":1}}',
        b'{"rpc":{"method":"m"}}',
        b'{"ping":{}}',
        b'{"history":{"channel":"a"}}',
        # JSON that is not representable
        b'{"id":1,"publish":{"channel":"a","data":1e400}}',
        b'{"id":1,"publish":{"channel":"a","data":"\\ud800"}}',
        b'{"id":1,"publish":{"channel":"a","data":' + b"[" * 600 + b"]" * 600 + b"}}",
    ],
)
def test_bad_input_is_protocol_error(raw):
    with pytest.raises(ProtocolError):
        decode_commands(raw)


def test_str_frame_with_lone_surrogate_is_protocol_error():
    with pytest.raises(ProtocolError):
        decode_commands('{"id":1,"publish":{"channel":"a","data":"\ud800"}}')


METHOD_NAMES = [
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
    "other",
]
KEYS = [
    "channel",
    "token",
    "data",
    "name",
    "version",
    "subs",
    "recover",
    "offset",
    "epoch",
    "join_leave",
    "since",
    "limit",
    "reverse",
    "method",
    "id",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
params_like = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4) | json_values
commands_like = st.builds(
    lambda cid, method, params, with_id: ({"id": cid} if with_id else {}) | {method: params},
    st.integers(min_value=-2, max_value=2**33) | json_values,
    st.sampled_from(METHOD_NAMES),
    params_like,
    st.booleans(),
)


def _decode_or_protocol_error(raw: bytes | str) -> None:
    try:
        commands = decode_commands(raw)
    except ProtocolError:
        return
    assert commands
    assert all(isinstance(c, Command) for c in commands)
    for c in commands:
        assert type(c.id) is int and 0 <= c.id < 2**32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_arbitrary_bytes(raw):
    _decode_or_protocol_error(raw)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_property_arbitrary_json_values(value):
    _decode_or_protocol_error(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(st.lists(commands_like, min_size=1, max_size=3))
def test_property_command_shaped_objects(objs):
    raw = "\n".join(json.dumps(o) for o in objs)
    _decode_or_protocol_error(raw.encode())
    _decode_or_protocol_error(raw)


# --- encoding -------------------------------------------------------------------------
def test_pub_push_embeds_data_as_raw_json():
    pub = Publication(b'{"card":7,"col":"done"}', offset=12)
    out = replies.pub_push("board:42", pub)
    assert orjson.loads(out) == {
        "push": {"channel": "board:42", "pub": {"data": {"card": 7, "col": "done"}, "offset": 12}}
    }
    # verbatim: the exact bytes appear in the output, not a quoted string
    assert b'"data":{"card":7,"col":"done"}' in out


def test_pub_push_keeps_data_bytes_verbatim_even_with_odd_spacing():
    data = b'{ "a" : [1, 2.50, "x"] }'
    out = replies.pub_push("c", Publication(data))
    assert data in out
    assert orjson.loads(out)["push"]["pub"]["data"] == {"a": [1, 2.5, "x"]}


def test_pub_push_without_offset_and_with_info_and_tags():
    info = ClientInfo("cid", "alice", conn_info=b'{"name":"Alice"}', chan_info=b'{"role":"x"}')
    out = orjson.loads(replies.pub_push("c", Publication(b"1", info=info, tags={"k": "v"})))
    pub = out["push"]["pub"]
    assert "offset" not in pub
    assert pub["data"] == 1
    assert pub["info"] == {
        "client": "cid",
        "user": "alice",
        "conn_info": {"name": "Alice"},
        "chan_info": {"role": "x"},
    }
    assert pub["tags"] == {"k": "v"}


def test_join_and_leave_pushes():
    info = ClientInfo("cid", "bob")
    assert orjson.loads(replies.join_push("board:1", info)) == {
        "push": {"channel": "board:1", "join": {"info": {"client": "cid", "user": "bob"}}}
    }
    assert orjson.loads(replies.leave_push("board:1", info)) == {
        "push": {"channel": "board:1", "leave": {"info": {"client": "cid", "user": "bob"}}}
    }


def test_unsubscribe_push():
    assert orjson.loads(replies.unsubscribe_push("board:1", 2500, "insufficient state")) == {
        "push": {
            "channel": "board:1",
            "unsubscribe": {"code": 2500, "reason": "insufficient state"},
        }
    }


def test_subscribe_push_has_no_publications_and_omits_zero_values():
    result = SubscribeResult(
        recoverable=True, epoch="ep", offset=3, publications=[Publication(b"1", offset=3)]
    )
    out = orjson.loads(replies.subscribe_push("board:1", result))
    assert out == {
        "push": {
            "channel": "board:1",
            "subscribe": {"recoverable": True, "epoch": "ep", "offset": 3},
        }
    }
    assert orjson.loads(replies.subscribe_push("c", SubscribeResult(data=b'{"a":1}'))) == {
        "push": {"channel": "c", "subscribe": {"data": {"a": 1}}}
    }


def test_message_push_embeds_data():
    out = replies.message_push(b'{"text":"hi"}')
    assert orjson.loads(out) == {"push": {"message": {"data": {"text": "hi"}}}}
    assert b'{"text":"hi"}' in out


def test_refresh_push():
    assert orjson.loads(replies.refresh_push(True, 60)) == {
        "push": {"refresh": {"expires": True, "ttl": 60}}
    }
    assert orjson.loads(replies.refresh_push(False, 0)) == {"push": {"refresh": {}}}


def test_disconnect_push_says_whether_to_reconnect():
    assert orjson.loads(replies.disconnect_push(DISCONNECT_NO_PONG)) == {
        "push": {"disconnect": {"code": 3012, "reason": "no pong", "reconnect": True}}
    }
    assert orjson.loads(replies.disconnect_push(DISCONNECT_FORCE_NO_RECONNECT)) == {
        "push": {"disconnect": {"code": 3503, "reason": "force disconnect", "reconnect": False}}
    }


def test_error_reply():
    assert orjson.loads(replies.error_reply(4, ErrorUnknownChannel())) == {
        "id": 4,
        "error": {"code": 102, "message": "unknown channel"},
    }
    assert orjson.loads(replies.error_reply(5, ErrorInternal())) == {
        "id": 5,
        "error": {"code": 100, "message": "internal server error", "temporary": True},
    }
    custom = HubError(106, "limit exceeded: too many subscriptions")
    assert orjson.loads(replies.error_reply(6, custom))["error"]["message"] == (
        "limit exceeded: too many subscriptions"
    )


def test_reply_is_keyed_by_method():
    assert orjson.loads(replies.reply(3, "publish", {})) == {"id": 3, "publish": {}}


def test_subscribe_result_omits_zero_values():
    assert replies.subscribe_result(SubscribeResult()) == {}
    full = SubscribeResult(
        expires=True,
        ttl=30,
        recoverable=True,
        positioned=True,
        epoch="ep",
        offset=9,
        publications=[Publication(b'{"x":1}', offset=9)],
        recovered=True,
        was_recovering=True,
        data=b"[1]",
    )
    out = orjson.loads(orjson.dumps(replies.subscribe_result(full)))
    assert out == {
        "expires": True,
        "ttl": 30,
        "recoverable": True,
        "positioned": True,
        "epoch": "ep",
        "offset": 9,
        "publications": [{"data": {"x": 1}, "offset": 9}],
        "recovered": True,
        "was_recovering": True,
        "data": [1],
    }


def test_subscribe_result_not_recovered_says_was_recovering_only():
    out = replies.subscribe_result(
        SubscribeResult(recoverable=True, epoch="ep", offset=5, was_recovering=True)
    )
    assert "recovered" not in out
    assert "publications" not in out
    assert out["was_recovering"] is True


def test_connect_result_omits_zero_values():
    bare = ConnectResult(client="c1", version="0.1", node="", ping=0, pong=False)
    assert replies.connect_result(bare) == {"client": "c1", "version": "0.1"}
    full = ConnectResult(
        client="c1",
        version="0.1",
        node="n1",
        ping=25,
        pong=True,
        expires=True,
        ttl=100,
        data=b'{"hello":1}',
        subs={"personal:#alice": SubscribeResult(recoverable=True, epoch="e", offset=2)},
    )
    out = orjson.loads(replies.reply(1, "connect", replies.connect_result(full)))
    assert out == {
        "id": 1,
        "connect": {
            "client": "c1",
            "version": "0.1",
            "expires": True,
            "ttl": 100,
            "data": {"hello": 1},
            "subs": {"personal:#alice": {"recoverable": True, "epoch": "e", "offset": 2}},
            "ping": 25,
            "pong": True,
            "node": "n1",
        },
    }


def test_history_and_presence_results():
    pubs = [Publication(b'"a"', offset=1), Publication(b'"b"', offset=2)]
    assert orjson.loads(orjson.dumps(replies.history_result(pubs, 2, "ep"))) == {
        "publications": [{"data": "a", "offset": 1}, {"data": "b", "offset": 2}],
        "epoch": "ep",
        "offset": 2,
    }
    assert replies.history_result([], 0, "ep") == {"publications": [], "epoch": "ep"}
    presence = replies.presence_result({"c1": ClientInfo("c1", "alice", conn_info=b'{"n":1}')})
    assert orjson.loads(orjson.dumps(presence)) == {
        "presence": {"c1": {"client": "c1", "user": "alice", "conn_info": {"n": 1}}}
    }


def test_decoded_publish_data_round_trips_into_a_push():
    cmd = one(b'{"id":1,"publish":{"channel":"c","data":{"a":[1,{"b":null}]}}}')
    out = orjson.loads(replies.pub_push(cmd.channel, Publication(cmd.data, offset=1)))
    assert out["push"]["pub"]["data"] == {"a": [1, {"b": None}]}
