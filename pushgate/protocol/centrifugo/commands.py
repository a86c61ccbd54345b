"""Typed client commands of the Centrifugo protocol and their decoding from JSON.

The dataclasses are the one set of commands both codecs produce: this module's JSON
decoding and protobuf_codec.py's. Their fields are ``client.proto``'s, by the same
names (snake_case), with the proto's zero values as defaults, including fields the hub
does not use yet.

``decode_commands`` turns one frame's bytes (newline-delimited JSON objects) into
typed commands. It never raises anything but ``ProtocolError``: a frame that is not
JSON, or a command of the wrong shape, is reported, not crashed on. Unknown fields are
ignored, as protobuf's JSON mapping does, so newer clients keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from pushgate.json_types import JsonObject


class ProtocolError(Exception):
    """The bytes are not a valid command: the connection gets a bad-request disconnect."""


@dataclass(slots=True)
class Command:
    id: int
    method: str
    #: True for an empty object, the client's pong
    is_pong: bool = False
    #: the kind of subscription, publication or sub_refresh (0 stream; 1-3 map, 4 shared
    #: poll: kinds pushgate refuses); 0 for every other command
    type: int = 0


@dataclass(slots=True)
class FilterNode:
    """A filter on publication tags (``SubscribeRequest.tf``): a leaf comparison when
    ``op`` is empty, else ``and``/``or``/``not`` over ``nodes``."""

    op: str = ""
    key: str = ""
    cmp: str = ""
    val: str = ""
    vals: list[str] = field(default_factory=list)
    nodes: list[FilterNode] = field(default_factory=list)


@dataclass(slots=True)
class KeyedItem:
    key: str = ""
    version: int = 0


@dataclass(slots=True)
class TrackBatch:
    signature: str = ""
    items: list[KeyedItem] = field(default_factory=list)


@dataclass(slots=True)
class ConnectRequest(Command):
    token: str = ""
    data: bytes | None = None
    #: server-side subscriptions to recover: channel → {"recover", "offset", "epoch"}
    subs: dict[str, JsonObject] = field(default_factory=dict)
    name: str = ""
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    flag: int = 0
    profile: str = ""
    dict: str = ""  # the id of a compression dictionary the client holds (last: shadows)


@dataclass(slots=True)
class SubscribeRequest(Command):
    channel: str = ""
    token: str = ""
    recover: bool = False
    offset: int = 0
    epoch: str = ""
    data: bytes | None = None
    join_leave: bool = False
    positioned: bool = False
    recoverable: bool = False
    #: delta compression asked for ("fossil")
    delta: str = ""
    #: publication tags filter (checked and compiled by the hub)
    tf: FilterNode | None = None
    #: subscription feature bits (1 channel compaction, 2 reject unrecovered)
    flag: int = 0
    phase: int = 0
    cursor: str = ""
    limit: int = 0
    asc: bool = False


@dataclass(slots=True)
class ChannelRequest(Command):
    """unsubscribe, presence, presence_stats: a channel and nothing else."""

    channel: str = ""


@dataclass(slots=True)
class PublishRequest(Command):
    channel: str = ""
    data: bytes = b"null"
    key: str = ""
    removed: bool = False


@dataclass(slots=True)
class HistoryRequest(Command):
    channel: str = ""
    limit: int = 0
    since: tuple[int, str] | None = None
    reverse: bool = False


@dataclass(slots=True)
class RefreshRequest(Command):
    token: str = ""


@dataclass(slots=True)
class SubRefreshRequest(Command):
    channel: str = ""
    token: str = ""
    track: list[TrackBatch] = field(default_factory=list)
    untrack: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DataRequest(Command):
    """send, rpc: opaque data (and a method name for rpc: the proto's ``method``)."""

    data: bytes | None = None
    rpc_method: str = ""


@dataclass(slots=True)
class UnknownRequest(Command):
    """A command whose method this server does not know."""


METHODS = (
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
)


def decode_commands(frame: bytes | str) -> list[Command]:
    """All commands in one frame, in order."""
    if isinstance(frame, str):
        try:
            frame = frame.encode()
        except UnicodeEncodeError:
            raise ProtocolError("frame is not valid UTF-8 text") from None
    commands = []
    for line in frame.split(b"\n"):
        if line.strip():
            commands.append(decode_command(line))
    if not commands:
        raise ProtocolError("empty frame")
    return commands


def decode_command(raw: bytes) -> Command:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("command is not a JSON object")
    command_id = obj.get("id", 0)
    if type(command_id) is not int or command_id < 0 or command_id > 2**32 - 1:
        raise ProtocolError("id must be a non-negative 32-bit integer")
    method = next((m for m in METHODS if m in obj), None)
    if method is None:
        if command_id == 0:
            return Command(0, "pong", is_pong=True)
        return UnknownRequest(command_id, next(iter(k for k in obj if k != "id"), ""))
    params = obj[method]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{method}: parameters must be an object")
    if command_id == 0 and method != "send":
        raise ProtocolError(f"{method}: command id required")
    try:
        return _PARSERS[method](command_id, params)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{method}: {exc}") from None


def _str(params: JsonObject, key: str) -> str:
    value = params.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _bool(params: JsonObject, key: str) -> bool:
    value = params.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be a boolean")
    return value


def _int(params: JsonObject, key: str) -> int:
    value = params.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():  # proto3 JSON may quote uint64
        value = int(value)
    if type(value) is not int:
        raise TypeError(f"{key} must be an integer")
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"{key} out of range")
    return value


def _raw(params: JsonObject, key: str) -> bytes | None:
    if key not in params:
        return None
    return orjson.dumps(params[key])


def _str_map(params: JsonObject, key: str) -> dict[str, str]:
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError(f"{key} must be an object of strings")
    return value


def _str_list(params: JsonObject, key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return value


def _objects(params: JsonObject, key: str) -> list[JsonObject]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError(f"{key} must be a list of objects")
    return value


#: how deep a tags filter may nest (protobuf decoders stop at 100 levels of messages)
MAX_FILTER_DEPTH = 32


def _filter(params: JsonObject, key: str) -> FilterNode | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{key} must be an object")
    return _filter_node(value, 0)


def _filter_node(node: JsonObject, depth: int) -> FilterNode:
    if depth >= MAX_FILTER_DEPTH:
        raise ValueError(f"tf nests deeper than {MAX_FILTER_DEPTH} levels")
    return FilterNode(
        op=_str(node, "op"),
        key=_str(node, "key"),
        cmp=_str(node, "cmp"),
        val=_str(node, "val"),
        vals=_str_list(node, "vals"),
        nodes=[_filter_node(child, depth + 1) for child in _objects(node, "nodes")],
    )


def _track(params: JsonObject) -> list[TrackBatch]:
    return [
        TrackBatch(
            signature=_str(batch, "signature"),
            items=[
                KeyedItem(key=_str(item, "key"), version=_int(item, "version"))
                for item in _objects(batch, "items")
            ],
        )
        for batch in _objects(params, "track")
    ]


def _channel(params: JsonObject) -> str:
    channel = _str(params, "channel")
    if not channel:
        raise ValueError("channel required")
    return channel


def _connect(cid: int, p: JsonObject) -> ConnectRequest:
    subs = p.get("subs") or {}
    if not isinstance(subs, dict) or not all(isinstance(v, dict) for v in subs.values()):
        raise TypeError("subs must be an object of objects")
    return ConnectRequest(
        cid,
        "connect",
        token=_str(p, "token"),
        data=_raw(p, "data"),
        name=_str(p, "name"),
        version=_str(p, "version"),
        headers=_str_map(p, "headers"),
        flag=_int(p, "flag"),
        profile=_str(p, "profile"),
        dict=_str(p, "dict"),
        subs={
            ch: {
                "recover": _bool(v, "recover"),
                "offset": _int(v, "offset"),
                "epoch": _str(v, "epoch"),
            }
            for ch, v in subs.items()
        },
    )


def _subscribe(cid: int, p: JsonObject) -> SubscribeRequest:
    return SubscribeRequest(
        cid,
        "subscribe",
        channel=_channel(p),
        token=_str(p, "token"),
        recover=_bool(p, "recover"),
        offset=_int(p, "offset"),
        epoch=_str(p, "epoch"),
        data=_raw(p, "data"),
        join_leave=_bool(p, "join_leave"),
        positioned=_bool(p, "positioned"),
        recoverable=_bool(p, "recoverable"),
        delta=_str(p, "delta"),
        tf=_filter(p, "tf"),
        flag=_int(p, "flag"),
        type=_int(p, "type"),
        phase=_int(p, "phase"),
        cursor=_str(p, "cursor"),
        limit=_int(p, "limit"),
        asc=_bool(p, "asc"),
    )


def _channel_only(method: str) -> Callable[[int, JsonObject], ChannelRequest]:
    def parse(cid: int, p: JsonObject) -> ChannelRequest:
        return ChannelRequest(cid, method, channel=_channel(p))

    return parse


def _publish(cid: int, p: JsonObject) -> PublishRequest:
    if "data" not in p:
        raise ValueError("data required")
    return PublishRequest(
        cid,
        "publish",
        channel=_channel(p),
        data=orjson.dumps(p["data"]),
        type=_int(p, "type"),
        key=_str(p, "key"),
        removed=_bool(p, "removed"),
    )


def _history(cid: int, p: JsonObject) -> HistoryRequest:
    since = p.get("since")
    position = None
    if since is not None:
        if not isinstance(since, dict):
            raise TypeError("since must be an object")
        position = (_int(since, "offset"), _str(since, "epoch"))
    return HistoryRequest(
        cid,
        "history",
        channel=_channel(p),
        limit=_int(p, "limit"),
        since=position,
        reverse=_bool(p, "reverse"),
    )


def _refresh(cid: int, p: JsonObject) -> RefreshRequest:
    return RefreshRequest(cid, "refresh", token=_str(p, "token"))


def _sub_refresh(cid: int, p: JsonObject) -> SubRefreshRequest:
    return SubRefreshRequest(
        cid,
        "sub_refresh",
        channel=_channel(p),
        token=_str(p, "token"),
        type=_int(p, "type"),
        track=_track(p),
        untrack=_str_list(p, "untrack"),
    )


def _send(cid: int, p: JsonObject) -> DataRequest:
    return DataRequest(cid, "send", data=_raw(p, "data"))


def _rpc(cid: int, p: JsonObject) -> DataRequest:
    return DataRequest(cid, "rpc", data=_raw(p, "data"), rpc_method=_str(p, "method"))


def _ping(cid: int, p: JsonObject) -> Command:
    return Command(cid, "ping")


_PARSERS: dict[str, Callable[[int, JsonObject], Command]] = {
    "connect": _connect,
    "subscribe": _subscribe,
    "unsubscribe": _channel_only("unsubscribe"),
    "publish": _publish,
    "presence": _channel_only("presence"),
    "presence_stats": _channel_only("presence_stats"),
    "history": _history,
    "ping": _ping,
    "send": _send,
    "rpc": _rpc,
    "refresh": _refresh,
    "sub_refresh": _sub_refresh,
}
