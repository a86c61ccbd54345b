"""Control messages: the orders one node sends every node through the engine.

The server API's user orders (disconnect, subscribe, unsubscribe, refresh, a direct
message) must reach a user's connections on whichever nodes hold them; an emulation
command must reach the one node holding its session; a survey asks every node for its
share of a cluster-wide answer. Each is a typed message here, with its wire form: a
JSON object whose ``op`` names the kind. The engine carries that object opaquely.

The wire form is the one every pushgate version has sent (same keys, same values), so
nodes of two versions interoperate during a rolling upgrade. Only this module reads
or writes it: senders call the hub (``Hub.disconnect_user`` …), which encodes; the
receiving hub decodes with ``dispatch`` and acts on the typed message.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from pushgate.engine.base import StreamPosition
from pushgate.json_types import JsonObject

log = logging.getLogger("pushgate.hub")


class ControlHandler(Protocol):
    """What acts on control messages: the node's hub."""

    node_id: str

    def on_disconnect(self, order: DisconnectUser) -> None: ...

    def on_subscribe(self, order: SubscribeUser) -> None: ...

    def on_unsubscribe(self, order: UnsubscribeUser) -> None: ...

    def on_refresh(self, order: RefreshUser) -> None: ...

    def on_message(self, order: MessageUser) -> None: ...

    def on_emulation(self, command: EmulationCommand) -> None: ...

    def on_survey(self, survey: Survey) -> None: ...


# --- orders for a user's connections ----------------------------------------------
# Each names the user and, optionally, one connection (``client``) or one session of
# theirs; every node applies it to the matching connections it holds.


@dataclass(slots=True, frozen=True)
class DisconnectUser:
    op: ClassVar[str] = "disconnect"
    user: str
    code: int
    reason: str
    client: str | None = None
    session: str | None = None
    #: connections spared
    whitelist: list[str] | None = None

    def encode(self) -> JsonObject:
        return {
            "op": self.op,
            "user": self.user,
            "client": self.client,
            "session": self.session,
            "whitelist": self.whitelist,
            "code": self.code,
            "reason": self.reason,
        }

    @classmethod
    def decode(cls, m: JsonObject) -> DisconnectUser:
        return cls(
            m.get("user", ""),
            int(m["code"]),
            str(m["reason"]),
            m.get("client"),
            m.get("session"),
            m.get("whitelist"),
        )

    def deliver(self, to: ControlHandler) -> None:
        to.on_disconnect(self)


@dataclass(slots=True, frozen=True)
class SubscribeUser:
    """Subscribe the user's connections to ``channel`` server-side (API ``subscribe``)."""

    op: ClassVar[str] = "subscribe"
    user: str
    channel: str
    client: str | None = None
    session: str | None = None
    #: channel info and subscribe data, as JSON text
    info: str | None = None
    data: str | None = None
    recover_since: StreamPosition | None = None
    #: unix seconds the subscription expires at (None: never)
    expire_at: int | None = None
    override: dict[str, bool] | None = None

    def encode(self) -> JsonObject:
        since = self.recover_since
        return {
            "op": self.op,
            "user": self.user,
            "channel": self.channel,
            "client": self.client,
            "session": self.session,
            "info": self.info,
            "data": self.data,
            "recover_since": {"offset": since.offset, "epoch": since.epoch} if since else None,
            "expire_at": self.expire_at,
            "override": self.override,
        }

    @classmethod
    def decode(cls, m: JsonObject) -> SubscribeUser:
        since = m.get("recover_since")
        return cls(
            m.get("user", ""),
            m["channel"],
            m.get("client"),
            m.get("session"),
            m.get("info"),
            m.get("data"),
            StreamPosition(since["offset"], since["epoch"]) if since else None,
            m.get("expire_at") or None,
            m.get("override") or None,
        )

    def deliver(self, to: ControlHandler) -> None:
        to.on_subscribe(self)


@dataclass(slots=True, frozen=True)
class UnsubscribeUser:
    op: ClassVar[str] = "unsubscribe"
    user: str
    channel: str
    client: str | None = None
    session: str | None = None

    def encode(self) -> JsonObject:
        return {
            "op": self.op,
            "user": self.user,
            "channel": self.channel,
            "client": self.client,
            "session": self.session,
        }

    @classmethod
    def decode(cls, m: JsonObject) -> UnsubscribeUser:
        return cls(m.get("user", ""), m["channel"], m.get("client"), m.get("session"))

    def deliver(self, to: ControlHandler) -> None:
        to.on_unsubscribe(self)


@dataclass(slots=True, frozen=True)
class RefreshUser:
    """Extend (``expire_at``), update (``info``) or end (``expired``) connections."""

    op: ClassVar[str] = "refresh"
    user: str
    client: str | None = None
    session: str | None = None
    expired: bool = False
    expire_at: int | None = None
    #: new connection info, as JSON text
    info: str | None = None

    def encode(self) -> JsonObject:
        return {
            "op": self.op,
            "user": self.user,
            "client": self.client,
            "session": self.session,
            "expired": self.expired,
            "expire_at": self.expire_at,
            "info": self.info,
        }

    @classmethod
    def decode(cls, m: JsonObject) -> RefreshUser:
        return cls(
            m.get("user", ""),
            m.get("client"),
            m.get("session"),
            bool(m.get("expired")),
            m.get("expire_at") or None,
            m.get("info"),
        )

    def deliver(self, to: ControlHandler) -> None:
        to.on_refresh(self)


@dataclass(slots=True, frozen=True)
class MessageUser:
    """A ``message`` push (JSON text) to every connection of the user; ``dialects``
    limits it to connections of those dialects (None: all)."""

    op: ClassVar[str] = "message"
    user: str
    data: str
    dialects: list[str] | None = None

    def encode(self) -> JsonObject:
        message: JsonObject = {"op": self.op, "user": self.user, "data": self.data}
        if self.dialects is not None:
            message["dialects"] = self.dialects
        return message

    @classmethod
    def decode(cls, m: JsonObject) -> MessageUser:
        return cls(m.get("user", ""), m["data"], m.get("dialects"))

    def deliver(self, to: ControlHandler) -> None:
        to.on_message(self)


# --- messages for one node ----------------------------------------------------------


@dataclass(slots=True, frozen=True)
class EmulationCommand:
    """Commands for an HTTP-streaming emulation session held by ``node``, received by
    another node (transport/emulation.py). ``data``: JSON text, or Protobuf bytes
    (sent as base64)."""

    op: ClassVar[str] = "emulation"
    node: str
    session: str
    data: str | bytes

    def encode(self) -> JsonObject:
        message: JsonObject = {"op": self.op, "node": self.node, "session": self.session}
        if isinstance(self.data, bytes):
            message["data_b64"] = base64.b64encode(self.data).decode()
        else:
            message["data"] = self.data
        return message

    @classmethod
    def decode(cls, m: JsonObject) -> EmulationCommand:
        session = m["session"]
        if "data_b64" not in m:
            return cls(m["node"], session, m.get("data") or "")
        try:
            data = base64.b64decode(m["data_b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ValueError(f"forwarded emulation command for {session} is not base64") from None
        return cls(m["node"], session, data)

    def deliver(self, to: ControlHandler) -> None:
        to.on_emulation(self)


@dataclass(slots=True, frozen=True)
class Survey:
    """A question every other node answers into ``reply_to`` (engine.answer_survey):
    ``channels`` (matching ``pattern``), ``connections`` (of ``user``) or ``users``."""

    op: ClassVar[str] = "survey"
    question: str
    reply_to: str = ""
    #: the asking node, which does not answer itself
    sender: str = ""
    pattern: str | None = None
    user: str | None = None

    def encode(self) -> JsonObject:
        message: JsonObject = {"question": self.question}
        if self.question == "channels":
            message["pattern"] = self.pattern
        elif self.question == "connections":
            message["user"] = self.user or ""
        message["op"] = self.op
        message["reply_to"] = self.reply_to
        message["from"] = self.sender
        return message

    @classmethod
    def decode(cls, m: JsonObject) -> Survey:
        return cls(
            str(m.get("question")),
            m["reply_to"],
            m.get("from", ""),
            m.get("pattern"),
            m.get("user"),
        )

    def deliver(self, to: ControlHandler) -> None:
        to.on_survey(self)


ControlMessage = (
    DisconnectUser
    | SubscribeUser
    | UnsubscribeUser
    | RefreshUser
    | MessageUser
    | EmulationCommand
    | Survey
)
UserOrder = DisconnectUser | SubscribeUser | UnsubscribeUser | RefreshUser | MessageUser

#: op → its message's decoder: the dispatch table
DECODERS: dict[str, Callable[[JsonObject], ControlMessage]] = {
    kind.op: kind.decode
    for kind in (
        DisconnectUser,
        SubscribeUser,
        UnsubscribeUser,
        RefreshUser,
        MessageUser,
        EmulationCommand,
        Survey,
    )
}


def decode(raw: object) -> ControlMessage:
    """The typed message of a wire object; ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"not an object: {raw!r:.80}")
    op = raw.get("op")
    decoder = DECODERS.get(op) if isinstance(op, str) else None
    if decoder is None:
        raise ValueError(f"unknown op {raw.get('op')!r:.40}")
    try:
        return decoder(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad {raw['op']} message: {exc}") from None


def dispatch(raw: object, handler: ControlHandler) -> None:
    """Decode ``raw`` and hand it to ``handler``; a node-addressed message only on its
    node (before its payload is decoded). A bad message is logged and dropped."""
    if (
        isinstance(raw, dict)
        and raw.get("op") == EmulationCommand.op
        and raw.get("node") != handler.node_id
    ):
        return
    try:
        message = decode(raw)
    except ValueError as exc:
        log.warning("control message dropped: %s", exc)
        return
    message.deliver(handler)
