"""Encoding of Centrifugo replies and pushes to JSON bytes.

Field names are those of the protocol's ``client.proto``; zero values are left out,
as protobuf's JSON mapping does. Publication data is raw JSON bytes embedded with
``orjson.Fragment``, never parsed again.
"""

from __future__ import annotations

from orjson import Fragment, dumps

from pushgate.engine.base import ClientInfo, Publication
from pushgate.hub.errors import Disconnect, HubError
from pushgate.hub.results import ConnectResult, RefreshResult, SubscribeResult
from pushgate.json_types import JsonObject

PING = b"{}"


def _info(info: ClientInfo) -> JsonObject:
    out: JsonObject = {"client": info.client, "user": info.user}
    if info.conn_info is not None:
        out["conn_info"] = Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = Fragment(info.chan_info)
    return out


def publication(pub: Publication) -> JsonObject:
    out: JsonObject = {"data": Fragment(pub.data)}
    if pub.offset:
        out["offset"] = pub.offset
    if pub.info is not None:
        out["info"] = _info(pub.info)
    if pub.tags:
        out["tags"] = pub.tags
    if pub.delta:
        out["delta"] = True
    return out


def reply(command_id: int, method: str, result: JsonObject) -> bytes:
    return dumps({"id": command_id, method: result})


def error_reply(command_id: int, error: HubError) -> bytes:
    err: JsonObject = {"code": error.code, "message": error.message}
    if error.temporary:
        err["temporary"] = True
    return dumps({"id": command_id, "error": err})


def subscribe_result(result: SubscribeResult) -> JsonObject:
    out: JsonObject = {}
    if result.expires:
        out["expires"] = True
        out["ttl"] = result.ttl
    if result.recoverable:
        out["recoverable"] = True
    if result.positioned:
        out["positioned"] = True
    if result.epoch:
        out["epoch"] = result.epoch
    if result.offset:
        out["offset"] = result.offset
    if result.publications:
        out["publications"] = [publication(p) for p in result.publications]
    if result.recovered:
        out["recovered"] = True
    if result.was_recovering:
        out["was_recovering"] = True
    if result.data is not None:
        out["data"] = Fragment(result.data)
    if result.delta:
        out["delta"] = True
    return out


def connect_result(result: ConnectResult) -> JsonObject:
    out: JsonObject = {"client": result.client, "version": result.version}
    if result.expires:
        out["expires"] = True
        out["ttl"] = result.ttl
    if result.data is not None:
        out["data"] = Fragment(result.data)
    if result.subs:
        out["subs"] = {ch: subscribe_result(r) for ch, r in result.subs.items()}
    if result.ping:
        out["ping"] = result.ping
    if result.pong:
        out["pong"] = True
    if result.session:
        out["session"] = result.session
    if result.node:
        out["node"] = result.node
    return out


def rpc_result(data: bytes | None) -> JsonObject:
    return {} if data is None else {"data": Fragment(data)}


def refresh_result(result: RefreshResult) -> JsonObject:
    out: JsonObject = {"client": result.client, "version": result.version}
    if result.expires:
        out["expires"] = True
        out["ttl"] = result.ttl
    return out


def presence_result(clients: dict[str, ClientInfo]) -> JsonObject:
    return {"presence": {cid: _info(info) for cid, info in clients.items()}}


def history_result(publications: list[Publication], offset: int, epoch: str) -> JsonObject:
    out: JsonObject = {"publications": [publication(p) for p in publications], "epoch": epoch}
    if offset:
        out["offset"] = offset
    return out


# --- pushes ---------------------------------------------------------------------------
# Bidirectional connections get pushes wrapped as ``{"push": {...}}`` (a reply without
# an id); unidirectional ones get the push object itself, as Centrifugo sends them.


def _push(channel: str, kind: str, body: JsonObject, uni: bool = False) -> bytes:
    push = {"channel": channel, kind: body} if channel else {kind: body}
    return dumps(push if uni else {"push": push})


def pub_push(channel: str, pub: Publication, uni: bool = False) -> bytes:
    return _push(channel, "pub", publication(pub), uni)


def join_push(channel: str, info: ClientInfo, uni: bool = False) -> bytes:
    return _push(channel, "join", {"info": _info(info)}, uni)


def leave_push(channel: str, info: ClientInfo, uni: bool = False) -> bytes:
    return _push(channel, "leave", {"info": _info(info)}, uni)


def unsubscribe_push(channel: str, code: int, reason: str, uni: bool = False) -> bytes:
    return _push(channel, "unsubscribe", {"code": code, "reason": reason}, uni)


def subscribe_push(channel: str, result: SubscribeResult, uni: bool = False) -> bytes:
    body = subscribe_result(result)
    body.pop("publications", None)
    return _push(channel, "subscribe", body, uni)


def message_push(data: bytes, uni: bool = False) -> bytes:
    return _push("", "message", {"data": Fragment(data)}, uni)


def refresh_push(expires: bool, ttl: int, uni: bool = False) -> bytes:
    body: JsonObject = {}
    if expires:
        body = {"expires": True, "ttl": ttl}
    return _push("", "refresh", body, uni)


def connect_push(result: ConnectResult) -> bytes:
    """The first message of a unidirectional connection."""
    return _push("", "connect", connect_result(result), uni=True)


def disconnect_push(disconnect: Disconnect, uni: bool = False) -> bytes:
    body = {"code": disconnect.code, "reason": disconnect.reason, "reconnect": disconnect.reconnect}
    return _push("", "disconnect", body, uni)
