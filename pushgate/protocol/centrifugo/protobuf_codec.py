"""The Centrifugo protocol in Protobuf: commands decoded into the typed dataclasses of
commands.py, and replies and pushes encoded from the hub's typed results.

Messages are those of ``client.proto`` (the generated ``client_pb2``, parsed and
serialized by the protobuf package's C implementation). On every transport each
Command, Reply or unwrapped Push travels prefixed with its length as a varint, so a
frame may hold several; this module reads and writes that framing too.

Decoding never raises anything but ``ProtocolError``. Encoding carries exactly what the
JSON encoder (replies.py) carries; bytes fields (publication data, info, connect and
subscribe data) go as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson
from google.protobuf.message import DecodeError, Message

from pushgate.engine.base import BinaryData, ClientInfo, Publication
from pushgate.hub.errors import Disconnect, HubError
from pushgate.hub.results import ConnectResult, RefreshResult, SubscribeResult
from pushgate.protocol.centrifugo import client_pb2 as pb
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
    RefreshRequest,
    SubRefreshRequest,
    SubscribeRequest,
    TrackBatch,
    UnknownRequest,
)

#: a varint longer than this is not a length (ten bytes hold 64 bits)
MAX_VARINT_BYTES = 10


# --- framing ---------------------------------------------------------------------------
def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; ProtocolError if cut short."""
    result = 0
    shift = 0
    for index in range(pos, min(pos + MAX_VARINT_BYTES, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, index + 1
        shift += 7
    raise ProtocolError("frame ends inside a length prefix (or the prefix is too long)")


def split_delimited(frame: bytes) -> list[bytes]:
    """The length-delimited messages of one frame, in order."""
    messages = []
    pos, end = 0, len(frame)
    while pos < end:
        length, pos = read_varint(frame, pos)
        stop = pos + length
        if stop > end:
            raise ProtocolError(f"message of {length} bytes runs past the end of the frame")
        messages.append(frame[pos:stop])
        pos = stop
    return messages


def delimited(message: pb.Reply | pb.Push) -> bytes:
    body = message.SerializeToString()
    return varint(len(body)) + body


# --- decoding --------------------------------------------------------------------------
def decode_commands(frame: bytes | str) -> list[Command]:
    """All commands in one frame (length-delimited ``Command`` messages), in order."""
    if isinstance(frame, str):
        # a text message from a protobuf client (a WebSocket text frame, an emulation
        # request body): its bytes are what counts
        try:
            frame = frame.encode()
        except UnicodeEncodeError:
            raise ProtocolError("frame is not valid UTF-8 text") from None
    if frame and frame[0] < 0x80 and frame[0] + 1 == len(frame):
        # one command shorter than 128 bytes: its one-byte prefix says the whole frame
        commands = [decode_command(frame[1:])]
    else:
        commands = [decode_command(raw) for raw in split_delimited(frame)]
    if not commands:
        raise ProtocolError("empty frame")
    return commands


_M = TypeVar("_M", bound=Message)


class _ChannelRequest(Protocol):
    """A request message with a ``channel`` field (unsubscribe, presence, ...)."""

    @property
    def channel(self) -> str: ...


def _parse(message_type: type[_M], raw: bytes, what: str) -> _M:
    try:
        return message_type.FromString(raw)
    except DecodeError as exc:
        raise ProtocolError(f"malformed protobuf {what}: {exc}") from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise ProtocolError(f"malformed protobuf {what}: {exc}") from None


def decode_command(raw: bytes) -> Command:
    """One ``Command`` message (without its length prefix)."""
    cmd = _parse(pb.Command, raw, "command")
    command_id = cmd.id
    # the first request set counts, in field order (which is also the JSON decoder's)
    method = None
    request = None
    for descriptor, value in cmd.ListFields():
        if descriptor.number >= 4:
            method, request = descriptor.name, value
            break
    if method is None:
        if command_id == 0:
            return Command(0, "pong", is_pong=True)
        return UnknownRequest(command_id, "")
    if command_id == 0 and method != "send":
        raise ProtocolError(f"{method}: command id required")
    return _DECODERS[method](command_id, request)


def decode_connect_request(raw: bytes) -> ConnectRequest:
    """A unidirectional connection's request: a bare ``ConnectRequest`` message."""
    return _connect(0, _parse(pb.ConnectRequest, raw, "connect request"))


def decode_emulation_request(raw: bytes) -> tuple[str, str, bytes]:
    """``(session, node, data)`` of the body of a protobuf client's ``/emulation`` POST."""
    request = _parse(pb.EmulationRequest, raw, "emulation request")
    if not request.session:
        raise ProtocolError("emulation request names no session")
    return request.session, request.node, request.data


def _channel(method: str, request: _ChannelRequest) -> str:
    channel = request.channel
    if not channel:
        raise ProtocolError(f"{method}: channel required")
    return channel


def _data(value: bytes) -> bytes | None:
    # proto3 bytes have no presence: empty is absent, as a JSON field left out
    return value or None


def _connect(cid: int, r: pb.ConnectRequest) -> ConnectRequest:
    return ConnectRequest(
        cid,
        "connect",
        token=r.token,
        data=_data(r.data),
        subs={
            channel: {"recover": s.recover, "offset": s.offset, "epoch": s.epoch}
            for channel, s in r.subs.items()
        },
        name=r.name,
        version=r.version,
        headers=dict(r.headers),
        flag=r.flag,
        profile=r.profile,
        dict=r.dict,
    )


def _filter(node: pb.FilterNode, depth: int = 0) -> FilterNode:
    if depth >= MAX_FILTER_DEPTH:  # as the JSON decoder (the parser stops at 100 anyway)
        raise ProtocolError(f"subscribe: tf nests deeper than {MAX_FILTER_DEPTH} levels")
    return FilterNode(
        op=node.op,
        key=node.key,
        cmp=node.cmp,
        val=node.val,
        vals=list(node.vals),
        nodes=[_filter(child, depth + 1) for child in node.nodes],
    )


def _subscribe(cid: int, r: pb.SubscribeRequest) -> SubscribeRequest:
    return SubscribeRequest(
        cid,
        "subscribe",
        channel=_channel("subscribe", r),
        token=r.token,
        recover=r.recover,
        offset=r.offset,
        epoch=r.epoch,
        data=_data(r.data),
        join_leave=r.join_leave,
        positioned=r.positioned,
        recoverable=r.recoverable,
        delta=r.delta,
        tf=_filter(r.tf) if r.HasField("tf") else None,
        flag=r.flag,
        type=r.type,
        phase=r.phase,
        cursor=r.cursor,
        limit=r.limit,
        asc=r.asc,
    )


def _channel_only(method: str) -> Callable[[int, _ChannelRequest], ChannelRequest]:
    def decode(cid: int, r: _ChannelRequest) -> ChannelRequest:
        return ChannelRequest(cid, method, channel=_channel(method, r))

    return decode


def publication_data(data: bytes) -> bytes:
    """Data a protobuf client publishes: as it is, marked ``BinaryData`` unless it is JSON
    (JSON connections can carry only JSON; checked here once, by the publisher's codec)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return BinaryData(data)
    return data


def _publish(cid: int, r: pb.PublishRequest) -> PublishRequest:
    return PublishRequest(
        cid,
        "publish",
        channel=_channel("publish", r),
        data=publication_data(r.data),
        type=r.type,
        key=r.key,
        removed=r.removed,
    )


def _history(cid: int, r: pb.HistoryRequest) -> HistoryRequest:
    since = (r.since.offset, r.since.epoch) if r.HasField("since") else None
    return HistoryRequest(
        cid,
        "history",
        channel=_channel("history", r),
        limit=r.limit,
        since=since,
        reverse=r.reverse,
    )


def _ping(cid: int, r: pb.PingRequest) -> Command:
    return Command(cid, "ping")


def _send(cid: int, r: pb.SendRequest) -> DataRequest:
    return DataRequest(cid, "send", data=_data(r.data))


def _rpc(cid: int, r: pb.RPCRequest) -> DataRequest:
    return DataRequest(cid, "rpc", data=_data(r.data), rpc_method=r.method)


def _refresh(cid: int, r: pb.RefreshRequest) -> RefreshRequest:
    return RefreshRequest(cid, "refresh", token=r.token)


def _sub_refresh(cid: int, r: pb.SubRefreshRequest) -> SubRefreshRequest:
    return SubRefreshRequest(
        cid,
        "sub_refresh",
        channel=_channel("sub_refresh", r),
        token=r.token,
        type=r.type,
        track=[
            TrackBatch(
                signature=batch.signature,
                items=[KeyedItem(key=i.key, version=i.version) for i in batch.items],
            )
            for batch in r.track
        ],
        untrack=list(r.untrack),
    )


# each takes its method's request message (as Command.ListFields gives it, untyped)
_DECODERS: dict[str, Callable[[int, Any], Command]] = {
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


# --- encoding: results -----------------------------------------------------------------
# Messages are filled in place, field by field, inside the Reply that carries them: a
# third of the cost of building each one and copying it into its parent (bench/codec.py).


def _client_info(out: pb.ClientInfo, info: ClientInfo) -> None:
    out.SetInParent()
    out.user = info.user
    out.client = info.client
    if info.conn_info is not None:
        out.conn_info = info.conn_info
    if info.chan_info is not None:
        out.chan_info = info.chan_info


def _publication(out: pb.Publication, pub: Publication) -> None:
    out.SetInParent()  # present even when every field is zero
    out.data = pub.data
    if pub.offset:
        out.offset = pub.offset
    if pub.info is not None:
        _client_info(out.info, pub.info)
    if pub.tags:
        out.tags.update(pub.tags)
    if pub.delta:
        out.delta = True


def _subscribe_result(out: pb.SubscribeResult, result: SubscribeResult) -> None:
    out.SetInParent()
    if result.expires:
        out.expires = True
        out.ttl = result.ttl
    out.recoverable = result.recoverable
    out.positioned = result.positioned
    out.epoch = result.epoch
    out.offset = result.offset
    for pub in result.publications:
        _publication(out.publications.add(), pub)
    out.recovered = result.recovered
    out.was_recovering = result.was_recovering
    if result.data is not None:
        out.data = result.data
    if result.delta:
        out.delta = True


def _connect_result(out: pb.ConnectResult | pb.Connect, result: ConnectResult) -> None:
    """ConnectResult (a reply) and Connect (a unidirectional push) share these fields."""
    out.SetInParent()
    out.client = result.client
    out.version = result.version
    if result.expires:
        out.expires = True
        out.ttl = result.ttl
    if result.data is not None:
        out.data = result.data
    for channel, sub in result.subs.items():
        _subscribe_result(out.subs[channel], sub)
    out.ping = result.ping
    out.pong = result.pong
    out.session = result.session
    out.node = result.node


def _reply(command_id: int) -> pb.Reply:
    reply = pb.Reply()
    reply.id = command_id
    return reply


def connect_reply(command_id: int, result: ConnectResult) -> bytes:
    reply = _reply(command_id)
    _connect_result(reply.connect, result)
    return delimited(reply)


def subscribe_reply(command_id: int, result: SubscribeResult) -> bytes:
    reply = _reply(command_id)
    _subscribe_result(reply.subscribe, result)
    return delimited(reply)


def empty_reply(command_id: int, method: str) -> bytes:
    """publish, unsubscribe, ping: a result with nothing in it, there all the same (the
    reply names its command)."""
    reply = _reply(command_id)
    getattr(reply, method).SetInParent()  # the Reply field named as the method is
    return delimited(reply)


def rpc_reply(command_id: int, data: bytes | None) -> bytes:
    reply = _reply(command_id)
    out = reply.rpc
    out.SetInParent()
    if data is not None:
        out.data = data
    return delimited(reply)


def refresh_reply(command_id: int, result: RefreshResult) -> bytes:
    reply = _reply(command_id)
    out = reply.refresh
    out.SetInParent()
    out.client = result.client
    out.version = result.version
    if result.expires:
        out.expires = True
        out.ttl = result.ttl
    return delimited(reply)


def sub_refresh_reply(command_id: int, expires: bool, ttl: int) -> bytes:
    reply = _reply(command_id)
    out = reply.sub_refresh
    out.SetInParent()
    if expires:
        out.expires = True
        out.ttl = ttl
    return delimited(reply)


def presence_reply(command_id: int, clients: dict[str, ClientInfo]) -> bytes:
    reply = _reply(command_id)
    out = reply.presence
    out.SetInParent()
    for client_id, info in clients.items():
        _client_info(out.presence[client_id], info)
    return delimited(reply)


def presence_stats_reply(command_id: int, num_clients: int, num_users: int) -> bytes:
    reply = _reply(command_id)
    out = reply.presence_stats
    out.SetInParent()
    out.num_clients = num_clients
    out.num_users = num_users
    return delimited(reply)


def history_reply(
    command_id: int, publications: list[Publication], offset: int, epoch: str
) -> bytes:
    reply = _reply(command_id)
    out = reply.history
    out.SetInParent()
    for pub in publications:
        _publication(out.publications.add(), pub)
    out.epoch = epoch
    out.offset = offset
    return delimited(reply)


def error_reply(command_id: int, error: HubError) -> bytes:
    reply = _reply(command_id)
    out = reply.error
    out.code = error.code
    out.message = error.message
    out.temporary = error.temporary
    return delimited(reply)


# --- encoding: pushes ------------------------------------------------------------------
# Bidirectional connections get each push wrapped in a Reply without id; unidirectional
# ones get the Push itself, both length-delimited.

#: the server's ping: an empty Reply
PING = delimited(pb.Reply())


def _push(uni: bool) -> tuple[pb.Reply | pb.Push, pb.Push]:
    """The message to send and the Push to fill in it."""
    if uni:
        push = pb.Push()
        return push, push
    reply = pb.Reply()
    return reply, reply.push


def pub_push(channel: str, pub: Publication, uni: bool = False) -> bytes:
    message, push = _push(uni)
    push.channel = channel
    _publication(push.pub, pub)
    return delimited(message)


def join_push(channel: str, info: ClientInfo, uni: bool = False) -> bytes:
    message, push = _push(uni)
    push.channel = channel
    _client_info(push.join.info, info)
    return delimited(message)


def leave_push(channel: str, info: ClientInfo, uni: bool = False) -> bytes:
    message, push = _push(uni)
    push.channel = channel
    _client_info(push.leave.info, info)
    return delimited(message)


def unsubscribe_push(channel: str, code: int, reason: str, uni: bool = False) -> bytes:
    message, push = _push(uni)
    push.channel = channel
    out = push.unsubscribe
    out.SetInParent()
    out.code = code
    out.reason = reason
    return delimited(message)


def subscribe_push(channel: str, result: SubscribeResult, uni: bool = False) -> bytes:
    """A server-side subscription made while connected: a ``Subscribe`` (the position;
    not the token's expiry, which Subscribe has no field for)."""
    message, push = _push(uni)
    push.channel = channel
    out = push.subscribe
    out.SetInParent()
    out.recoverable = result.recoverable
    out.epoch = result.epoch
    out.offset = result.offset
    out.positioned = result.positioned
    if result.data is not None:
        out.data = result.data
    return delimited(message)


def message_push(data: bytes, uni: bool = False) -> bytes:
    message, push = _push(uni)
    push.message.SetInParent()
    push.message.data = data
    return delimited(message)


def refresh_push(expires: bool, ttl: int, uni: bool = False) -> bytes:
    message, push = _push(uni)
    out = push.refresh
    out.SetInParent()
    if expires:
        out.expires = True
        out.ttl = ttl
    return delimited(message)


def connect_push(result: ConnectResult) -> bytes:
    """The first message of a unidirectional connection."""
    push = pb.Push()
    _connect_result(push.connect, result)
    return delimited(push)


def disconnect_push(disconnect: Disconnect, uni: bool = False) -> bytes:
    message, push = _push(uni)
    out = push.disconnect
    out.SetInParent()
    out.code = disconnect.code
    out.reason = disconnect.reason
    out.reconnect = disconnect.reconnect
    return delimited(message)
