"""Centrifugo's proxy JSON: the requests pushgate sends and the results it reads.

The field names are those of Centrifugo's ``proxy.proto`` (its HTTP proxy sends that
message as JSON). Every request carries ``client``, ``transport``, ``protocol`` and
``encoding``; most carry ``user``, and ``meta`` when the proxy includes it. Payloads go
as raw JSON in ``data``, or base64 in ``b64data`` with ``encoding: "binary"`` when the
proxy says ``binary_encoding`` or the payload is not JSON (a Protobuf client's bytes).

Results are read into small dataclasses. ``info`` must be JSON (``info`` or ``b64info``;
every dialect shows it as JSON); ``data`` may be binary when given as ``b64data`` (it is
then marked ``BinaryData``, which only Protobuf connections can take). A result of the
wrong shape raises ``ProxyUnavailable``: it is the backend failing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import orjson

from pushgate import b64json, capabilities, subscribe_options
from pushgate.capabilities import Capability
from pushgate.engine.base import BinaryData
from pushgate.proxy.errors import ProxyUnavailable
from pushgate.subscribe_options import SubscribeOptions


@dataclass(slots=True)
class Caller:
    """The connection a call is about."""

    client: str
    transport: str
    protocol: str
    user: str = ""
    meta: bytes | None = None
    #: the allow-listed HTTP headers of the request that opened the connection
    headers: tuple[tuple[str, str], ...] = ()
    #: the headers the client sent in its connect command (emulated headers)
    emulated: dict[str, str] | None = None


def base_request(caller: Caller, binary: bool, *, with_user: bool = True) -> dict:
    body: dict = {
        "client": caller.client,
        "transport": caller.transport,
        "protocol": caller.protocol,
        "encoding": "binary" if binary else "json",
    }
    if with_user:
        body["user"] = caller.user
    return body


def is_json(data: bytes) -> bool:
    if type(data) is BinaryData:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def put_data(body: dict, data: bytes | None, binary: bool, checked: bool = True) -> None:
    """``data`` (raw JSON) or ``b64data``; ``checked``: the bytes are known to be JSON
    unless marked ``BinaryData`` (JSON clients' payloads), else they are checked."""
    if data is None:
        return
    json_ok = type(data) is not BinaryData if checked else is_json(data)
    if binary or not json_ok:
        body["b64data"] = base64.b64encode(data).decode()
        body["encoding"] = "binary"
    else:
        body["data"] = orjson.Fragment(data)


def put_meta(body: dict, caller: Caller, include: bool) -> None:
    if include and caller.meta is not None:
        body["meta"] = orjson.Fragment(caller.meta)


# --- reading results ------------------------------------------------------------------
def _fail(message: str) -> ProxyUnavailable:
    return ProxyUnavailable(f"bad answer: {message}")


def _str(result: dict, key: str) -> str:
    value = result.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(f"{key} is not a string")
    return value


def _int(result: dict, key: str) -> int:
    value = result.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, str) and value.isdigit():  # proto3 JSON quotes 64-bit integers
        value = int(value)
    if type(value) is not int:
        raise _fail(f"{key} is not an integer")
    return value


def _bool(result: dict, key: str) -> bool:
    value = result.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"{key} is not a boolean")
    return value


def _info(result: dict) -> bytes | None:
    try:
        return b64json.field(result, "info", "b64info")
    except (ValueError, orjson.JSONEncodeError) as exc:
        raise _fail(str(exc)) from None


def _data(result: dict) -> bytes | None:
    """``data`` as raw JSON, or ``b64data`` decoded (``BinaryData`` unless JSON)."""
    encoded = result.get("b64data")
    if encoded not in (None, ""):
        if not isinstance(encoded, str):
            raise _fail("b64data is not a string")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _fail("b64data is not valid base64") from None
        return raw if is_json(raw) else BinaryData(raw)
    if result.get("data") is None:
        return None
    try:
        return orjson.dumps(result["data"])
    except orjson.JSONEncodeError as exc:
        raise _fail(f"data: {exc}") from None


def _meta(result: dict) -> bytes | None:
    meta = result.get("meta")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise _fail("meta is not an object")
    return orjson.dumps(meta)


def _caps(result: dict, key: str = "caps") -> tuple[Capability, ...]:
    try:
        return capabilities.parse_caps(result.get(key))
    except ValueError as exc:
        raise _fail(f"{key}: {exc}") from None


@dataclass(slots=True)
class ConnectReply:
    user: str
    expire_at: int = 0
    info: bytes | None = None
    data: bytes | None = None
    channels: list[str] = field(default_factory=list)
    subs: dict[str, SubscribeOptions] = field(default_factory=dict)
    meta: bytes | None = None
    caps: tuple[Capability, ...] = ()


def connect_reply(result: dict) -> ConnectReply:
    channels = result.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise _fail("channels is not a list of strings")
    subs = result.get("subs") or {}
    if not isinstance(subs, dict):
        raise _fail("subs is not an object")
    try:
        options = {channel: subscribe_options.parse(opts) for channel, opts in subs.items()}
    except ValueError as exc:
        raise _fail(f"subs: {exc}") from None
    return ConnectReply(
        user=_str(result, "user"),
        expire_at=_int(result, "expire_at"),
        info=_info(result),
        data=_data(result),
        channels=channels,
        subs=options,
        meta=_meta(result),
        caps=_caps(result),
    )


@dataclass(slots=True)
class RefreshReply:
    expired: bool = False
    expire_at: int = 0
    info: bytes | None = None
    meta: bytes | None = None
    caps: tuple[Capability, ...] | None = None


def refresh_reply(result: dict) -> RefreshReply:
    return RefreshReply(
        expired=_bool(result, "expired"),
        expire_at=_int(result, "expire_at"),
        info=_info(result),
        meta=_meta(result),
        caps=_caps(result) if "caps" in result else None,
    )


@dataclass(slots=True)
class SubscribeReply:
    expire_at: int = 0
    info: bytes | None = None
    data: bytes | None = None
    override: dict[str, bool] = field(default_factory=dict)
    allow: frozenset[str] = frozenset()


def subscribe_reply(result: dict | None) -> SubscribeReply:
    if result is None:
        return SubscribeReply()
    try:
        override = subscribe_options.parse_override(result.get("override"))
        allow = capabilities.parse_allow(result.get("allow"))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return SubscribeReply(
        expire_at=_int(result, "expire_at"),
        info=_info(result),
        data=_data(result),
        override=override,
        allow=allow,
    )


@dataclass(slots=True)
class PublishReply:
    #: the data to publish instead of the client's (None: the client's)
    data: bytes | None = None
    skip_history: bool = False
    tags: dict[str, str] | None = None
    idempotency_key: str = ""


def publish_reply(result: dict | None) -> PublishReply:
    if result is None:
        return PublishReply()
    tags = result.get("tags")
    if tags is not None and (
        not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())
    ):
        raise _fail("tags is not an object of strings")
    return PublishReply(
        data=_data(result),
        skip_history=_bool(result, "skip_history"),
        tags=tags or None,
        idempotency_key=_str(result, "idempotency_key"),
    )


def rpc_reply(result: dict | None) -> bytes | None:
    return None if result is None else _data(result)


@dataclass(slots=True)
class SubRefreshReply:
    expired: bool = False
    expire_at: int = 0
    info: bytes | None = None


def sub_refresh_reply(result: dict) -> SubRefreshReply:
    return SubRefreshReply(
        expired=_bool(result, "expired"),
        expire_at=_int(result, "expire_at"),
        info=_info(result),
    )
