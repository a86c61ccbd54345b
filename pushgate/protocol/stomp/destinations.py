"""STOMP destinations and AMQP routing keys ↔ pushgate channels.

| destination                        | channel                                        |
|------------------------------------|------------------------------------------------|
| ``/topic/<channel>``               | ``<channel>`` as written (``/topic/board:1``)  |
| ``/exchange/<exchange>/<key>``     | by the configured exchange mappings            |
| ``/exchange/amq.topic/<key>``      | ``<key>`` (what ``/topic/<key>`` means)        |
| ``/user/<namespace>``              | ``<namespace>:#<user>``: the user's own channel |
| ``/queue/``, ``/amq/queue/``, ``/temp-queue/`` | refused: not supported             |

An exchange mapping is written ``"<exchange>/<routing-key pattern> = <channel template>"``,
e.g. ``"board.events/board.* = board:{1}"``: in the pattern ``*`` matches one
dot-separated word and ``#`` zero or more; the template's ``{1}``, ``{2}``… are the
words they matched, in order, and ``{0}`` the whole routing key. The first mapping that
matches wins. AMQP ingress uses the same mappings for (exchange, routing key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TOPIC_EXCHANGE = "amq.topic"
UNSUPPORTED_PREFIXES = ("/queue/", "/amq/queue/", "/temp-queue/", "/reply-queue/")


class DestinationError(Exception):
    """A destination that names no channel; the message goes into the ERROR frame."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True, frozen=True)
class ExchangeMapping:
    exchange: str
    pattern: str
    template: str
    words: tuple[str, ...]

    def channel_for(self, routing_key: str) -> str | None:
        captured = _match(self.words, tuple(routing_key.split(".")) if routing_key else ())
        if captured is None:
            return None
        try:
            return self.template.format(routing_key, *captured)
        except (IndexError, KeyError, ValueError):
            return None


def _match(pattern: tuple[str, ...], key: tuple[str, ...]) -> list[str] | None:
    """The words the wildcards of ``pattern`` matched in ``key``, or None."""
    if not pattern:
        return [] if not key else None
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        for take in range(len(key) + 1):
            tail = _match(rest, key[take:])
            if tail is not None:
                return [".".join(key[:take]), *tail]
        return None
    if not key:
        return None
    if head == "*":
        if not key[0]:
            return None
        tail = _match(rest, key[1:])
        return None if tail is None else [key[0], *tail]
    if head != key[0]:
        return None
    return _match(rest, key[1:])


def parse_mapping(spec: str) -> ExchangeMapping:
    """``"<exchange>/<pattern> = <template>"``; ValueError says what is wrong."""
    left, eq, template = spec.partition("=")
    left, template = left.strip(), template.strip()
    exchange, _, pattern = left.partition("/")
    if not eq or not exchange or not template:
        raise ValueError(
            f"invalid exchange mapping {spec!r} "
            "(expected '<exchange>/<routing-key pattern> = <channel template>')"
        )
    words = tuple(pattern.split(".")) if pattern else ()
    captures = sum(1 for w in words if w in ("*", "#"))
    try:
        template.format(*["x"] * (captures + 1))
    except (IndexError, KeyError, ValueError):
        raise ValueError(
            f"invalid channel template {template!r} in {spec!r}: use {{0}}..{{{captures}}}"
        ) from None
    return ExchangeMapping(exchange, pattern, template, words)


class Destinations:
    """Resolves destinations for one server's configuration."""

    __slots__ = ("_mappings", "namespace_boundary", "user_boundary")

    def __init__(
        self,
        mappings: Iterable[str | ExchangeMapping] = (),
        *,
        namespace_boundary: str = ":",
        user_boundary: str = "#",
    ) -> None:
        self._mappings = [
            m if isinstance(m, ExchangeMapping) else parse_mapping(m) for m in mappings
        ]
        self.namespace_boundary = namespace_boundary
        self.user_boundary = user_boundary

    def channel_for_routing_key(self, exchange: str, routing_key: str) -> str | None:
        """The channel an AMQP message (exchange, routing key) goes to, or None."""
        for mapping in self._mappings:
            if mapping.exchange == exchange:
                channel = mapping.channel_for(routing_key)
                if channel:
                    return channel
        if exchange == TOPIC_EXCHANGE and routing_key:
            return routing_key
        return None

    def channel_for(self, destination: str, user: str) -> str:
        """The channel a SUBSCRIBE or SEND destination names; DestinationError if none."""
        if destination.startswith("/topic/"):
            channel = destination[len("/topic/") :]
            if not channel:
                raise DestinationError("empty topic destination")
            return channel
        if destination.startswith("/exchange/"):
            exchange, _, key = destination[len("/exchange/") :].partition("/")
            if not exchange:
                raise DestinationError("empty exchange destination")
            mapped = self.channel_for_routing_key(exchange, key)
            if mapped is None:
                raise DestinationError(
                    f"no channel is mapped to exchange {exchange!r} routing key {key!r}"
                )
            return mapped
        if destination.startswith("/user/"):
            namespace = destination[len("/user/") :]
            if not namespace or "/" in namespace:
                raise DestinationError("user destinations are /user/<namespace>")
            if not user:
                raise DestinationError("user destinations need an authenticated user")
            return f"{namespace}{self.namespace_boundary}{self.user_boundary}{user}"
        if destination.startswith(UNSUPPORTED_PREFIXES):
            kind = destination.split("/", 2)[1]
            raise DestinationError(
                f"{kind} destinations are not supported by pushgate; "
                "use /topic/<channel>, /exchange/<exchange>/<routing-key> or /user/<namespace>"
            )
        raise DestinationError(f"unknown destination {destination!r}")
