"""Notifications: hand-off of the unseen ones to the product, and read positions.

A publication to a user's channel (a user-limited channel of one user, ``notifications:#bob``,
that keeps history) may carry ``handoff`` (a TTL): it is tagged ``pushgate.ack`` and, unless
one of the user's connections acknowledges it within the TTL (``pushgate.ack`` RPC with its
channel, offset and epoch: pushgate.js sends it once the page shows it), the engine writes a
``notification_handoff`` event, which the product turns into an e-mail or a mobile push. The
timer lives in the engine (a Redis sorted set with the redis engine): an ack on any node
cancels it, and one node claims it when due, atomically with writing the event — one
hand-off per notification, even if nodes die meanwhile.

Read positions: ``pushgate.mark_read`` stores "read up to offset N (of epoch E)" per user and
channel; every connection of the user gets a ``message`` push
``{"pushgate": "read", "read": {"<channel>": {"offset": N, "epoch": "E"}}}`` — on a change,
and on connect with every channel's position.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from pushgate.engine.base import StreamPosition
from pushgate.engine.tracking import (
    NOTIFICATION_HANDOFF,
    Handoff,
    ReadLimitExceeded,
    ReadPosition,
)
from pushgate.hub.errors import (
    ErrorBadRequest,
    ErrorLimitExceeded,
    ErrorNotAvailable,
    ErrorPermissionDenied,
)
from pushgate.hub.recovery import has_history
from pushgate.json_types import JsonObject

if TYPE_CHECKING:
    from pushgate.hub.client import Client, ClientHub

log = logging.getLogger("pushgate.notifications")

#: the tag of a publication that wants an ack (its value: the hand-off TTL in seconds)
ACK_TAG = "pushgate.ack"


def channel_user(hub: ClientHub, channel: str) -> str | None:
    """The one user of a user-limited channel (``notifications:#bob``), else None."""
    users = hub.rules.allowed_users(channel)
    return users[0] if users is not None and len(users) == 1 else None


async def publish_with_handoff(
    hub: ClientHub,
    channel: str,
    data: bytes,
    ttl: float,
    *,
    tags: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> StreamPosition:
    """Publish, and hand the publication off to the product unless acknowledged in ``ttl``."""
    user = channel_user(hub, channel)
    if user is None:
        raise ErrorBadRequest("bad request: handoff needs a channel of one user (namespace:#user)")
    if not has_history(hub.rules.options(channel)):
        raise ErrorBadRequest(
            "bad request: handoff needs a channel with history (acks name an offset)"
        )
    if not (0 < ttl <= hub.config.notifications.handoff_max_ttl):
        raise ErrorBadRequest(
            f"bad request: handoff must be between 0 and "
            f"{hub.config.notifications.handoff_max_ttl:g} seconds"
        )
    if NOTIFICATION_HANDOFF not in hub.engine.tracking.events:
        raise ErrorNotAvailable(
            "not available: handoff needs events.enabled with notification_handoff in events.types"
        )
    published_ms = int(time.time() * 1000)
    position = await hub.publish(
        channel,
        data,
        tags={**(tags or {}), ACK_TAG: f"{ttl:g}"},
        idempotency_key=idempotency_key,
    )
    handoff = Handoff(
        channel=channel,
        offset=position.offset,
        epoch=position.epoch,
        user=user,
        ttl=ttl,
        data=data,
        published_ms=published_ms,
    )
    await hub.engine.handoff_add(handoff)
    return position


def _check_own_channel(client: Client, channel: str, what: str) -> None:
    if not channel or channel_user(client.hub, channel) != client.user or not client.user:
        log.info("%s of %r refused for client=%s user=%r", what, channel, client.id, client.user)
        raise ErrorPermissionDenied


def _offset(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ErrorBadRequest("bad request: offset must be an integer >= 0")
    return value


async def ack(client: Client, params: JsonObject) -> None:
    """``pushgate.ack {channel, offset, epoch?}``: the publication was shown to the user."""
    channel = params.get("channel")
    epoch = params.get("epoch", "")
    if not isinstance(channel, str) or not isinstance(epoch, str):
        raise ErrorBadRequest("bad request: channel and epoch must be strings")
    _check_own_channel(client, channel, "ack")
    offset = _offset(params.get("offset"))
    if await client.hub.engine.handoff_ack(channel, offset, epoch):
        log.debug("client=%s acknowledged %s/%d: no hand-off", client.id, channel, offset)


async def mark_read(client: Client, params: JsonObject) -> None:
    """``pushgate.mark_read {channel, offset, epoch}`` from one of the user's connections."""
    channel = params.get("channel")
    epoch = params.get("epoch", "")
    if not isinstance(channel, str) or not isinstance(epoch, str):
        raise ErrorBadRequest("bad request: channel and epoch must be strings")
    _check_own_channel(client, channel, "mark_read")
    position = ReadPosition(_offset(params.get("offset")), epoch)
    await set_read(client.hub, client.user, channel, position)


async def set_read(hub: ClientHub, user: str, channel: str, position: ReadPosition) -> bool:
    """Store a read position and tell every connection of the user; False if not newer."""
    try:
        changed = await hub.engine.read_mark(
            user, channel, position, hub.config.notifications.read_channels_max
        )
    except ReadLimitExceeded:
        raise ErrorLimitExceeded(
            "limit exceeded: read positions kept for too many channels"
        ) from None
    if changed:
        await hub.message_user(user, read_message({channel: position}).decode(), ["centrifugo"])
    return changed


def read_message(positions: dict[str, ReadPosition]) -> bytes:
    """The ``message`` push carrying read positions."""
    return orjson.dumps(
        {"pushgate": "read", "read": {ch: pos.to_dict() for ch, pos in positions.items()}}
    )
