"""Channel names and the rules that apply to them.

A channel is ``namespace:name``; the namespace's options (or the top-level defaults for
a name without one) say who may subscribe, publish, read presence and history, and
whether the channel keeps a stream. ``#`` marks a user-limited channel: the users
after it, separated by ``,``, are the only ones who may join (``personal:#alice``).
Channels beginning with ``__pushgate`` are reserved for the server itself (the admin
page's live numbers): every client command and API call on one is refused, whatever the
user or token; only internal connections and the server's own publications reach them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pushgate.config import (
    RESERVED_CHANNEL_PREFIX,
    ChannelConfig,
    ChannelOptions,
    NamespaceConfig,
)
from pushgate.hub.errors import (
    ErrorBadRequest,
    ErrorLimitExceeded,
    ErrorPermissionDenied,
    ErrorUnknownChannel,
)

#: the options of reserved channels: no history, no presence, nothing for clients
RESERVED_OPTIONS = ChannelOptions(allow_user_limited_channels=False)


def is_reserved(channel: str) -> bool:
    """True for the server's own channels (``__pushgate…``)."""
    return channel.startswith(RESERVED_CHANNEL_PREFIX)


@dataclass(slots=True, frozen=True)
class ChannelRules:
    """Resolves channel names to their namespace options."""

    defaults: ChannelConfig
    namespaces: dict[str, NamespaceConfig]

    @classmethod
    def build(cls, channel: ChannelConfig, namespaces: list[NamespaceConfig]) -> ChannelRules:
        return cls(channel, {ns.name: ns for ns in namespaces})

    def namespace_of(self, channel: str) -> str:
        boundary = self.defaults.namespace_boundary
        head, sep, _ = channel.partition(boundary)
        return head if sep else ""

    def options(self, channel: str, *, internal: bool = False) -> ChannelOptions:
        """The options that apply to ``channel``; HubError 102 for an unknown namespace,
        103 for a reserved channel unless ``internal`` (the server's own use)."""
        self.check_name(channel)
        if is_reserved(channel):
            if not internal:
                raise ErrorPermissionDenied
            return RESERVED_OPTIONS
        namespace = self.namespace_of(channel)
        if not namespace:
            return self.defaults
        options = self.namespaces.get(namespace)
        if options is None:
            raise ErrorUnknownChannel
        return options

    def check_name(self, channel: str) -> None:
        if not channel:
            raise ErrorBadRequest("bad request: empty channel")
        if len(channel) > self.defaults.max_length:
            raise ErrorLimitExceeded("limit exceeded: channel name too long")

    def personal_channel(self, user: str, namespace: str) -> str:
        """A user's personal channel: ``<namespace>:#<user>``, ``#<user>`` without one."""
        if not namespace:
            return f"{self.defaults.user_boundary}{user}"
        return f"{namespace}{self.defaults.namespace_boundary}{self.defaults.user_boundary}{user}"

    def allowed_users(self, channel: str) -> list[str] | None:
        """Users allowed in a user-limited channel, or None when it is not one."""
        boundary = self.defaults.user_boundary
        if boundary not in channel:
            return None
        tail = channel.rsplit(boundary, 1)[1]
        return [u for u in tail.split(self.defaults.user_separator) if u]

    def is_allowed_user(self, channel: str, user: str) -> bool | None:
        """True/False for a user-limited channel, None when the channel is not one."""
        users = self.allowed_users(channel)
        if users is None:
            return None
        return bool(user) and user in users
