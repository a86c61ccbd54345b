"""Server API methods: parameters in, result dict out, each calling the hub.

Names, parameters and results follow Centrifugo's server API (what ``cent`` sends and
expects), plus ``user_status``. Errors are HubErrors with Centrifugo's codes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson

from pushgate.api import status_methods
from pushgate.api.params import (
    bad_request,
    duration,
    json_bytes,
    json_or_b64,
    optional_bool,
    optional_int,
    optional_json_text,
    optional_str,
    override,
    position,
    require_str,
    str_dict,
    str_list,
)
from pushgate.engine.base import ClientInfo, StreamPosition, UnrecoverablePosition
from pushgate.hub import notifications
from pushgate.hub.client import has_history
from pushgate.hub.errors import (
    DISCONNECT_FORCE_NO_RECONNECT,
    Disconnect,
    ErrorNotAvailable,
    ErrorUnrecoverablePosition,
    HubError,
)
from pushgate.hub.hub import Hub

Method = Callable[[Hub, dict], Awaitable[dict]]


def _data(params: dict) -> bytes:
    """``data``, or ``b64data`` decoded (it must hold JSON: see pushgate.b64json)."""
    if params.get("b64data") in (None, "") and "data" not in params:
        raise bad_request("data (or b64data) is required")
    if params.get("b64data") in (None, ""):
        return json_bytes(params["data"], "data")
    data = json_or_b64(params, "data")
    assert data is not None
    return data


def _info(info: ClientInfo) -> dict:
    out: dict = {"client": info.client, "user": info.user}
    if info.conn_info is not None:
        out["conn_info"] = orjson.Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = orjson.Fragment(info.chan_info)
    return out


def _publication(pub) -> dict:
    out: dict = {"data": orjson.Fragment(pub.data), "offset": pub.offset}
    if pub.tags:
        out["tags"] = pub.tags
    if pub.info is not None:
        out["info"] = _info(pub.info)
    return out


def start_publish(hub: Hub, params: dict) -> Awaitable[StreamPosition]:
    """A publish command started now (HubError at once for bad parameters): its
    position, awaitable (a StreamPosition already, or a future). With ``handoff``
    (seconds, or a duration), see hub/notifications.py."""
    if params.get("handoff") is not None:
        return asyncio.ensure_future(
            notifications.publish_with_handoff(
                hub,
                require_str(params, "channel"),
                _data(params),
                duration(params, "handoff"),
                tags=str_dict(params, "tags"),
                idempotency_key=optional_str(params, "idempotency_key"),
            )
        )
    return hub.publish(
        require_str(params, "channel"),
        _data(params),
        tags=str_dict(params, "tags"),
        skip_history=optional_bool(params, "skip_history"),
        idempotency_key=optional_str(params, "idempotency_key"),
        delta=optional_bool(params, "delta"),
    )


def published(position_: StreamPosition) -> dict:
    return {"offset": position_.offset, "epoch": position_.epoch}


async def publish(hub: Hub, params: dict) -> dict:
    return published(await start_publish(hub, params))


async def broadcast(hub: Hub, params: dict) -> dict:
    channels = str_list(params, "channels", required=True)
    data = _data(params)
    tags = str_dict(params, "tags")
    skip = optional_bool(params, "skip_history")
    key = optional_str(params, "idempotency_key")
    delta = optional_bool(params, "delta")

    async def one(channel: str) -> dict:
        try:
            pos = await hub.publish(
                channel, data, tags=tags, skip_history=skip, idempotency_key=key, delta=delta
            )
        except HubError as error:
            return {"error": {"code": error.code, "message": error.message}}
        return {"result": {"offset": pos.offset, "epoch": pos.epoch}}

    return {"responses": await asyncio.gather(*(one(ch) for ch in channels))}


async def subscribe(hub: Hub, params: dict) -> dict:
    user = require_str(params, "user")
    channel = require_str(params, "channel")
    hub.rules.options(channel)
    since = position(params, "recover_since")
    expire_at = optional_int(params, "expire_at", 0) or 0
    if expire_at and expire_at <= time.time():
        raise bad_request("expire_at must be a Unix time in the future")
    await hub.subscribe_user(
        user,
        channel,
        client=optional_str(params, "client"),
        session=optional_str(params, "session"),
        info=optional_json_text(params, "info"),
        data=optional_json_text(params, "data"),
        recover_since=StreamPosition(*since) if since else None,
        expire_at=expire_at or None,
        override=override(params),
    )
    return {}


async def unsubscribe(hub: Hub, params: dict) -> dict:
    await hub.unsubscribe_user(
        require_str(params, "user"),
        require_str(params, "channel"),
        client=optional_str(params, "client"),
        session=optional_str(params, "session"),
    )
    return {}


async def disconnect(hub: Hub, params: dict) -> dict:
    custom = params.get("disconnect")
    how = DISCONNECT_FORCE_NO_RECONNECT
    if custom is not None:
        if not isinstance(custom, dict):
            raise bad_request("disconnect must be an object with code and reason")
        code = optional_int(custom, "code", 0) or 0
        reason = custom.get("reason", "")
        if not isinstance(reason, str) or not (3000 <= code <= 4999):
            raise bad_request("disconnect.code must be in 3000..4999, reason a string")
        how = Disconnect(code, reason)
    await hub.disconnect_user(
        require_str(params, "user"),
        client=optional_str(params, "client"),
        session=optional_str(params, "session"),
        whitelist=str_list(params, "whitelist") or None,
        disconnect=how,
    )
    return {}


async def refresh(hub: Hub, params: dict) -> dict:
    await hub.refresh_user(
        require_str(params, "user"),
        client=optional_str(params, "client"),
        session=optional_str(params, "session"),
        expired=optional_bool(params, "expired"),
        expire_at=optional_int(params, "expire_at"),
        info=optional_json_text(params, "info"),
    )
    return {}


async def presence(hub: Hub, params: dict) -> dict:
    clients = await hub.presence(require_str(params, "channel"))
    return {"presence": {cid: _info(info) for cid, info in clients.items()}}


async def presence_stats(hub: Hub, params: dict) -> dict:
    num_clients, num_users = await hub.presence_stats(require_str(params, "channel"))
    return {"num_clients": num_clients, "num_users": num_users}


async def history(hub: Hub, params: dict) -> dict:
    channel = require_str(params, "channel")
    if not has_history(hub.rules.options(channel)):
        raise ErrorNotAvailable
    limit = optional_int(params, "limit", 0) or 0
    max_limit = hub.config.client.history_max_publications
    limit = max_limit if limit < 0 else min(limit, max_limit)
    since = position(params, "since")
    try:
        result = await hub.engine.history(
            channel,
            since=StreamPosition(*since) if since else None,
            limit=limit,
            reverse=optional_bool(params, "reverse"),
        )
    except UnrecoverablePosition:
        raise ErrorUnrecoverablePosition from None
    return {
        "publications": [_publication(p) for p in result.publications],
        "offset": result.position.offset,
        "epoch": result.position.epoch,
    }


async def history_remove(hub: Hub, params: dict) -> dict:
    channel = require_str(params, "channel")
    if not has_history(hub.rules.options(channel)):
        raise ErrorNotAvailable
    await hub.engine.remove_history(channel)
    return {}


async def channels(hub: Hub, params: dict) -> dict:
    counts = await hub.cluster_channel_counts(optional_str(params, "pattern"))
    return {"channels": {ch: {"num_clients": n} for ch, n in counts.items()}}


async def info(hub: Hub, params: dict) -> dict:
    return {"nodes": await hub.info()}


async def user_status(hub: Hub, params: dict) -> dict:
    """Ours: each user's status (active / idle / hidden / offline: hub/status.py), whether
    online, and unix seconds last seen (now if online) and last active (now if active)."""
    users = str_list(params, "users", required=True)
    statuses = await hub.engine.user_statuses(users)
    return {
        "statuses": [
            {
                "user": user,
                "online": statuses[user].online,
                "status": statuses[user].status,
                "last_seen": int(statuses[user].last_seen or 0),
                "last_active": int(statuses[user].last_active or 0),
            }
            for user in users
        ]
    }


async def get_user_status(hub: Hub, params: dict) -> dict:
    """``cent``'s GetUserStatusRequest (Centrifugo PRO): unix seconds a user was last
    online (now if online) and last active (now if a connection says active)."""
    users = str_list(params, "users", required=True)
    statuses = await hub.engine.user_statuses(users)
    out = []
    for user in users:
        found = statuses[user]
        out.append(
            {
                "user": user,
                "active": int(found.last_active or 0),
                "online": int(found.last_seen or 0),
            }
        )
    return {"statuses": out}


async def send_message(hub: Hub, params: dict) -> dict:
    """Ours: a direct ``message`` push to every connection of a user."""
    await hub.message_user(require_str(params, "user"), _data(params).decode())
    return {}


METHODS: dict[str, Method] = {
    "publish": publish,
    "broadcast": broadcast,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "disconnect": disconnect,
    "refresh": refresh,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "history_remove": history_remove,
    "channels": channels,
    "info": info,
    "user_status": user_status,
    "get_user_status": get_user_status,
    "send": send_message,
    **status_methods.METHODS,
}
