"""Who may do what in a channel: Centrifugo's permission rules, in Centrifugo's order.

Subscribe without a subscription token: a user-limited channel that lists the user; else
the connection's ``caps`` granting ``sub``; else, when the namespace has
``subscribe_proxy_enabled``, the backend's answer (not for user-limited channels); else
``allow_subscribe_for_client`` (not for
user-limited channels; anonymous connections also need ``allow_subscribe_for_anonymous``);
else ``client.insecure``. Publish, presence and history: ``allow_<op>_for_client``; else
``allow_<op>_for_subscriber`` and subscribed (anonymous connections need
``allow_<op>_for_anonymous`` for both); else the connection's ``caps``; else the
subscription token's ``allow``; else ``client.insecure``. Anything else is refused (103).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushgate.capabilities import HISTORY, PRESENCE, PUBLISH, SUBSCRIBE, grants

if TYPE_CHECKING:
    from pushgate.config import ChannelOptions
    from pushgate.hub.client import Client

#: subscription sources: how a client-side subscription was allowed
BY_TOKEN = "token"
BY_USER_LIMITED = "user_limited"
BY_CAPS = "caps"
BY_CLIENT = "client"
BY_INSECURE = "insecure"
#: the subscribe proxy is to be asked (the caller does)
BY_PROXY = "proxy"


def subscribe_source(
    client: Client, channel: str, options: ChannelOptions, *, ask_backend: bool = False
) -> str | None:
    """How a client may subscribe to ``channel`` without a subscription token, or None.
    ``ask_backend``: the channel has a subscribe proxy, which decides in place of the
    ``allow_subscribe_*`` options (BY_PROXY)."""
    hub = client.hub
    listed = (
        hub.rules.is_allowed_user(channel, client.user)
        if options.allow_user_limited_channels
        else None
    )
    if listed:
        return BY_USER_LIMITED
    if grants(client.caps, SUBSCRIBE, channel):
        return BY_CAPS
    if ask_backend:
        return BY_PROXY if listed is None else None
    if (
        listed is None
        and options.allow_subscribe_for_client
        and (client.user or options.allow_subscribe_for_anonymous)
    ):
        return BY_CLIENT
    if hub.config.client.insecure:
        return BY_INSECURE
    return None


def _flags(options: ChannelOptions, operation: str) -> tuple[bool, bool, bool]:
    """(for_client, for_subscriber, for_anonymous) of an operation."""
    if operation == PUBLISH:
        return (
            options.allow_publish_for_client,
            options.allow_publish_for_subscriber,
            options.allow_publish_for_anonymous,
        )
    if operation == PRESENCE:
        return (
            options.allow_presence_for_client,
            options.allow_presence_for_subscriber,
            options.allow_presence_for_anonymous,
        )
    return (
        options.allow_history_for_client,
        options.allow_history_for_subscriber,
        options.allow_history_for_anonymous,
    )


def allowed(
    client: Client,
    channel: str,
    options: ChannelOptions,
    operation: str,
    *,
    subscribing: frozenset[str] | None = None,
) -> bool:
    """May ``client`` do ``operation`` (pub, prs, hst) in ``channel``? ``subscribing``:
    asked while subscribing, with the ``allow`` of the subscription's token; the client
    counts as subscribed."""
    for_client, for_subscriber, for_anonymous = _flags(options, operation)
    anonymous_ok = bool(client.user) or for_anonymous
    if for_client and anonymous_ok:
        return True
    sub = client.subs.get(channel)
    subscribed = subscribing is not None or sub is not None
    if for_subscriber and subscribed and anonymous_ok:
        return True
    if grants(client.caps, operation, channel):
        return True
    channel_allow = subscribing if subscribing is not None else sub.allow if sub else frozenset()
    if operation in channel_allow:
        return True
    return client.hub.config.client.insecure


__all__ = [
    "BY_CAPS",
    "BY_CLIENT",
    "BY_INSECURE",
    "BY_TOKEN",
    "BY_USER_LIMITED",
    "HISTORY",
    "PRESENCE",
    "PUBLISH",
    "allowed",
    "subscribe_source",
]
