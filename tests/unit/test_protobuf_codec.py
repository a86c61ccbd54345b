"""The Centrifugo Protobuf codec without sockets (protobuf_codec.py, codecs.py).

- commands as the real SDKs encode them decode into the same typed commands as JSON;
  every field of client.proto's requests lands in its dataclass field;
- the JSON and Protobuf decoders agree on any command (hypothesis);
- every reply and push carries exactly what the JSON encoder carries;
- length-delimited framing both ways; bad bytes are ProtocolError and nothing else.
"""

from __future__ import annotations

import base64
import contextlib

import orjson
import pytest
from centrifuge.codecs import _ProtobufCodec
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushgate.engine.base import BinaryData, ClientInfo, Publication
from pushgate.engine.redis_engine import decode_publication, encode_publication
from pushgate.hub.errors import DISCONNECT_FORCE_NO_RECONNECT, ErrorUnknownChannel, HubError
from pushgate.hub.results import ConnectResult, RefreshResult, SubscribeResult
from pushgate.protocol.centrifugo import client_pb2 as pb
from pushgate.protocol.centrifugo import protobuf_codec as codec
from pushgate.protocol.centrifugo.codecs import JSON, PROTOBUF, UnfitData
from pushgate.protocol.centrifugo.commands import (
    MAX_FILTER_DEPTH,
    ChannelRequest,
    Command,
    ConnectRequest,
    DataRequest,
    FilterNode,
    HistoryRequest,
    KeyedItem,
    ProtocolError,
    PublishRequest,
    SubRefreshRequest,
    SubscribeRequest,
    TrackBatch,
    UnknownRequest,
    decode_commands,
)


def delimited(*commands: pb.Command) -> bytes:
    return b"".join(
        codec.varint(len(c.SerializeToString())) + c.SerializeToString() for c in commands
    )


def one(frame: bytes) -> Command:
    [command] = codec.decode_commands(frame)
    return command


# --- decoding: what the SDKs send --------------------------------------------------------
def test_centrifuge_python_connect_and_subscribe_frame():
    """Bytes exactly as centrifuge-python (use_protobuf=True) builds them."""
    frame = _ProtobufCodec.encode_commands(
        [
            {"id": 1, "connect": {"token": "t.o.k", "name": "python", "subs": {}}},
            {
                "id": 2,
                "subscribe": {
                    "channel": "board:1",
                    "recover": True,
                    "offset": "17",
                    "epoch": "AbC",
                    "join_leave": True,
                    "positioned": True,
                    "recoverable": True,
                },
            },
        ]
    )
    connect, subscribe = codec.decode_commands(frame)
    assert isinstance(connect, ConnectRequest)
    assert (connect.id, connect.token, connect.name, connect.data) == (1, "t.o.k", "python", None)
    assert subscribe == SubscribeRequest(
        2,
        "subscribe",
        channel="board:1",
        recover=True,
        offset=17,
        epoch="AbC",
        join_leave=True,
        positioned=True,
        recoverable=True,
    )


def test_every_request_field_lands_in_its_dataclass():
    tf = pb.FilterNode(
        op="and",
        nodes=[
            pb.FilterNode(key="kind", cmp="eq", val="card"),
            pb.FilterNode(op="not", nodes=[pb.FilterNode(key="x", cmp="in", vals=["1", "2"])]),
        ],
    )
    frame = delimited(
        pb.Command(
            id=1,
            connect=pb.ConnectRequest(
                token="t",
                data=b'{"d":1}',
                subs={"a:1": pb.SubscribeRequest(recover=True, offset=5, epoch="e")},
                name="n",
                version="v",
                headers={"X-Team": "7"},
                flag=3,
                dict="dict-id",
                profile="board-view",
            ),
        ),
        pb.Command(
            id=2,
            subscribe=pb.SubscribeRequest(
                channel="c",
                token="st",
                recover=True,
                epoch="e",
                offset=2**64 - 1,
                data=b"[1]",
                positioned=True,
                recoverable=True,
                join_leave=True,
                delta="fossil",
                tf=tf,
                flag=-9,
                type=1,
                phase=2,
                cursor="cur",
                limit=50,
                asc=True,
            ),
        ),
        pb.Command(
            id=3,
            publish=pb.PublishRequest(channel="c", data=b"\x00\xff", type=1, key="k", removed=True),
        ),
        pb.Command(
            id=4,
            sub_refresh=pb.SubRefreshRequest(
                channel="c",
                token="s",
                type=1,
                track=[pb.TrackBatch(signature="sig", items=[pb.KeyedItem(key="k", version=9)])],
                untrack=["u1", "u2"],
            ),
        ),
        pb.Command(
            id=5,
            history=pb.HistoryRequest(
                channel="c", limit=-1, since=pb.StreamPosition(offset=7, epoch="e"), reverse=True
            ),
        ),
        pb.Command(id=6, rpc=pb.RPCRequest(data=b'"x"', method="getCard")),
        pb.Command(send=pb.SendRequest(data=b"1")),
        pb.Command(id=7, refresh=pb.RefreshRequest(token="new")),
        pb.Command(id=8, presence=pb.PresenceRequest(channel="c")),
        pb.Command(id=9, presence_stats=pb.PresenceStatsRequest(channel="c")),
        pb.Command(id=10, unsubscribe=pb.UnsubscribeRequest(channel="c")),
        pb.Command(id=11, ping=pb.PingRequest()),
    )
    (connect, subscribe, publish, sub_refresh, history, rpc, send, refresh, *rest) = (
        codec.decode_commands(frame)
    )
    assert connect == ConnectRequest(
        1,
        "connect",
        token="t",
        data=b'{"d":1}',
        subs={"a:1": {"recover": True, "offset": 5, "epoch": "e"}},
        name="n",
        version="v",
        headers={"X-Team": "7"},
        flag=3,
        profile="board-view",
        dict="dict-id",
    )
    assert subscribe == SubscribeRequest(
        2,
        "subscribe",
        channel="c",
        token="st",
        recover=True,
        offset=2**64 - 1,
        epoch="e",
        data=b"[1]",
        join_leave=True,
        positioned=True,
        recoverable=True,
        delta="fossil",
        tf=FilterNode(
            op="and",
            nodes=[
                FilterNode(key="kind", cmp="eq", val="card"),
                FilterNode(op="not", nodes=[FilterNode(key="x", cmp="in", vals=["1", "2"])]),
            ],
        ),
        flag=-9,
        type=1,
        phase=2,
        cursor="cur",
        limit=50,
        asc=True,
    )
    assert publish == PublishRequest(
        3, "publish", channel="c", data=b"\x00\xff", type=1, key="k", removed=True
    )
    assert sub_refresh == SubRefreshRequest(
        4,
        "sub_refresh",
        channel="c",
        token="s",
        type=1,
        track=[TrackBatch(signature="sig", items=[KeyedItem(key="k", version=9)])],
        untrack=["u1", "u2"],
    )
    assert history == HistoryRequest(
        5, "history", channel="c", limit=-1, since=(7, "e"), reverse=True
    )
    assert rpc == DataRequest(6, "rpc", data=b'"x"', rpc_method="getCard")
    assert send == DataRequest(0, "send", data=b"1")
    assert (refresh.method, refresh.token) == ("refresh", "new")
    assert [(c.id, c.method) for c in rest] == [
        (8, "presence"),
        (9, "presence_stats"),
        (10, "unsubscribe"),
        (11, "ping"),
    ]
    assert all(isinstance(c, ChannelRequest) and c.channel == "c" for c in rest[:3])


def test_empty_command_is_a_pong_and_unknown_request_field_is_unknown():
    assert one(b"\x00").is_pong
    # a request field this server does not know (number 40), with an id
    unknown = pb.Command(id=12).SerializeToString() + b"\xc2\x02\x00"
    assert isinstance(one(codec.varint(len(unknown)) + unknown), UnknownRequest)


def test_first_request_set_counts():
    both = pb.Command(
        id=1, subscribe=pb.SubscribeRequest(channel="a"), publish=pb.PublishRequest(channel="b")
    )
    assert one(delimited(both)).method == "subscribe"


# --- decoding: bad input -----------------------------------------------------------------
@pytest.mark.parametrize(
    "frame",
    [
        b"",  # nothing
        b"\x05abc",  # shorter than its prefix says
        b"\x80",  # a prefix cut short
        b"\xff" * 11,  # a prefix longer than a varint can be
        b"\x02\x08",  # a command cut inside
        delimited(pb.Command(id=1, ping=pb.PingRequest())) + b"\x09",  # trailing junk
        delimited(pb.Command(subscribe=pb.SubscribeRequest(channel="a"))),  # no id
        delimited(pb.Command(id=1, subscribe=pb.SubscribeRequest())),  # no channel
        delimited(pb.Command(id=1, publish=pb.PublishRequest(data=b"1"))),
        delimited(pb.Command(id=1, history=pb.HistoryRequest())),
        delimited(pb.Command(id=1, sub_refresh=pb.SubRefreshRequest(token="t"))),
        # a string that is not UTF-8 (channel, field 1 of SubscribeRequest)
        codec.varint(9) + b"\x08\x01\x2a\x04\x0a\x02\xc3\x28",
        # a length field (the subscribe request) longer than its message
        b"\x05\x08\x01\x2a\x09\x0a",
        # a two-byte prefix (128) with a byte too few behind it (129 bytes in all)
        b"\x80\x01" + b"\x00" * 127,
    ],
)
def test_bad_frames_are_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        codec.decode_commands(frame)


def _deep_filter(depth: int) -> bytes:
    node = b""
    for _ in range(depth):
        node = b"\x32" + codec.varint(len(node)) + node  # nodes = 6
    subscribe = b"\x0a\x01c" + b"\x6a" + codec.varint(len(node)) + node  # channel, tf = 13
    command = b"\x08\x01\x2a" + codec.varint(len(subscribe)) + subscribe
    return codec.varint(len(command)) + command


def test_a_filter_nested_too_deep_is_a_protocol_error_as_in_json():
    # _deep_filter(n) is tf with n levels below it
    assert one(_deep_filter(MAX_FILTER_DEPTH - 1)).tf is not None
    for depth in (MAX_FILTER_DEPTH, 500):  # ours, then the protobuf parser's limit
        with pytest.raises(ProtocolError):
            codec.decode_commands(_deep_filter(depth))
    deep: dict = {}
    for _ in range(MAX_FILTER_DEPTH + 1):
        deep = {"op": "not", "nodes": [deep]}
    json_frame = orjson.dumps({"id": 1, "subscribe": {"channel": "c", "tf": deep}})
    with pytest.raises(ProtocolError):
        decode_commands(json_frame)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_decode_or_protocol_error(raw):
    try:
        commands = codec.decode_commands(raw)
    except ProtocolError:
        return
    assert commands and all(isinstance(c, Command) for c in commands)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_property_connect_and_emulation_requests(raw):
    for decode in (codec.decode_connect_request, codec.decode_emulation_request):
        with contextlib.suppress(ProtocolError):
            decode(raw)


def _mutations():
    valid = delimited(
        pb.Command(
            id=3,
            subscribe=pb.SubscribeRequest(
                channel="board:1", recover=True, offset=9, epoch="e", tf=pb.FilterNode(key="k")
            ),
        ),
        pb.Command(id=4, publish=pb.PublishRequest(channel="c", data=b'{"a":1}')),
    )
    return st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
        lambda m: valid[: m[0]] + bytes((m[1],)) + valid[m[0] + 1 :]
    )


@settings(max_examples=1500, deadline=None)
@given(_mutations())
def test_property_one_byte_changed_in_a_valid_frame(raw):
    with contextlib.suppress(ProtocolError):
        codec.decode_commands(raw)


# --- the two decoders agree ----------------------------------------------------------------
def _to_centrifugo_json(command: pb.Command) -> dict:
    """The command in Centrifugo's JSON form: the proto's names, bytes as embedded JSON."""
    plain = json_format.MessageToDict(command, preserving_proto_field_name=True)

    def embed(value):
        if isinstance(value, dict):
            return {
                k: orjson.loads(base64.b64decode(v)) if k == "data" else embed(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [embed(v) for v in value]
        return value

    return embed(plain)


_text = st.text(max_size=6)
_json_bytes = st.sampled_from([b'{"a":1}', b"[1,2]", b'"s"', b"7", b"true"])
_u64 = st.integers(0, 2**64 - 1)
_filters = st.recursive(
    st.builds(pb.FilterNode, key=_text, cmp=st.sampled_from(["eq", "in"]), val=_text),
    lambda children: st.builds(
        pb.FilterNode, op=st.sampled_from(["and", "or"]), nodes=st.lists(children, max_size=3)
    ),
    max_leaves=6,
)
_channel = st.text(min_size=1, max_size=8)
_requests = st.one_of(
    st.builds(
        lambda token, data, name, headers, flag, subs: pb.Command(
            connect=pb.ConnectRequest(
                token=token,
                data=data,
                name=name,
                headers=headers,
                flag=flag,
                subs={c: pb.SubscribeRequest(recover=True, offset=o) for c, o in subs.items()},
            )
        ),
        _text,
        _json_bytes,
        _text,
        st.dictionaries(_text, _text, max_size=2),
        st.integers(0, 2**62),
        st.dictionaries(_channel, _u64, max_size=2),
    ),
    st.builds(
        lambda channel, offset, epoch, tf, limit, flag, asc, delta: pb.Command(
            subscribe=pb.SubscribeRequest(
                channel=channel,
                offset=offset,
                epoch=epoch,
                recover=True,
                tf=tf,
                limit=limit,
                flag=flag,
                asc=asc,
                delta=delta,
            )
        ),
        _channel,
        _u64,
        _text,
        _filters,
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 2**62),
        st.booleans(),
        _text,
    ),
    st.builds(
        lambda channel, data, key, removed: pb.Command(
            publish=pb.PublishRequest(channel=channel, data=data, key=key, removed=removed)
        ),
        _channel,
        _json_bytes,
        _text,
        st.booleans(),
    ),
    st.builds(
        lambda channel, limit, offset: pb.Command(
            history=pb.HistoryRequest(
                channel=channel, limit=limit, since=pb.StreamPosition(offset=offset, epoch="e")
            )
        ),
        _channel,
        st.integers(-5, 100),
        _u64,
    ),
    st.builds(
        lambda channel, version, untrack: pb.Command(
            sub_refresh=pb.SubRefreshRequest(
                channel=channel,
                track=[
                    pb.TrackBatch(signature="s", items=[pb.KeyedItem(key="k", version=version)])
                ],
                untrack=untrack,
            )
        ),
        _channel,
        _u64,
        st.lists(_text, max_size=3),
    ),
    st.builds(lambda data: pb.Command(rpc=pb.RPCRequest(data=data, method="m")), _json_bytes),
)


@settings(max_examples=300, deadline=None)
@given(_requests, st.integers(1, 2**32 - 1))
def test_property_json_and_protobuf_decode_to_the_same_command(command, command_id):
    command.id = command_id
    from_protobuf = one(delimited(command))
    from_json = decode_commands(orjson.dumps(_to_centrifugo_json(command)))
    assert from_json == [from_protobuf]


# --- encoding: the same content as JSON ---------------------------------------------------
def _plain(message) -> dict:
    """A message as a dict: bytes fields parsed as the JSON they hold."""
    out: dict = {}
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    out[field.name] = {k: _plain(v) for k, v in value.items()}
                else:
                    out[field.name] = dict(value)
            elif field.is_repeated:
                out[field.name] = [_plain(v) for v in value]
            else:
                out[field.name] = _plain(value)
        elif field.type == FieldDescriptor.TYPE_BYTES:
            out[field.name] = orjson.loads(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _drop_zeros(value):
    """JSON as proto3 sends it: scalars with zero values and empty lists are absent."""
    if isinstance(value, dict):
        return {
            k: _drop_zeros(v) for k, v in value.items() if v not in (0, "", False, []) or v is True
        }
    if isinstance(value, list):
        return [_drop_zeros(v) for v in value]
    return value


def _reply(data: bytes, uni: bool = False):
    [message] = codec.split_delimited(data)
    return (pb.Push if uni else pb.Reply).FromString(message)


INFO = ClientInfo("c-1", "alice", b'{"name":"Alice"}', b'{"role":"owner"}')
PUB = Publication(b'{"card":7}', 42, "ep", INFO, {"kind": "move"})
SUB = SubscribeResult(
    expires=True,
    ttl=30,
    recoverable=True,
    positioned=True,
    epoch="ep",
    offset=42,
    publications=[PUB, Publication(b"[1]", 43)],
    recovered=True,
    was_recovering=True,
    data=b'{"welcome":1}',
)
CONNECT = ConnectResult(
    "c-1",
    "0.1",
    "node-1",
    25,
    True,
    expires=True,
    ttl=60,
    data=b'{"hi":1}',
    subs={"board:1": SUB},
    session="s-1",
)
CASES = [
    ("connect", lambda c: c.connect_reply(1, CONNECT)),
    ("subscribe", lambda c: c.subscribe_reply(2, SUB)),
    ("publish", lambda c: c.empty_reply(3, "publish")),
    ("unsubscribe", lambda c: c.empty_reply(4, "unsubscribe")),
    ("ping", lambda c: c.empty_reply(5, "ping")),
    ("refresh", lambda c: c.refresh_reply(6, RefreshResult("c-1", "0.1", True, 99))),
    ("sub_refresh", lambda c: c.sub_refresh_reply(7, True, 12)),
    ("presence", lambda c: c.presence_reply(8, {"c-1": INFO, "c-2": ClientInfo("c-2", "bob")})),
    ("presence_stats", lambda c: c.presence_stats_reply(9, 3, 2)),
    ("history", lambda c: c.history_reply(10, [PUB, Publication(b"2", 43)], 43, "ep")),
    ("error", lambda c: c.error_reply(11, ErrorUnknownChannel())),
    ("error", lambda c: c.error_reply(12, HubError(100, "internal", temporary=True))),
    ("pub", lambda c: c.pub_push("board:1", PUB)),
    ("join", lambda c: c.join_push("board:1", INFO)),
    ("leave", lambda c: c.leave_push("board:1", INFO)),
    ("unsubscribe push", lambda c: c.unsubscribe_push("board:1", 2500, "insufficient state")),
    ("message", lambda c: c.message_push(b'{"note":1}')),
    ("refresh push", lambda c: c.refresh_push(True, 77)),
    ("disconnect", lambda c: c.disconnect_push(DISCONNECT_FORCE_NO_RECONNECT)),
]


@pytest.mark.parametrize(
    ("name", "encode"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)]
)
def test_every_reply_and_push_carries_what_json_carries(name, encode):
    json_form = _drop_zeros(orjson.loads(encode(JSON)))
    assert _plain(_reply(encode(PROTOBUF))) == json_form


@pytest.mark.parametrize("uni", [False, True])
def test_pushes_unidirectional_unwrapped(uni):
    pushes = [
        lambda c: c.pub_push("board:1", PUB, uni),
        lambda c: c.join_push("board:1", INFO, uni),
        lambda c: c.leave_push("board:1", INFO, uni),
        lambda c: c.unsubscribe_push("board:1", 2000, "server unsubscribe", uni),
        lambda c: c.message_push(b"1", uni),
        lambda c: c.refresh_push(False, 0, uni),
        lambda c: c.disconnect_push(DISCONNECT_FORCE_NO_RECONNECT, uni),
    ]
    for encode in pushes:
        json_form = _drop_zeros(orjson.loads(encode(JSON)))
        assert _plain(_reply(encode(PROTOBUF), uni)) == json_form
    connect = _plain(_reply(PROTOBUF.connect_push(CONNECT), uni=True))
    assert connect == _drop_zeros(orjson.loads(JSON.connect_push(CONNECT)))


def test_subscribe_push_carries_the_fields_of_subscribe():
    """Push.subscribe is a ``Subscribe``: the position, not the token's expiry (JSON,
    which reuses the subscribe result, also carries those; clients ignore them)."""
    result = SubscribeResult(recoverable=True, positioned=True, epoch="ep", offset=9, data=b"1")
    plain = _plain(_reply(PROTOBUF.subscribe_push("board:1", result)))
    assert plain == {
        "push": {
            "channel": "board:1",
            "subscribe": {
                "recoverable": True,
                "positioned": True,
                "epoch": "ep",
                "offset": 9,
                "data": 1,
            },
        }
    }
    json_form = orjson.loads(JSON.subscribe_push("board:1", result))
    assert json_form == plain


def test_empty_results_and_the_ping_are_present_but_empty():
    assert codec.PING == b"\x00"
    reply = _reply(PROTOBUF.empty_reply(3, "publish"))
    assert reply.id == 3 and reply.HasField("publish")
    push = _reply(PROTOBUF.refresh_push(False, 0))
    assert push.push.HasField("refresh")


def test_published_data_is_marked_binary_unless_json():
    def published(data: bytes) -> bytes:
        command = pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=data))
        return one(delimited(command)).data

    for data in (b'{"a":1}', b"[1]", b'"text"', b"12", b" true "):
        assert type(published(data)) is bytes and published(data) == data
    for data in (b"", b"\xff\x00", b"{", b'{"a":1}x', "é".encode("latin-1")):
        assert type(published(data)) is BinaryData and published(data) == data


def test_the_redis_engine_keeps_the_binary_mark():
    for data in (BinaryData(b"\x00\n\xff"), b'{"a":1}'):
        pub = Publication(data, info=INFO, tags={"k": "v"})
        back = decode_publication(encode_publication(pub), 3, "ep")
        assert (type(back.data), back.data, back.offset) == (type(data), data, 3)


def test_binary_data_goes_to_protobuf_as_is_and_is_unfit_for_json():
    binary = Publication(BinaryData(range(256)), 5)
    pub = _reply(PROTOBUF.pub_push("c", binary)).push.pub
    assert pub.data == bytes(range(256)) and pub.offset == 5
    with pytest.raises(UnfitData):
        JSON.pub_push("c", binary)
    with pytest.raises(UnfitData):
        JSON.history_reply(1, [PUB, binary], 5, "e")
    with pytest.raises(UnfitData):
        JSON.subscribe_reply(1, SubscribeResult(publications=[binary]))
    with pytest.raises(UnfitData):
        JSON.connect_push(
            ConnectResult(
                "c", "v", "n", 0, False, subs={"c": SubscribeResult(publications=[binary])}
            )
        )
    # a JSON publication goes to both
    assert _plain(_reply(PROTOBUF.pub_push("c", PUB))) == orjson.loads(JSON.pub_push("c", PUB))


# --- framing ---------------------------------------------------------------------------
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_property_delimited_framing_round_trip(messages):
    frame = b"".join(codec.varint(len(m)) + m for m in messages)
    assert codec.split_delimited(frame) == messages


@given(st.integers(0, 2**64 - 1))
def test_property_varint_round_trip(value):
    encoded = codec.varint(value)
    assert codec.read_varint(encoded + b"tail", 0) == (value, len(encoded))


def test_uni_connect_request_is_a_bare_connect_request():
    raw = pb.ConnectRequest(token="t", subs={"a": pb.SubscribeRequest(recover=True)})
    command = PROTOBUF.decode_connect_request(raw.SerializeToString())
    assert (command.token, command.subs) == (
        "t",
        {"a": {"recover": True, "offset": 0, "epoch": ""}},
    )
    assert PROTOBUF.decode_connect_request(b"").token == ""
    with pytest.raises(ProtocolError):
        PROTOBUF.decode_connect_request({"token": "t"})
