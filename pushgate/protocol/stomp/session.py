"""A STOMP session: the hub's sink for one connection, and the dispatcher of its frames.

The transport feeds it bytes; the codec turns them into frames; each frame becomes a
hub call (connect, subscribe, publish…) and the answer goes back as STOMP frames
through a ``StompWriter``. Every bad frame gets an ERROR frame with a ``message``
header, then the connection is closed, as STOMP 1.2 says.

Encode once: a MESSAGE frame is ``MESSAGE\\n`` + the per-subscription headers
(``subscription``, ``destination``; built once when the client subscribes) + the shared
part (``message-id``, ``content-type``, ``content-length``, the stream position, the
body; built once per publication and kept in ``Publication.cache``). A delivery writes
those two ready-made byte strings side by side: nothing is encoded per subscriber.

Bounded: every subscription id counts against ``client.max_subscriptions`` (ids sharing
a channel too), subscribing and unsubscribing an id is O(1) (a channel's ids are a dict),
and transactions are bounded in number, frames and bytes (``transactions.py``); a SEND
in a transaction is checked when it arrives, not at COMMIT.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson

from pushgate.auth import looks_like_jwt
from pushgate.engine.base import BinaryData
from pushgate.hub import status
from pushgate.hub.client import count_limit
from pushgate.hub.errors import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_NO_PONG,
    Disconnect,
    DisconnectError,
    ErrorLimitExceeded,
    HubError,
)
from pushgate.hub.sink import JoinCache
from pushgate.protocol.stomp.codec import (
    Frame,
    FrameError,
    FrameParser,
    encode_frame,
    encode_headers,
    negotiate_version,
    parse_heartbeat,
)
from pushgate.protocol.stomp.destinations import DestinationError, Destinations
from pushgate.protocol.stomp.transactions import (
    TransactionLimit,
    TransactionLimits,
    Transactions,
)

if TYPE_CHECKING:
    from pushgate.engine.base import ClientInfo, Publication
    from pushgate.hub.hub import Hub
    from pushgate.hub.results import SubscribeResult
    from pushgate.protocol.stomp.heartbeat import HeartbeatWheel
    from pushgate.protocol.stomp.transactions import Transaction

log = logging.getLogger("pushgate.stomp")

DIALECT = "stomp"
ACK_MODES = ("auto", "client", "client-individual")
#: a peer's beat may be this late (times its interval, plus a wheel tick) before the
#: connection is declared dead
HEARTBEAT_TOLERANCE = 1.5
#: a beat may go out this much before it is due (the wheel's granularity)
SEND_EARLY = 0.5
CONTENT_TYPE = "application/json"
#: the close code of a connection the client ended with DISCONNECT
NORMAL_CLOSE = 1000

_message_ids = itertools.count(1)


class StompWriter(Protocol):
    """What a transport offers a STOMP session."""

    @property
    def closed(self) -> bool: ...

    def send(self, frame: bytes) -> None:
        """Queue one complete frame without blocking."""

    def send_parts(self, head: bytes, tail: bytes) -> None:
        """Queue one frame given as two pieces (shared bytes are not copied)."""

    def send_heartbeat(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    def queued_bytes(self) -> int:
        """Bytes written and not yet sent (the ``pushgate_write_queue_bytes`` gauge)."""


@dataclass(slots=True, frozen=True)
class StompSettings:
    #: how often the server can send heart-beats / wants them (ms; 0 = never)
    heartbeat_send_ms: int = 10000
    heartbeat_receive_ms: int = 10000
    max_frame_bytes: int = 65536
    server: str = "pushgate"
    transactions: TransactionLimits = field(default_factory=TransactionLimits)
    #: a SEND to ``<rpc_prefix><method>`` is a client RPC ("" = none)
    rpc_prefix: str = "/rpc/"


#: a SEND here reports the user's attention (header ``state``), publishing nothing
PRESENCE_DESTINATION = "/pushgate/presence"


class StompFailure(Exception):
    """Answer the frame with ERROR and close."""

    def __init__(
        self, message: str, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}


class _Sub:
    __slots__ = ("ack", "channel", "destination", "id", "prefix")

    def __init__(self, sub_id: str, destination: str, channel: str, ack: bool, version: str):
        self.id = sub_id
        self.destination = destination
        self.channel = channel
        self.ack = ack
        self.prefix = b"MESSAGE\n" + encode_headers(
            (("subscription", sub_id), ("destination", destination)), escaped=version != "1.0"
        )


def message_tail(pub: Publication, *, ack: bool, escaped: bool = True) -> bytes:
    """The subscription-independent part of a MESSAGE frame for ``pub``."""
    message_id = pub.message_id
    if not message_id:
        message_id = f"{pub.epoch}-{pub.offset}" if pub.offset else f"n{next(_message_ids)}"
        pub.message_id = message_id
    headers = [("message-id", message_id)]
    if ack:
        headers.append(("ack", message_id))
    headers.append(("content-type", CONTENT_TYPE))
    headers.append(("content-length", str(len(pub.data))))
    if pub.offset:
        headers.append(("x-pushgate-offset", str(pub.offset)))
        headers.append(("x-pushgate-epoch", pub.epoch))
    return b"".join((encode_headers(headers, escaped=escaped), b"\n", pub.data, b"\x00"))


def json_body(body: bytes, content_type: str = "") -> bytes | None:
    """Publication data from a frame or message body: JSON as it is, other UTF-8 text as
    a JSON string; None for binary that is neither."""
    if not body:
        return b"null" if not content_type.startswith("text/") else b'""'
    if not content_type.startswith("text/"):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            return body
    try:
        return orjson.dumps(body.decode())
    except UnicodeDecodeError:
        return None


class StompSession:
    __slots__ = (
        "_closing",
        "client",
        "clock",
        "default_version",
        "destinations",
        "hb_slot",
        "last_rx",
        "next_send",
        "parser",
        "recv_every",
        "routes",
        "send_every",
        "settings",
        "standins",
        "subs",
        "transactions",
        "version",
        "wheel",
        "writer",
    )

    #: STOMP has its own heart-beats: the hub's pings are not answered
    wants_pong = False
    dialect = DIALECT

    def __init__(
        self,
        hub: Hub,
        writer: StompWriter,
        transport: str,
        settings: StompSettings,
        destinations: Destinations,
        wheel: HeartbeatWheel | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.destinations = destinations
        self.wheel = wheel
        self.clock = clock
        self.parser = FrameParser(max_frame_bytes=settings.max_frame_bytes)
        self.version = "1.2"
        #: the version a CONNECT without accept-version gets (a WebSocket subprotocol's)
        self.default_version = "1.0"
        #: STOMP subscription id → subscription
        self.subs: dict[str, _Sub] = {}
        #: channel → its STOMP subscriptions by id, in subscription order (several ids
        #: may share one channel); a dict, so adding or removing an id is O(1)
        self.routes: dict[str, dict[str, _Sub]] = {}
        #: channel → the stand-in subscription of a server-side subscription no id names
        self.standins: dict[str, _Sub] = {}
        #: made at the first BEGIN
        self.transactions: Transactions | None = None
        self.hb_slot: int | None = None
        self.send_every = 0.0
        self.recv_every = 0.0
        self.next_send = 0.0
        self.last_rx = clock()
        self._closing = False
        self.client = hub.new_client(self, transport)
        self.client.protocol = DIALECT

    # --- incoming -----------------------------------------------------------------
    async def feed(self, data: bytes | str) -> None:
        """Bytes from the peer: any part of one or more frames, or heart-beats."""
        if isinstance(data, str):
            data = data.encode()
        self.last_rx = self.clock()
        for item in self.parser.feed(data):
            if self._closing or self.writer.closed or self.client.closed:
                return
            if isinstance(item, FrameError):
                log.info("bad STOMP frame from client=%s: %s", self.client.id, item.message)
                self._fail(item.message, item.detail, receipt=item.receipt)
                return
            await self.handle(item)

    async def handle(self, frame: Frame) -> None:
        client = self.client
        try:
            # every frame spends the connection's command rate (client.commands_per_second):
            # STOMP has no temporary error, so a client past it gets ERROR and is closed
            client.check_command_rate()
            if not client.connected:
                if frame.command not in ("CONNECT", "STOMP"):
                    raise StompFailure("not connected", f"expected CONNECT, got {frame.command}")
                await self._connect(frame)
                return
            await self._dispatch(frame)
        except StompFailure as failure:
            self._fail(failure.message, failure.detail, frame.get("receipt"), failure.headers)
        except TransactionLimit as limit:
            log.info("client=%s user=%s: %s", client.id, client.user, limit.detail)
            count_limit("stomp_transaction")
            self._fail(limit.message, limit.detail, frame.get("receipt"))
        except DestinationError as exc:
            self._fail(exc.message, receipt=frame.get("receipt"))
        except HubError as error:
            detail = f"code {error.code}" + (" (temporary: try again)" if error.temporary else "")
            self._fail(error.message, detail, frame.get("receipt"))
        except DisconnectError as exc:
            self._fail(exc.disconnect.reason, receipt=frame.get("receipt"))
        except Exception:
            log.exception("STOMP %s failed for client=%s", frame.command, client.id)
            self._fail("internal server error", receipt=frame.get("receipt"))

    async def _dispatch(self, frame: Frame) -> None:
        command = frame.command
        if command in ("CONNECT", "STOMP"):
            raise StompFailure("already connected")
        if command == "DISCONNECT":
            self._receipt(frame)
            self._closing = True
            self.writer.close(NORMAL_CLOSE, "")
            return
        if command == "SEND" and frame.get("destination") == PRESENCE_DESTINATION:
            await self._attention(frame)  # not a publication, inside a transaction or not
            self._receipt(frame)
            return
        transaction = frame.get("transaction")
        if transaction and command in ("SEND", "ACK", "NACK"):
            self._hold(frame)
            self._receipt(frame)
            return
        if command == "SEND":
            await self._send(frame)
        elif command == "SUBSCRIBE":
            await self._subscribe(frame)
            return  # it writes its own receipt, before any recovered message
        elif command == "UNSUBSCRIBE":
            await self._unsubscribe(frame)
        elif command in ("ACK", "NACK"):
            self._ack(frame)
        elif command == "BEGIN":
            name = _required(frame, "transaction")
            transactions = self.transactions
            if transactions is None:
                transactions = self.transactions = Transactions(self.settings.transactions)
            if name in transactions:
                raise StompFailure("transaction already started", name)
            transactions.begin(name)
        elif command == "COMMIT":
            for channel, data in self._transaction(frame, pop=True).sends:
                await self.client.publish(channel, data)
        elif command == "ABORT":
            self._transaction(frame, pop=True)
        self._receipt(frame)

    def _transaction(self, frame: Frame, *, pop: bool = False) -> Transaction:
        """The open transaction ``frame`` names; StompFailure if there is none."""
        name = _required(frame, "transaction")
        transactions = self.transactions
        found = None
        if transactions is not None:
            found = transactions.pop(name) if pop else transactions.get(name)
        if found is None:
            raise StompFailure("unknown transaction", name)
        return found

    def _hold(self, frame: Frame) -> None:
        """A SEND, ACK or NACK inside a transaction: checked now, applied at COMMIT."""
        transaction = self._transaction(frame)
        if frame.command == "SEND" and self._rpc_method(frame) is not None:
            raise StompFailure("an RPC cannot be part of a transaction", frame.get("destination"))
        if frame.command == "SEND":
            channel, data = self._publication(frame)
            self.client.check_publish(channel)
            transaction.add_send(channel, data)
        else:
            self._ack(frame)
            transaction.add_frame()

    async def _connect(self, frame: Frame) -> None:
        client = self.client
        version = negotiate_version(frame.get("accept-version") or self.default_version)
        if version is None:
            raise StompFailure(
                "unsupported protocol version",
                "Supported protocol versions are 1.0 1.1 1.2",
                {"version": "1.0,1.1,1.2"},
            )
        self.version = self.parser.version = version
        heartbeat = parse_heartbeat(frame.get("heart-beat", "0,0"))
        if heartbeat is None:
            raise StompFailure("invalid heart-beat header", frame.get("heart-beat"))
        token = frame.get("passcode") or _bearer(
            frame.get("Authorization") or frame.get("authorization")
        )
        login = frame.get("login")
        data = None
        if client.hub.proxies.connect is not None and not looks_like_jwt(token):
            # not a token: the connect proxy decides, from the WebSocket upgrade's headers
            # (a cookie) and the login and passcode, if any (docs/proxy.md)
            given = {"login": login, "passcode": token}
            data = orjson.dumps({k: v for k, v in given.items() if v}) if login or token else None
            token = ""
        await client.connect(token=token, name="stomp", version=version, data=data)
        if login and login != client.user:
            raise StompFailure("login does not match the token's subject")
        settings = self.settings
        cx, cy = heartbeat
        sx, sy = settings.heartbeat_send_ms, settings.heartbeat_receive_ms
        headers = {
            "version": version,
            "heart-beat": f"{sx},{sy}",
            "session": client.id,
            "server": settings.server,
        }
        if client.user:
            headers["user-name"] = client.user
        self.writer.send(encode_frame("CONNECTED", headers))
        client.activate_all()
        self.send_every = max(sx, cy) / 1000 if sx and cy else 0.0
        self.recv_every = max(sy, cx) / 1000 if sy and cx else 0.0
        if self.wheel is not None and (self.send_every or self.recv_every):
            now = self.clock()
            self.next_send = now + self.send_every
            self.wheel.schedule(self, self._next_due(now))

    async def _attention(self, frame: Frame) -> None:
        """``SEND destination:/pushgate/presence`` with ``state: active|idle|hidden``: the
        user's attention on this connection (hub/status.py)."""
        state = status.parse_attention(frame.get("state"))
        if state is None:
            raise StompFailure(
                "invalid state header",
                f"{PRESENCE_DESTINATION} takes state: active, idle or hidden",
            )
        await self.client.set_attention(state)

    async def _send(self, frame: Frame) -> None:
        method = self._rpc_method(frame)
        if method is not None:
            await self._rpc(frame, method)
            return
        channel, data = self._publication(frame)
        await self.client.publish(channel, data)

    def _rpc_method(self, frame: Frame) -> str | None:
        """The RPC method a SEND names (``<rpc_prefix><method>``), or None."""
        prefix = self.settings.rpc_prefix
        destination = frame.get("destination")
        if not prefix or not destination.startswith(prefix):
            return None
        return destination[len(prefix) :]

    async def _rpc(self, frame: Frame, method: str) -> None:
        """A client RPC: the rpc proxy's answer goes back as a MESSAGE to the SEND's
        ``reply-to`` (with its ``correlation-id``); without ``reply-to`` the result is
        dropped and an error is an ERROR frame. The receipt follows the answer."""
        if not method:
            raise StompFailure("missing RPC method", f"SEND to {self.settings.rpc_prefix}<method>")
        data = json_body(frame.body, frame.get("content-type"))
        if data is None:
            data = BinaryData(frame.body)
        reply_to = frame.get("reply-to")
        try:
            result = await self.client.rpc(method, data)
        except HubError as error:
            if not reply_to:
                raise
            self._rpc_answer(frame, reply_to, None, error)
            return
        if reply_to:
            self._rpc_answer(frame, reply_to, result, None)

    def _rpc_answer(
        self, frame: Frame, reply_to: str, data: bytes | None, error: HubError | None
    ) -> None:
        headers = [
            ("destination", reply_to),
            ("subscription", reply_to),
            ("message-id", f"rpc-{next(_message_ids)}"),
        ]
        correlation = frame.get("correlation-id")
        if correlation:
            headers.append(("correlation-id", correlation))
        if error is not None:
            headers.append(("x-pushgate-error-code", str(error.code)))
            headers.append(("x-pushgate-error-message", error.message))
            if error.temporary:
                headers.append(("x-pushgate-error-temporary", "true"))
        binary = type(data) is BinaryData
        headers.append(("content-type", "application/octet-stream" if binary else CONTENT_TYPE))
        self.writer.send(encode_frame("MESSAGE", headers, data or b"", version=self.version))

    def _publication(self, frame: Frame) -> tuple[str, bytes]:
        """The channel and data a SEND publishes (its destination and body checked)."""
        destination = _required(frame, "destination")
        channel = self.destinations.channel_for(destination, self.client.user)
        data = json_body(frame.body, frame.get("content-type"))
        if data is None:
            raise StompFailure("body must be JSON or UTF-8 text")
        return channel, data

    async def _subscribe(self, frame: Frame) -> None:
        client = self.client
        destination = _required(frame, "destination")
        sub_id = frame.get("id") or (destination if self.version == "1.0" else "")
        if not sub_id:
            raise StompFailure("missing header", "SUBSCRIBE needs an id header")
        if sub_id in self.subs:
            raise StompFailure("subscription id already in use", sub_id)
        ack = frame.get("ack", "auto")
        if ack not in ACK_MODES:
            raise StompFailure("invalid ack mode", ack)
        channel = self.destinations.channel_for(destination, client.user)
        since = frame.get("x-pushgate-since")
        offset, epoch = 0, ""
        if since:
            epoch, _, offset_text = since.rpartition(":")
            if not offset_text.isdigit():
                raise StompFailure("invalid x-pushgate-since", "expected <epoch>:<offset>")
            offset = int(offset_text)
        sub = _Sub(sub_id, destination, channel, ack != "auto", self.version)
        route = self.routes.get(channel)
        server_side = route is None and channel in client.subs
        if not server_side:
            self._check_room()
        if route is not None or server_side:
            # the connection already receives this channel: one more id shares it, or
            # the first id takes the place of a server-side subscription's stand-in
            if route is None:
                self.standins.pop(channel, None)
                route = self.routes[channel] = {}
            route[sub_id] = sub
            self.subs[sub_id] = sub
            self._receipt(frame)
            return
        hub_sub, result = await client.subscribe(
            channel,
            token=frame.get("x-pushgate-token"),
            recover=bool(since),
            offset=offset,
            epoch=epoch,
        )
        self.subs[sub_id] = sub
        self.routes[channel] = {sub_id: sub}
        self.standins.pop(channel, None)
        extra: dict[str, str] = {}
        if since:
            extra["x-pushgate-recovered"] = "true" if result.recovered else "false"
        if result.epoch:
            extra["x-pushgate-epoch"] = result.epoch
            extra["x-pushgate-offset"] = str(result.offset)
        self._receipt(frame, extra)
        for pub in result.publications:
            self._deliver(sub, pub)
        if since and not result.recovered:
            self._unrecovered(sub, result)
        client.activate(hub_sub)

    def _check_room(self) -> None:
        """Room for one more subscription id: every id counts against
        ``client.max_subscriptions``, as does a server-side subscription no id names."""
        client = self.client
        limit = client.hub.config.client.max_subscriptions
        # each channel with ids is one hub subscription; the ids beyond its first add
        held = len(client.subs) + len(self.subs) - len(self.routes)
        if limit and held >= limit:
            log.info("client=%s user=%s: %d STOMP subscriptions", client.id, client.user, held)
            count_limit("subscriptions")
            raise ErrorLimitExceeded("limit exceeded: too many subscriptions")

    def _unrecovered(self, sub: _Sub, result: SubscribeResult) -> None:
        """Tell a subscriber that asked to recover that it could not: a MESSAGE with no
        body and ``x-pushgate-recovered: false`` (never a silent gap)."""
        headers = [("message-id", f"n{next(_message_ids)}"), ("x-pushgate-recovered", "false")]
        if result.epoch:
            headers.append(("x-pushgate-epoch", result.epoch))
            headers.append(("x-pushgate-offset", str(result.offset)))
        headers.append(("content-length", "0"))
        tail = encode_headers(headers, escaped=self.version != "1.0") + b"\n\x00"
        self.writer.send_parts(sub.prefix, tail)

    async def _unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.get("id") or (frame.get("destination") if self.version == "1.0" else "")
        if not sub_id:
            raise StompFailure("missing header", "UNSUBSCRIBE needs an id header")
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            raise StompFailure("no such subscription", sub_id)
        route = self.routes.get(sub.channel)
        if route is None:
            return
        route.pop(sub_id, None)
        if not route:
            del self.routes[sub.channel]
            await self.client.unsubscribe(sub.channel)

    def _ack(self, frame: Frame) -> None:
        """Acknowledgements are checked and accepted; pushgate does not hold deliveries
        back for them (recovery uses stream offsets, not redelivery)."""
        key = "id" if self.version == "1.2" else "message-id"
        _required(frame, key)
        if self.version == "1.1":
            sub_id = _required(frame, "subscription")
            if sub_id not in self.subs:
                raise StompFailure("no such subscription", sub_id)

    def _receipt(self, frame: Frame, extra: dict[str, str] | None = None) -> None:
        receipt = frame.get("receipt")
        if receipt:
            headers = {"receipt-id": receipt, **(extra or {})}
            self.writer.send(encode_frame("RECEIPT", headers, version=self.version))

    def _fail(
        self,
        message: str,
        detail: str = "",
        receipt: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """ERROR, then close."""
        if self._closing:
            return
        self._write_error(message, detail, receipt, headers)
        self._closing = True
        self.client.disconnect(Disconnect(DISCONNECT_BAD_REQUEST.code, message[:100]))

    def _write_error(
        self,
        message: str,
        detail: str = "",
        receipt: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        error_headers = {"message": message, **(headers or {})}
        if receipt:
            error_headers["receipt-id"] = receipt
        error_headers["content-type"] = "text/plain"
        body = (detail or message).encode()
        self.writer.send(encode_frame("ERROR", error_headers, body, version=self.version))

    async def closed(self) -> None:
        """The transport is gone."""
        if self.wheel is not None:
            self.wheel.remove(self)
        self._closing = True
        await self.client.closed_by_transport()

    # --- heart-beats (driven by the shared wheel) ---------------------------------
    def _next_due(self, now: float) -> float:
        due = []
        if self.send_every:
            due.append(self.next_send)
        if self.recv_every:
            due.append(self.last_rx + self.recv_every * HEARTBEAT_TOLERANCE)
        return min(due) if due else now + 60.0

    def heartbeat(self, now: float) -> float | None:
        if self._closing or self.client.closed or self.writer.closed:
            return None
        if self.recv_every and now - self.last_rx > self.recv_every * HEARTBEAT_TOLERANCE:
            log.info("client=%s: no STOMP heart-beat for %.1fs", self.client.id, now - self.last_rx)
            self._write_error("heart-beat timeout", "no data received within the heart-beat")
            self._closing = True
            self.client.disconnect(DISCONNECT_NO_PONG)
            return None
        if self.send_every and now + SEND_EARLY >= self.next_send:
            self.writer.send_heartbeat()
            self.next_send = now + self.send_every
        return self._next_due(now)

    # --- ClientSink ---------------------------------------------------------------
    def _deliver(self, sub: _Sub, pub: Publication) -> None:
        key = (DIALECT, self.version != "1.0", sub.ack)
        tail = pub.cache.get(key)
        if tail is None:
            tail = pub.cache[key] = message_tail(pub, ack=sub.ack, escaped=key[1])
        self.writer.send_parts(sub.prefix, tail)

    def push_publication(self, channel: str, pub: Publication) -> None:
        route = self.routes.get(channel)
        if route is not None:
            for sub in route.values():
                self._deliver(sub, pub)
            return
        # a server-side subscription (token ``channels`` claim or the server API):
        # delivered with the subscription id ``/topic/<channel>``; stomp.js hands such
        # messages to ``onUnhandledMessage``
        standin = self.standins.get(channel)
        if standin is None:
            destination = f"/topic/{channel}"
            standin = _Sub(destination, destination, channel, False, self.version)
            self.standins[channel] = standin
        self._deliver(standin, pub)

    def push_join(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        """STOMP has no frame for presence changes."""

    def push_leave(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        """STOMP has no frame for presence changes."""

    def push_subscribe(self, channel: str, result: SubscribeResult) -> None:
        """A server-side subscription made by the API: its messages arrive on
        subscription id ``/topic/<channel>`` (see push_publication)."""

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        self.standins.pop(channel, None)
        for sub_id in self.routes.pop(channel, None) or ():
            self.subs.pop(sub_id, None)
        if code >= 2500:
            # the subscriber may have missed publications: it must resubscribe with
            # ``x-pushgate-since``, and STOMP can only ask for that by closing
            self._fail(f"subscription to {channel} lost: {reason}; resubscribe with recovery")
        else:
            log.info(
                "client=%s unsubscribed from %s by the server: %s", self.client.id, channel, reason
            )

    def push_message(self, data: bytes) -> None:
        log.debug("client=%s: STOMP has no place for an async message; dropped", self.client.id)

    def push_refresh(self, expires: bool, ttl: int) -> None:
        """STOMP clients cannot refresh: an expired token ends the connection."""

    def send_ping(self) -> None:
        """STOMP connections beat on the heart-beat wheel instead."""

    def queued_bytes(self) -> int:
        return self.writer.queued_bytes()

    def close(self, disconnect: Disconnect) -> None:
        writer = self.writer
        if self.wheel is not None:
            self.wheel.remove(self)
        if writer.closed:
            return
        if not self._closing:
            self._closing = True
            self._write_error(disconnect.reason, f"disconnected by the server ({disconnect.code})")
        writer.close(disconnect.code, disconnect.reason)


def _required(frame: Frame, name: str) -> str:
    value = frame.get(name)
    if not value:
        raise StompFailure("missing header", f"{frame.command} needs a {name} header")
    return value


def _bearer(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else value.strip()
