"""A Centrifugo protocol session: the hub's sink for one connection, and its dispatcher.

The transport feeds it frames; its codec (JSON or Protobuf, codecs.py, chosen by the
transport for the connection) decodes them into commands; it calls the hub client and
writes the encoded replies through the transport's ``FrameWriter``. As the hub's
``ClientSink`` it encodes pushes, caching each publication's bytes per (encoding,
uni/bidi, framing) so a broadcast is encoded once per kind of recipient. It does no I/O
of its own.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from pushgate.engine.base import ClientInfo, Publication, StreamPosition
from pushgate.hub import notifications, reserved, status
from pushgate.hub.errors import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_INAPPROPRIATE_PROTOCOL,
    DISCONNECT_INVALID_TOKEN,
    DISCONNECT_SERVER_ERROR,
    Disconnect,
    DisconnectError,
    ErrorInternal,
    ErrorMethodNotFound,
    ErrorNotAvailable,
    HubError,
)
from pushgate.hub.sink import JoinCache
from pushgate.json_types import JsonObject
from pushgate.metrics import COMMANDS
from pushgate.protocol.centrifugo import delta
from pushgate.protocol.centrifugo.codecs import JSON, Codec, UnfitData
from pushgate.protocol.centrifugo.commands import (
    METHODS,
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
)
from pushgate.protocol.writer import carries_event_ids

if TYPE_CHECKING:
    from pushgate.hub.hub import Hub
    from pushgate.hub.results import SubscribeResult
    from pushgate.protocol.writer import FrameWriter

log = logging.getLogger("pushgate.centrifugo")

#: what a publication's cache holds for a recipient whose encoding cannot carry it
UNFIT = b""


#: SubscribeRequest.type values of subscriptions other than streams (client.proto)
SUBSCRIPTION_TYPES = {1: "map", 2: "map_clients", 3: "map_users", 4: "shared_poll"}


def _unsupported_type(method: str, value: int) -> HubError:
    """Error 108 for a request ``type`` other than a stream's (map and shared-poll
    subscriptions, map publishes, track/untrack): pushgate has only stream channels and
    says so rather than serving the request as something the client would misread."""
    name = SUBSCRIPTION_TYPES.get(value, "unknown")
    return ErrorNotAvailable(
        f"not available: {method} type {value} ({name}): {name} subscriptions are not "
        "supported, only streams"
    )


def position_event_id(channel: str, offset: int, epoch: str) -> str:
    """An SSE event id naming a stream position: ``<offset>:<epoch>:<channel>``."""
    return f"{offset}:{epoch}:{channel}"


def parse_position_event_id(event_id: str) -> tuple[str, JsonObject] | None:
    """The channel and its recovery request from a Last-Event-ID, or None."""
    offset, _, rest = event_id.partition(":")
    epoch, _, channel = rest.partition(":")
    if not offset.isdigit() or not channel or "\n" in event_id:
        return None
    return channel, {"recover": True, "offset": int(offset), "epoch": epoch}


class CentrifugoSession:
    dialect = "centrifugo"

    __slots__ = ("_delta", "_key", "client", "codec", "uni", "wants_pong", "writer")

    def __init__(
        self,
        hub: Hub,
        writer: FrameWriter,
        transport: str,
        *,
        uni: bool = False,
        codec: Codec = JSON,
    ) -> None:
        self.writer = writer
        self.codec = codec
        #: unidirectional: pushes go unwrapped and the client sends nothing after connect
        self.uni = uni
        self.wants_pong = writer.bidirectional and not uni
        self._key = (codec.dialect, "uni" if uni else "bidi", writer.framing)
        #: channels with delta compression → the publication last sent there (the base
        #: a delta must be made against); None while no channel uses it
        self._delta: dict[str, Publication | None] | None = None
        self.client = hub.new_client(self, transport)
        self.client.protocol = codec.name

    async def connect_unidirectional(self, request: object) -> None:
        """A unidirectional connection's one request: a ConnectRequest in the codec's
        encoding (bytes), a JSON object already parsed (``{"token": …, "subs": …}``), or
        a ConnectRequest already decoded."""
        client = self.client
        try:
            if isinstance(request, ConnectRequest):
                command = request
            else:
                command = self.codec.decode_connect_request(request)
        except ProtocolError as exc:
            log.info("bad unidirectional connect from %s: %s", client.id, exc)
            client.disconnect(DISCONNECT_BAD_REQUEST)
            return
        try:
            result = await client.connect(
                token=command.token,
                name=command.name,
                subs=command.subs,
                data=command.data,
                headers=command.headers,
            )
        except HubError as error:
            # no replies on a unidirectional connection: the error becomes the disconnect
            # (a temporary one, e.g. a connect proxy that did not answer, asks to reconnect)
            log.info("unidirectional connect refused for %s: %s", client.id, error.message)
            if error.temporary:
                code = DISCONNECT_SERVER_ERROR
            elif error.code in (101, 109):
                code = DISCONNECT_INVALID_TOKEN
            else:
                code = DISCONNECT_BAD_REQUEST
            client.disconnect(code)
            return
        except DisconnectError as exc:
            client.disconnect(exc.disconnect)
            return
        try:
            self._write(self.codec.connect_push(result))
        except UnfitData as exc:
            self._unfit(exc)
            return
        client.activate_all()

    # --- incoming -----------------------------------------------------------------
    async def handle_frame(self, frame: bytes | str) -> None:
        client = self.client
        if self.uni:
            log.info("unidirectional client=%s sent a message; ignored", client.id)
            return
        try:
            commands = self.codec.decode_commands(frame)
        except ProtocolError as exc:
            log.info("bad frame from client=%s user=%s: %s", client.id, client.user, exc)
            client.disconnect(DISCONNECT_BAD_REQUEST)
            return
        for command in commands:
            if client.closed or self.writer.closed:
                return
            await self.handle_command(command)

    def handle_now(self, frame: bytes) -> bool:
        """Take a lone pong at once, without a task (a ping's round trip is most of what an
        idle connection costs); anything else is for ``handle_frame`` (False)."""
        if frame != self.codec.pong or self.uni or not self.client.connected:
            return False
        if not (self.client.closed or self.writer.closed):
            self._pong()
        return True

    def _pong(self) -> None:
        client = self.client
        # pongs spend the command rate too: a flood of them is a flood
        try:
            client.check_command_rate()
        except HubError:
            return  # no reply to a pong; the refusal counts towards disconnecting
        except DisconnectError as exc:
            client.disconnect(exc.disconnect)
            return
        client.pong()

    async def handle_command(self, command: Command) -> None:
        client = self.client
        if command.is_pong:
            if not client.connected:
                # nothing was pinged yet: an empty command first is not a client's pong
                log.info("empty command before connect from %s", client.id)
                client.disconnect(DISCONNECT_BAD_REQUEST)
                return
            self._pong()
            return
        if not client.connected and command.method != "connect":
            log.info("command %s before connect from %s", command.method, client.id)
            client.disconnect(DISCONNECT_BAD_REQUEST)
            return
        # a metric label is never a client-chosen string: unknown methods are one label
        label = command.method if command.method in METHODS else "unknown"
        try:
            client.check_command_rate()
            await self._dispatch(command)
            COMMANDS.labels(label, "ok").inc()
        except HubError as error:
            COMMANDS.labels(label, "error").inc()
            self._write(self.codec.error_reply(command.id, error))
        except DisconnectError as exc:
            COMMANDS.labels(label, "disconnect").inc()
            client.disconnect(exc.disconnect)
        except UnfitData as exc:
            COMMANDS.labels(label, "disconnect").inc()
            self._unfit(exc)
        except Exception:
            COMMANDS.labels(label, "internal_error").inc()
            log.exception("command %s failed for client=%s", command.method, client.id)
            if command.method == "connect":
                client.disconnect(DISCONNECT_SERVER_ERROR)
            else:
                self._write(self.codec.error_reply(command.id, ErrorInternal()))

    async def _dispatch(self, cmd: Command) -> None:
        client = self.client
        codec = self.codec
        method = cmd.method
        if cmd.type:
            # map and shared-poll subscriptions, map publishes, track/untrack: kinds
            # pushgate does not have; refused rather than served as something else
            error = _unsupported_type(method, cmd.type)
            log.info("%s refused for %s: %s", method, client.id, error.message)
            raise error
        if isinstance(cmd, ConnectRequest):
            result = await client.connect(
                token=cmd.token,
                name=cmd.name,
                version=cmd.version,
                subs=cmd.subs,
                data=cmd.data,
                headers=cmd.headers,
                attention=status.attention_in(cmd.data),
            )
            self._write(codec.connect_reply(cmd.id, result))
            client.activate_all()
            if client.read_positions:  # the user's read positions (hub/notifications.py)
                self.push_message(notifications.read_message(client.read_positions))
        elif isinstance(cmd, SubscribeRequest):
            sub, sub_result = await client.subscribe(
                cmd.channel,
                token=cmd.token,
                recover=cmd.recover,
                offset=cmd.offset,
                epoch=cmd.epoch,
                join_leave=cmd.join_leave,
                data=None,
                positioned=cmd.positioned,
                recoverable=cmd.recoverable,
                flag=cmd.flag,
                # the hub checks and compiles the tree from its plain form
                tags_filter=asdict(cmd.tf) if cmd.tf is not None else None,
                delta=cmd.delta,
                client_data=cmd.data,
            )
            if sub_result.delta:
                self._start_delta(cmd.channel, sub_result)
            # recovered publications this encoding cannot carry raise UnfitData here:
            # the client must not believe it recovered, and a retry would fail the same
            self._write(codec.subscribe_reply(cmd.id, sub_result))
            client.activate(sub)
        elif isinstance(cmd, PublishRequest):
            await client.publish(cmd.channel, cmd.data)
            self._write(codec.empty_reply(cmd.id, method))
        elif isinstance(cmd, HistoryRequest):
            since = StreamPosition(*cmd.since) if cmd.since else None
            history = await client.history(
                cmd.channel, limit=cmd.limit, since=since, reverse=cmd.reverse
            )
            position = history.position
            self._write(
                codec.history_reply(cmd.id, history.publications, position.offset, position.epoch)
            )
        elif isinstance(cmd, ChannelRequest) and method == "unsubscribe":
            self._stop_delta(cmd.channel)
            await client.unsubscribe(cmd.channel)
            self._write(codec.empty_reply(cmd.id, method))
        elif isinstance(cmd, ChannelRequest) and method == "presence":
            self._write(codec.presence_reply(cmd.id, await client.presence(cmd.channel)))
        elif isinstance(cmd, ChannelRequest) and method == "presence_stats":
            clients, users = await client.presence_stats(cmd.channel)
            self._write(codec.presence_stats_reply(cmd.id, clients, users))
        elif isinstance(cmd, RefreshRequest):
            self._write(codec.refresh_reply(cmd.id, await client.refresh(cmd.token)))
        elif isinstance(cmd, SubRefreshRequest):
            expires, ttl = await client.sub_refresh(cmd.channel, cmd.token)
            self._write(codec.sub_refresh_reply(cmd.id, expires, ttl))
        elif isinstance(cmd, DataRequest) and method == "rpc" and reserved.owns(cmd.rpc_method):
            # pushgate's own methods (hub/reserved.py): never an RPC proxy's
            await reserved.call(client, cmd.rpc_method, cmd.data)
            self._write(codec.empty_reply(cmd.id, method))
        elif isinstance(cmd, DataRequest) and method == "rpc":
            data = await client.rpc(cmd.rpc_method, cmd.data)
            self._write(codec.rpc_reply(cmd.id, data))
        elif isinstance(cmd, DataRequest):
            # ``send`` is asynchronous and expects no reply: to the send proxy, or dropped
            await client.send(cmd.data)
        elif method == "ping":
            self._write(codec.empty_reply(cmd.id, method))
        else:
            raise ErrorMethodNotFound

    def _write(self, payload: bytes) -> None:
        writer = self.writer
        writer.write(writer.frame(payload))

    def _unfit(self, exc: UnfitData) -> None:
        """The connection's encoding cannot carry what it must be sent: as Centrifugo,
        it is closed for an inappropriate protocol (no reconnect: it would fail again)."""
        client = self.client
        log.warning("client=%s user=%s (%s): %s", client.id, client.user, self.codec.name, exc)
        client.disconnect(DISCONNECT_INAPPROPRIATE_PROTOCOL)

    async def closed(self) -> None:
        """The transport is gone."""
        await self.client.closed_by_transport()

    # --- ClientSink ---------------------------------------------------------------
    def push_publication(self, channel: str, pub: Publication) -> None:
        if self._delta is not None and channel in self._delta:
            self._push_delta(channel, pub)
            return
        data = pub.cache.get(self._key)
        if data is None:
            data = pub.cache[self._key] = self._frame_publication(channel, pub)
        if data:
            self.writer.write(data)
        else:
            self._unfit(UnfitData(f"publication {pub.offset} in {channel} is not JSON"))

    def _frame_publication(self, channel: str, pub: Publication) -> bytes:
        """The publication's framed push, once for every recipient like this one."""
        try:
            payload = self.codec.pub_push(channel, pub, self.uni)
        except UnfitData:
            return UNFIT
        writer = self.writer
        if pub.offset and carries_event_ids(writer):
            return writer.frame(payload, position_event_id(channel, pub.offset, pub.epoch))
        return writer.frame(payload)

    # --- delta compression (delta.py) -----------------------------------------------
    def _start_delta(self, channel: str, result: SubscribeResult) -> None:
        """A subscription with delta: its recovered publications go whole then as deltas,
        and what it is sent live is tracked as the base of the next delta."""
        json = not self.codec.binary
        try:
            views = delta.recovered(result.publications, json)
        except delta.NotText as exc:
            raise UnfitData(str(exc)) from None
        if self._delta is None:
            self._delta = {}
        # a delta is made against the live stream's previous publication: recovered ones
        # come from history, so the first live publication goes whole
        self._delta[channel] = None
        result.publications = views

    def _stop_delta(self, channel: str) -> None:
        if self._delta is not None:
            self._delta.pop(channel, None)

    def _push_delta(self, channel: str, pub: Publication) -> None:
        assert self._delta is not None
        last = self._delta[channel]
        self._delta[channel] = pub
        patch = delta.patch_of(pub) if last is not None and pub.prev is last else None
        json = not self.codec.binary
        key: tuple[str, ...]
        if patch is not None:
            key = (*self._key, "delta")
        else:
            key = (*self._key, "whole") if json else self._key
        data = pub.cache.get(key)
        if data is None:
            try:
                view = delta.patched(pub, patch, json) if patch else delta.whole(pub, json)
            except delta.NotText:
                view = None
            data = pub.cache[key] = self._frame_publication(channel, view) if view else UNFIT
        if data:
            self.writer.write(data)
        else:
            self._unfit(UnfitData(f"publication {pub.offset} in {channel} is not JSON"))

    def push_join(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        data = cache.get(self._key)
        if data is None:
            payload = self.codec.join_push(channel, info, self.uni)
            data = cache[self._key] = self.writer.frame(payload)
        self.writer.write(data)

    def push_leave(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        data = cache.get(self._key)
        if data is None:
            payload = self.codec.leave_push(channel, info, self.uni)
            data = cache[self._key] = self.writer.frame(payload)
        self.writer.write(data)

    def push_subscribe(self, channel: str, result: SubscribeResult) -> None:
        self._write(self.codec.subscribe_push(channel, result, self.uni))

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        self._stop_delta(channel)
        self._write(self.codec.unsubscribe_push(channel, code, reason, self.uni))

    def push_message(self, data: bytes) -> None:
        self._write(self.codec.message_push(data, self.uni))

    def push_refresh(self, expires: bool, ttl: int) -> None:
        self._write(self.codec.refresh_push(expires, ttl, self.uni))

    def send_ping(self) -> None:
        if self.writer.pings:
            self._write(self.codec.ping)

    def queued_bytes(self) -> int:
        return self.writer.queued_bytes()

    def close(self, disconnect: Disconnect) -> None:
        writer = self.writer
        if writer.closed:
            return
        if not writer.close_carries_code:
            self._write(self.codec.disconnect_push(disconnect, self.uni))
        writer.close(disconnect.code, disconnect.reason)
