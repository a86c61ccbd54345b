"""Channel capabilities: what a token lets a connection do in channels its namespace
options would not let it (Centrifugo PRO's ``caps`` and ``allow`` claims).

A connection token's ``caps`` is a list of objects ``{"channels": [...], "allow": [...],
"match": ""|"wildcard"|"regex"}``; a subscription token's ``allow`` is a list of
operations for its own channel. Operations: ``sub`` (subscribe), ``pub`` (publish),
``prs`` (presence, presence stats and join/leave pushes), ``hst`` (history, and
recoverable or positioned subscriptions). Capabilities only grant: an operation is
allowed in a channel when any object that allows it has a channel matching it, so the
order of the objects never matters. Exact match by default; ``wildcard``: ``*`` any
run of characters, ``?`` one; ``regex``: a Python regular expression found anywhere
in the channel name (Go's ``MatchString``), anchored only where it says so.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

SUBSCRIBE = "sub"
PUBLISH = "pub"
PRESENCE = "prs"
HISTORY = "hst"
OPERATIONS = frozenset({SUBSCRIBE, PUBLISH, PRESENCE, HISTORY})
MATCH_TYPES = ("", "wildcard", "regex")


@dataclass(frozen=True, slots=True)
class Capability:
    """One ``caps`` object: ``allow`` in ``channels`` (names or patterns)."""

    allow: frozenset[str]
    channels: tuple[str, ...]
    match: str = ""
    patterns: tuple[re.Pattern[str], ...] = ()

    def matches(self, channel: str) -> bool:
        if not self.match:
            return channel in self.channels
        return any(pattern.search(channel) for pattern in self.patterns)


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, match: str) -> re.Pattern[str]:
    if match == "regex":
        return re.compile(pattern)
    # wildcard: the whole name, '*' any run, '?' one character, the rest literal
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("^" + "".join(parts) + "$", re.DOTALL)


def parse_allow(value: object) -> frozenset[str]:
    """A list of operations; names pushgate does not know are ignored (a newer server's
    operations do not invalidate a token). ValueError for a value of the wrong shape."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(op, str) for op in value):
        raise ValueError("allow must be a list of strings")
    return frozenset(value) & OPERATIONS


def parse_caps(value: object) -> tuple[Capability, ...]:
    """The ``caps`` claim; ValueError saying what is wrong with it."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("caps must be a list of objects")
    caps = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"caps[{index}] must be an object")
        channels = item.get("channels") or []
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError(f"caps[{index}].channels must be a list of strings")
        match = item.get("match") or ""
        if match not in MATCH_TYPES:
            raise ValueError(f"caps[{index}].match must be one of wildcard, regex or empty")
        try:
            allow = parse_allow(item.get("allow"))
            patterns = tuple(_compile(c, match) for c in channels) if match else ()
        except re.error as exc:
            raise ValueError(f"caps[{index}]: bad regular expression: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"caps[{index}].{exc}") from None
        caps.append(Capability(allow, tuple(channels), match, patterns))
    return tuple(caps)


def grants(caps: tuple[Capability, ...], operation: str, channel: str) -> bool:
    """True when some capability allows ``operation`` in ``channel``."""
    return any(operation in cap.allow and cap.matches(channel) for cap in caps)
