"""User status: the attention connections report, and the status channels that tell it.

Every connection of a signed-in user (not the server's own internal ones) says whether its
user is ``active``, ``idle`` or ``hidden`` (pushgate.js from page visibility and input; a
Centrifugo client by the ``pushgate.presence`` RPC; STOMP by a SEND to
``/pushgate/presence``; XMPP by its presence ``<show>``). The engine rolls the user's
status up over every connection on every node — active if any is, then idle, hidden,
offline — and announces each change once (offline after ``presence.offline_delay``). An
announcement is published here to the user's status channel,
``<presence.status_namespace>:<user>``, whose subscribe reply carries the current status.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from pushgate.engine.tracking import ACTIVE, ATTENTION, Connection, Tracking, UserStatus

if TYPE_CHECKING:
    from pushgate.config import Config
    from pushgate.hub.client import Client, ClientHub
    from pushgate.hub.hub import Hub

log = logging.getLogger("pushgate.status")


def tracking_of(config: Config, node_name: str) -> Tracking:
    """What the engine tracks and tells, from ``[presence]`` and ``[events]``."""
    events = config.events
    return Tracking(
        events=frozenset(events.types) if events.enabled else frozenset(),
        offline_delay=config.presence.offline_delay,
        retention=events.retention,
        node_name=node_name,
    )


def tracked(client: Client) -> bool:
    """Connections whose user has a status: signed in, not the server's own."""
    return bool(client.user) and not client.internal


def connection_of(client: Client) -> Connection:
    return Connection(client.id, client.user, client.transport)


def parse_attention(value: object) -> str | None:
    """``active`` / ``idle`` / ``hidden``, or None for anything else."""
    return value if isinstance(value, str) and value in ATTENTION else None


def attention_in(data: bytes | None) -> str:
    """The attention a connect command's ``data`` states (``{"pushgate": {"state":
    "hidden"}}``, what pushgate.js sends), else ``active``: a tab opened in the
    background is not shown active for the moment before it says so."""
    if not data or b'"pushgate"' not in data:
        return ACTIVE
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ACTIVE
    inner = value.get("pushgate") if isinstance(value, dict) else None
    state = parse_attention(inner.get("state")) if isinstance(inner, dict) else None
    return state or ACTIVE


def status_channel(hub: Hub, user: str) -> str:
    """The user's status channel, or "" when status channels are off."""
    namespace = hub.config.presence.status_namespace
    if not namespace or not user:
        return ""
    return f"{namespace}{hub.config.channel.namespace_boundary}{user}"


def user_of(hub: ClientHub, channel: str) -> str | None:
    """The user whose status channel ``channel`` is, or None."""
    namespace = hub.config.presence.status_namespace
    if not namespace:
        return None
    head = f"{namespace}{hub.config.channel.namespace_boundary}"
    if not channel.startswith(head) or len(channel) == len(head):
        return None
    return channel[len(head) :]


async def subscribe_data(hub: ClientHub, channel: str) -> bytes | None:
    """A status channel's subscribe reply carries the user's current status."""
    user = user_of(hub, channel)
    if user is None:
        return None
    statuses = await hub.engine.user_statuses([user])
    return statuses[user].to_json(user)


def announce(hub: Hub, user: str, status: UserStatus) -> None:
    """Publish an announced change to the user's status channel (when there are some)."""
    channel = status_channel(hub, user)
    if channel:
        hub.spawn(_publish(hub, channel, status.to_json(user)))


async def _publish(hub: Hub, channel: str, data: bytes) -> None:
    try:
        await hub.publish(channel, data)
    except Exception as exc:
        log.warning("cannot publish the status of %s: %s", channel, exc)
