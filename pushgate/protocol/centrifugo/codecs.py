"""The two encodings of the Centrifugo protocol behind one interface, chosen per connection.

A ``Codec`` turns a frame into the typed commands of commands.py and the hub's typed
results into the bytes of one message: JSON (commands.py, replies.py) or Protobuf
(protobuf_codec.py). The session holds one and never looks at the encoding itself;
the transport picks it from the WebSocket subprotocol, ``cf_protocol`` or the request's
Content-Type (transport/negotiation.py) and frames the messages (text or binary).

JSON can carry publication data only if it is JSON (data is embedded as raw JSON): a
protobuf client may publish any bytes (the protobuf decoder marks what is not JSON as
``BinaryData``), and a JSON connection that would have to carry such data gets
``UnfitData`` from its codec instead of a broken message.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from pushgate.engine.base import BinaryData, ClientInfo, Publication
from pushgate.hub.errors import Disconnect, HubError
from pushgate.hub.results import ConnectResult, RefreshResult, SubscribeResult
from pushgate.protocol.centrifugo import protobuf_codec, replies
from pushgate.protocol.centrifugo.commands import (
    Command,
    ConnectRequest,
    ProtocolError,
    decode_command,
    decode_commands,
)


class UnfitData(Exception):
    """The message would carry data this encoding cannot (binary data in JSON)."""


class Codec(Protocol):
    #: ``json`` or ``protobuf``
    name: str
    #: names the encoding in the encode-once cache key
    dialect: str
    #: its messages go in binary WebSocket frames and octet-stream bodies
    binary: bool
    #: the server's ping message
    ping: bytes
    #: a client's pong as SDKs send it (an empty command), recognised without decoding
    pong: bytes

    def decode_commands(self, frame: bytes | str) -> list[Command]: ...

    def decode_connect_request(self, raw: bytes | object) -> ConnectRequest:
        """A unidirectional connection's request (bytes, or a parsed JSON object)."""

    def connect_reply(self, command_id: int, result: ConnectResult) -> bytes: ...

    def subscribe_reply(self, command_id: int, result: SubscribeResult) -> bytes: ...

    def empty_reply(self, command_id: int, method: str) -> bytes: ...

    def rpc_reply(self, command_id: int, data: bytes | None) -> bytes: ...

    def refresh_reply(self, command_id: int, result: RefreshResult) -> bytes: ...

    def sub_refresh_reply(self, command_id: int, expires: bool, ttl: int) -> bytes: ...

    def presence_reply(self, command_id: int, clients: dict[str, ClientInfo]) -> bytes: ...

    def presence_stats_reply(self, command_id: int, num_clients: int, num_users: int) -> bytes: ...

    def history_reply(
        self, command_id: int, publications: list[Publication], offset: int, epoch: str
    ) -> bytes: ...

    def error_reply(self, command_id: int, error: HubError) -> bytes: ...

    def pub_push(self, channel: str, pub: Publication, uni: bool = False) -> bytes: ...

    def join_push(self, channel: str, info: ClientInfo, uni: bool = False) -> bytes: ...

    def leave_push(self, channel: str, info: ClientInfo, uni: bool = False) -> bytes: ...

    def unsubscribe_push(
        self, channel: str, code: int, reason: str, uni: bool = False
    ) -> bytes: ...

    def subscribe_push(self, channel: str, result: SubscribeResult, uni: bool = False) -> bytes: ...

    def message_push(self, data: bytes, uni: bool = False) -> bytes: ...

    def refresh_push(self, expires: bool, ttl: int, uni: bool = False) -> bytes: ...

    def connect_push(self, result: ConnectResult) -> bytes: ...

    def disconnect_push(self, disconnect: Disconnect, uni: bool = False) -> bytes: ...


# --- JSON ------------------------------------------------------------------------------
def require_json(data: bytes | None) -> None:
    """UnfitData if ``data`` is a Protobuf client's binary data (``BinaryData``): every
    other publication's data is JSON by construction, so this costs no parsing."""
    if type(data) is BinaryData:
        raise UnfitData("publication data is not JSON; only protobuf clients can take it")


def _require_json_publications(publications: list[Publication]) -> None:
    for pub in publications:
        require_json(pub.data)


def _require_json_result(result: SubscribeResult) -> None:
    require_json(result.data)
    _require_json_publications(result.publications)


class JsonCodec:
    name = "json"
    dialect = "centrifugo-json"
    binary = False
    ping = replies.PING
    pong = b"{}"

    decode_commands = staticmethod(decode_commands)

    @staticmethod
    def decode_connect_request(raw: bytes | object) -> ConnectRequest:
        if isinstance(raw, bytes | str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"connect request is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ProtocolError("connect request must be a JSON object")
        try:
            command = decode_command(orjson.dumps({"id": 1, "connect": raw}))
        except orjson.JSONEncodeError as exc:
            raise ProtocolError(f"connect request: {exc}") from None
        assert isinstance(command, ConnectRequest)
        return command

    @staticmethod
    def connect_reply(command_id: int, result: ConnectResult) -> bytes:
        require_json(result.data)
        for sub in result.subs.values():
            _require_json_result(sub)
        return replies.reply(command_id, "connect", replies.connect_result(result))

    @staticmethod
    def subscribe_reply(command_id: int, result: SubscribeResult) -> bytes:
        _require_json_result(result)
        return replies.reply(command_id, "subscribe", replies.subscribe_result(result))

    @staticmethod
    def empty_reply(command_id: int, method: str) -> bytes:
        return replies.reply(command_id, method, {})

    @staticmethod
    def rpc_reply(command_id: int, data: bytes | None) -> bytes:
        require_json(data)
        return replies.reply(command_id, "rpc", replies.rpc_result(data))

    @staticmethod
    def refresh_reply(command_id: int, result: RefreshResult) -> bytes:
        return replies.reply(command_id, "refresh", replies.refresh_result(result))

    @staticmethod
    def sub_refresh_reply(command_id: int, expires: bool, ttl: int) -> bytes:
        body = {"expires": True, "ttl": ttl} if expires else {}
        return replies.reply(command_id, "sub_refresh", body)

    @staticmethod
    def presence_reply(command_id: int, clients: dict[str, ClientInfo]) -> bytes:
        return replies.reply(command_id, "presence", replies.presence_result(clients))

    @staticmethod
    def presence_stats_reply(command_id: int, num_clients: int, num_users: int) -> bytes:
        body = {"num_clients": num_clients, "num_users": num_users}
        return replies.reply(command_id, "presence_stats", body)

    @staticmethod
    def history_reply(
        command_id: int, publications: list[Publication], offset: int, epoch: str
    ) -> bytes:
        _require_json_publications(publications)
        body = replies.history_result(publications, offset, epoch)
        return replies.reply(command_id, "history", body)

    error_reply = staticmethod(replies.error_reply)

    @staticmethod
    def pub_push(channel: str, pub: Publication, uni: bool = False) -> bytes:
        require_json(pub.data)
        return replies.pub_push(channel, pub, uni)

    join_push = staticmethod(replies.join_push)
    leave_push = staticmethod(replies.leave_push)
    unsubscribe_push = staticmethod(replies.unsubscribe_push)
    subscribe_push = staticmethod(replies.subscribe_push)
    message_push = staticmethod(replies.message_push)
    refresh_push = staticmethod(replies.refresh_push)

    @staticmethod
    def connect_push(result: ConnectResult) -> bytes:
        require_json(result.data)
        for sub in result.subs.values():
            _require_json_result(sub)
        return replies.connect_push(result)

    disconnect_push = staticmethod(replies.disconnect_push)


# --- Protobuf --------------------------------------------------------------------------
class ProtobufCodec:
    name = "protobuf"
    dialect = "centrifugo-protobuf"
    binary = True
    ping = protobuf_codec.PING
    pong = b"\x00"  # an empty Command, length-delimited

    decode_commands = staticmethod(protobuf_codec.decode_commands)

    @staticmethod
    def decode_connect_request(raw: bytes | object) -> ConnectRequest:
        if isinstance(raw, str):
            raw = raw.encode()
        if not isinstance(raw, bytes):
            raise ProtocolError("connect request must be a protobuf ConnectRequest")
        return protobuf_codec.decode_connect_request(raw)

    connect_reply = staticmethod(protobuf_codec.connect_reply)
    subscribe_reply = staticmethod(protobuf_codec.subscribe_reply)
    empty_reply = staticmethod(protobuf_codec.empty_reply)
    rpc_reply = staticmethod(protobuf_codec.rpc_reply)
    refresh_reply = staticmethod(protobuf_codec.refresh_reply)
    sub_refresh_reply = staticmethod(protobuf_codec.sub_refresh_reply)
    presence_reply = staticmethod(protobuf_codec.presence_reply)
    presence_stats_reply = staticmethod(protobuf_codec.presence_stats_reply)
    history_reply = staticmethod(protobuf_codec.history_reply)
    error_reply = staticmethod(protobuf_codec.error_reply)
    pub_push = staticmethod(protobuf_codec.pub_push)
    join_push = staticmethod(protobuf_codec.join_push)
    leave_push = staticmethod(protobuf_codec.leave_push)
    unsubscribe_push = staticmethod(protobuf_codec.unsubscribe_push)
    subscribe_push = staticmethod(protobuf_codec.subscribe_push)
    message_push = staticmethod(protobuf_codec.message_push)
    refresh_push = staticmethod(protobuf_codec.refresh_push)
    connect_push = staticmethod(protobuf_codec.connect_push)
    disconnect_push = staticmethod(protobuf_codec.disconnect_push)


JSON: Codec = JsonCodec()
PROTOBUF: Codec = ProtobufCodec()
CODECS: dict[str, Codec] = {"json": JSON, "protobuf": PROTOBUF}
