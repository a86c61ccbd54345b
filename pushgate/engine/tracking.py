"""Values of what an engine tracks beyond channels: connections, user status, events.

A connection reports its attention (active / idle / hidden); a user's status is the best
of their connections' (active if any is), or offline. The engine keeps it cluster-wide,
announces changes (offline only after ``offline_delay``, so that a reload is not an
offline), and writes events for the product — connect, disconnect, user online /
offline / status, channel occupied / vacated, notification hand-offs — to an ordered
log that the event dispatcher (pushgate/events) delivers from a durable cursor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from pushgate.json_types import JsonObject

ACTIVE = "active"
IDLE = "idle"
HIDDEN = "hidden"
OFFLINE = "offline"
#: what a connection may report, best first
ATTENTION = (ACTIVE, IDLE, HIDDEN)
#: one letter per status in engine storage (the redis engine's Lua scripts use them)
CODES = {ACTIVE: "a", IDLE: "i", HIDDEN: "h", OFFLINE: "o"}
NAMES = {code: name for name, code in CODES.items()}
#: rank of a status code: the user's status is the highest of their connections'
RANK = {"o": 0, "h": 1, "i": 2, "a": 3}

# event types (the ``type`` of each event JSON)
CONNECT = "connect"
DISCONNECT = "disconnect"
USER_ONLINE = "user_online"
USER_OFFLINE = "user_offline"
USER_STATUS = "user_status"
CHANNEL_OCCUPIED = "channel_occupied"
CHANNEL_VACATED = "channel_vacated"
NOTIFICATION_HANDOFF = "notification_handoff"
EVENT_TYPES = (
    CONNECT,
    DISCONNECT,
    USER_ONLINE,
    USER_OFFLINE,
    USER_STATUS,
    CHANNEL_OCCUPIED,
    CHANNEL_VACATED,
    NOTIFICATION_HANDOFF,
)
#: one letter per event type, as the redis engine's scripts test for them
EVENT_FLAGS = {
    CONNECT: "c",
    DISCONNECT: "d",
    USER_ONLINE: "o",
    USER_OFFLINE: "o",
    USER_STATUS: "s",
    CHANNEL_OCCUPIED: "v",
    CHANNEL_VACATED: "v",
    NOTIFICATION_HANDOFF: "h",
}


@dataclass(slots=True, frozen=True)
class Tracking:
    """What the engine is to track and tell (from ``[presence]`` and ``[events]``)."""

    #: event types written to the event log (empty: events are off)
    events: frozenset[str] = frozenset()
    #: a user offline this long (no connection anywhere) is announced offline (the
    #: engine's own default: at once; the hub passes ``presence.offline_delay``)
    offline_delay: float = 0.0
    #: events kept in the log (oldest dropped beyond it, delivered or not)
    retention: int = 100_000
    #: name of this node, carried in connect/disconnect events
    node_name: str = ""
    #: the event types as the letters the redis scripts test (sent with every
    #: connection's open and close: worked out once)
    flags: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", "".join(sorted({EVENT_FLAGS[t] for t in self.events})))

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


@dataclass(slots=True, frozen=True)
class Connection:
    """A connection as the engine tracks it for user status and events."""

    client: str
    user: str
    transport: str

    def event(self, event_type: str, node: str, **extra: object) -> bytes:
        """A connect / disconnect event's JSON (the log adds ``id`` and ``time``)."""
        body = {
            "type": event_type,
            "user": self.user,
            "client": self.client,
            "transport": self.transport,
            "node": node,
            **extra,
        }
        return orjson.dumps(body)


@dataclass(slots=True)
class UserStatus:
    """A user's status: ``active`` / ``idle`` / ``hidden`` / ``offline``; unix times of the
    last connection seen (now while online) and of the last activity (now while active),
    None if never."""

    status: str = OFFLINE
    last_seen: float | None = None
    last_active: float | None = None

    @property
    def online(self) -> bool:
        return self.status != OFFLINE

    def to_json(self, user: str) -> bytes:
        """What a user status channel carries (publications and the subscribe data)."""
        return orjson.dumps(
            {
                "user": user,
                "status": self.status,
                "last_seen": int(self.last_seen or 0),
                "last_active": int(self.last_active or 0),
            }
        )


@dataclass(slots=True)
class ReadPosition:
    """Read up to ``offset`` in a stream of ``epoch``."""

    offset: int
    epoch: str = ""

    def to_dict(self) -> JsonObject:
        return {"offset": self.offset, "epoch": self.epoch}


@dataclass(slots=True)
class LoggedEvent:
    """One event of the log: its id (``<ms>-<seq>``, increasing) and JSON body."""

    id: str
    body: bytes

    @property
    def time_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    def to_json(self, shard: int) -> bytes:
        """The event as delivered: ``{"id": "<shard>:<id>", "time": <ms>, …body}``."""
        head = orjson.dumps({"id": f"{shard}:{self.id}", "time": self.time_ms})
        body = self.body
        if body == b"{}":
            return head
        return head[:-1] + b"," + body[1:]


@dataclass(slots=True)
class Handoff:
    """A notification waiting for an ack: handed to the product if none comes in time."""

    channel: str
    offset: int
    epoch: str
    user: str
    ttl: float
    data: bytes
    published_ms: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def event(self) -> bytes:
        return orjson.dumps(
            {
                "type": NOTIFICATION_HANDOFF,
                "user": self.user,
                "channel": self.channel,
                "offset": self.offset,
                "epoch": self.epoch,
                "ttl": self.ttl,
                "published_at": self.published_ms,
                "data": orjson.Fragment(self.data),
            }
        )


class ReadLimitExceeded(Exception):
    """A user's read positions would cover more channels than allowed."""


def parse_cursor(cursor: str) -> tuple[int, str]:
    """``"<shard>:<id>"`` → (shard, id); ValueError when it is not one."""
    shard, sep, entry = cursor.partition(":")
    ms, dash, seq = entry.partition("-")
    if not sep or not dash or not shard.isdigit() or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not an event id: {cursor!r}")
    return int(shard), entry
